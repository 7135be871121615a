"""A real JupyterHub for the tests (no tests here): run as the hub identity ``HUB_USER``
from a state directory of its own, loading ``deploy/jupyterhub/jupyterhub_config.py`` (the
working example) and changing only ports, directories, the poll interval and a test
service's API token (``TOKEN``, with the scopes to create users and servers, reach them
and read the proxy's routes). Its proxy is the real configurable-http-proxy; ds01d is the
test's.

By default the hub runs with per-user subdomains, as the deploy file's
``DS01_HUB_SUBDOMAIN_HOST`` sets them: the hub at ``http://hub.localhost:PORT``, a user's
servers at ``http://USER.hub.localhost:PORT`` (Chromium sends every ``*.localhost`` name to
127.0.0.1; this module's own requests go to 127.0.0.1 with the name as ``Host``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import textwrap
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from support import BIN_DIR, free_port, make_world_traversable_dir, user_env, wait_until

HUB_USER = "dave"
#: The hub's host name with subdomains; a user's servers are on ``USER.`` + this.
HUB_HOST = "hub.localhost"
REPO = Path(__file__).resolve().parents[2]
DEPLOY_CONFIG = REPO / "deploy" / "jupyterhub" / "jupyterhub_config.py"
TOKEN = "ds01-test-service-token-0123456789abcdef"


def require_hub_tools() -> None:
    """Fail (never skip) when JupyterHub or its proxy is missing."""
    if shutil.which("configurable-http-proxy") is None or not (BIN_DIR / "jupyterhub").exists():
        pytest.fail(
            "JupyterHub or configurable-http-proxy is not installed: run "
            "scripts/ensure-jupyterhub.sh (`make test` does)",
            pytrace=False,
        )


def docker0_gateway(docker_client: Any) -> str:
    """The host address containers on any bridge reach the host at."""
    config = docker_client.networks.get("bridge").attrs["IPAM"]["Config"]
    return str(config[0]["Gateway"])


class Hub:
    """A JupyterHub process run as ``user`` (the hub identity ``HUB_USER`` unless said) from
    its own state directory; ``extra_config`` is appended to its configuration (another
    spawner, for the benchmark) and ``extra_env`` added to its environment; ``subdomains``:
    per-user subdomains of ``HUB_HOST`` (else one origin, 127.0.0.1)."""

    def __init__(
        self,
        socket_path: Path,
        gateway: str,
        *,
        user: str = HUB_USER,
        extra_config: str = "",
        extra_env: dict[str, str] | None = None,
        subdomains: bool = True,
    ) -> None:
        self.user = user
        self.dir = make_world_traversable_dir("ds01-hub-")
        owner = pwd.getpwnam(user)
        os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        port = free_port()
        self.listen = f"http://127.0.0.1:{port}"  # where the proxy listens
        # What a browser opens: the hub's own origin.
        self.public = f"http://{HUB_HOST}:{port}" if subdomains else self.listen
        self.subdomains = subdomains
        config = self.dir / "jupyterhub_config.py"
        config.write_text(
            textwrap.dedent(
                f"""
                load_subconfig({str(DEPLOY_CONFIG)!r})
                c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
                c.Spawner.poll_interval = 1
                c.Spawner.start_timeout = 120
                c.JupyterHub.services = [{{"name": "ds01-test", "api_token": {TOKEN!r}}}]
                c.JupyterHub.load_roles = [{{
                    "name": "ds01-test",
                    "scopes": ["admin:users", "admin:servers", "access:servers", "proxy"],
                    "services": ["ds01-test"],
                }}]
                """
            )
            + textwrap.dedent(extra_config)
        )
        self.env = user_env(
            user,
            {
                "DS01_SOCKET": str(socket_path),
                "DS01_HUB_STATE_DIR": str(self.dir),
                "DS01_HUB_PUBLIC_URL": self.listen,
                "DS01_HUB_SUBDOMAIN_HOST": self.public if subdomains else "",
                "DS01_HUB_API_PORT": str(free_port()),
                "DS01_HUB_CONNECT_IP": gateway,
                **(extra_env or {}),
            },
        )
        self.config = config
        self.log = self.dir / "hub.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the hub and wait until its API answers."""
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the hub's process, not waiting for it (:meth:`wait_ready` does)."""
        command = ["runuser", "-u", self.user, "--", "env", "-i"]
        command += [f"{k}={v}" for k, v in self.env.items()]
        command += [str(BIN_DIR / "jupyterhub"), "-f", str(self.config)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=self.dir, stdout=out, stderr=subprocess.STDOUT
            )

    def wait_ready(self) -> None:
        """Wait until the hub :meth:`launch` started answers on its API (60 s at most)."""
        wait_until(f"the hub to answer (log: {self.tail()})", self._answers, timeout=60)

    def _answers(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, f"the hub exited:\n{self.tail()}"
        try:
            self.api("GET", "/")
        except (OSError, urllib.error.URLError):
            return False
        return True

    def stop(self) -> None:
        """Stop the hub (SIGTERM; SIGKILL after 20 s) and its proxy; servers stay."""
        self.wait_stopped(self.terminate())

    def terminate(self) -> subprocess.Popen[bytes] | None:
        """Send the hub SIGTERM (it stops its proxy; servers stay) and return its process,
        for :meth:`wait_stopped`; ``None`` when it was not running."""
        process, self.process = self.process, None
        if process is not None:
            # The hub itself, not runuser above it: runuser, sent a signal, passes it on and
            # then always sleeps 2 s before it exits; it ends at once when its child does.
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
            with contextlib.suppress(OSError):
                for pid in children.read_text().split():
                    os.kill(int(pid), signal.SIGTERM)
                    return process
            process.send_signal(signal.SIGTERM)  # runuser has no child (any more)
        return process

    @staticmethod
    def wait_stopped(process: subprocess.Popen[bytes] | None) -> None:
        """Wait for a process :meth:`terminate` signalled; SIGKILL it after 20 s."""
        if process is None:
            return
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.listen}/hub/api{path}",
            data=data,
            method=method,
            headers={
                "Authorization": f"token {TOKEN}",
                "Content-Type": "application/json",
                "Host": self.host_of(None),
            },
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            text = answer.read()
        return json.loads(text) if text else None

    def host_of(self, user: str | None) -> str:
        """The ``Host`` of the hub's pages (``user``: of that user's servers)."""
        host = self.public.removeprefix("http://")
        return f"{user}.{host}" if user and self.subdomains else host

    def server(self, user: str) -> dict[str, Any] | None:
        servers = self.api("GET", f"/users/{user}")["servers"]
        return servers.get("")  # type: ignore[no-any-return]

    def tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-60:])
        except OSError:
            return "(no log)"


def stop_hubs(hubs: Sequence[Hub]) -> None:
    """Stop several hubs side by side."""
    for process in [hub.terminate() for hub in hubs]:
        Hub.wait_stopped(process)


def lab_answer(hub: Hub, user: str, timeout: float = 10) -> tuple[int, str]:
    """The HTTP status and body of ``user``'s JupyterLab status through the proxy (0 and why:
    no answer)."""
    request = urllib.request.Request(
        f"{hub.listen}/user/{user}/api/status",
        headers={"Authorization": f"token {TOKEN}", "Host": hub.host_of(user)},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return int(answer.status), answer.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")
    except (OSError, urllib.error.URLError) as exc:
        return 0, str(exc)


def lab_status(hub: Hub, user: str) -> int:
    """The HTTP status of ``user``'s JupyterLab through the proxy (0: no answer)."""
    return lab_answer(hub, user)[0]
