"""Shared helpers for the integration and end-to-end tests (no tests here).

The main piece is :class:`Ds01Daemon`: one real ``ds01d`` process with its own temporary
configuration, state, log and socket directories, plus a way to run the real CLI as a real
Unix user against it. ``tests/conftest.py`` turns it into the ``ds01d`` factory fixture; use
the fixture in tests rather than this class directly, so that teardown always happens.

Why real users and a real daemon: ds01's identity comes from ``SO_PEERCRED`` on the unix
socket, so the only honest way to test "alice cannot stop bob's container" is to connect as
alice. Root runs the tests, and ``runuser -u alice -- …`` gives each command alice's uid,
gid and supplementary groups, exactly as if she had typed it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ds01.daemon.paths import DaemonPaths
from ds01.model.labels import MANAGED_FILTER
from ds01.paths import GPU_CONFIG_FILE, IMAGES_FILE, RESOURCE_LIMITS_FILE

if TYPE_CHECKING:
    from ds01.config.limits import ResourceLimitsConfig
    from ds01.config.loader import Ds01Config
    from ds01.daemon.service import Ds01Service
    from ds01.errors import ConfigError
    from ds01.gpu.simulated import SimulatedBackend
    from ds01.runtime.docker import ContainerRecord

#: The console scripts (``ds01``, ``ds01d``, ``container-create``, …) of the Python running
#: the tests. Run the tests with the world-readable install (``/opt/ds01/venv/bin/pytest``,
#: which ``make test`` does): other users must be able to execute these scripts.
BIN_DIR = Path(sys.executable).parent
#: Debian's docker.io CLI (20.10): the client the Docker API door is tested with (another
#: docker may come first on PATH).
DEBIAN_DOCKER = "/usr/bin/docker"

#: Image built offline by ``scripts/build-test-images.sh`` (``make images``).
TEST_IMAGE = "ds01-test/busybox:latest"
#: The same image under a second reference, for image-policy tests.
TEST_IMAGE_ALT = "ds01-test/busybox-alt:latest"

#: An ``images.yaml`` that registers the test image as ``busybox``.
TEST_IMAGES_YAML = f"""\
images:
  - name: busybox
    image: {TEST_IMAGE}
    framework: none
    description: BusyBox test image (sh, sleep, ps, nc, wget)
  - name: busybox-alt
    image: {TEST_IMAGE_ALT}
    framework: none
    description: The same BusyBox image under a second reference
"""

#: An ``images.yaml`` that registers only the test image, as ``busybox`` (its second reference
#: is present locally but outside the allowed set). Indented as the tests' own YAML texts
#: are (``Ds01Daemon`` dedents), so that a test may append entries or keys to it.
ONLY_BUSYBOX_YAML = f"""
    images:
      - name: busybox
        image: {TEST_IMAGE}
        framework: none
        description: BusyBox test image
"""


def simulated_a100s(count: int) -> str:
    """``gpu-config.yaml`` for ``count`` simulated A100-SXM4-40GB boards (no MIG)."""
    board = "  - {model: NVIDIA A100-SXM4-40GB}\n"
    return "backend: simulated\nsimulated:\n  gpus:\n" + board * count


#: The example configuration shipped in the repository (what an admin copies to /etc/ds01).
EXAMPLE_CONFIG_DIR = Path(__file__).resolve().parent.parent / "examples" / "config"
#: The offline image that stands in for the example registry's starter (``make images``).
OFFLINE_STARTER_IMAGE = "ds01-test/jupyter:latest"


def limits_from(text: str) -> ResourceLimitsConfig:
    """``resource-limits.yaml`` as ds01d reads it from ``text`` (indented as in a test: it
    is dedented), named ``limits.yaml`` in errors."""
    from ds01.config.loader import parse_config

    return parse_config(textwrap.dedent(text).lstrip("\n"), "resource-limits", "limits.yaml")


def limits_refusal(text: str) -> ConfigError:
    """The error with which ds01d refuses ``resource-limits.yaml`` ``text`` (it must)."""
    from ds01.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        limits_from(text)
    return caught.value


def limits_error(text: str) -> str:
    """The message with which ds01d refuses ``resource-limits.yaml`` ``text`` (it must)."""
    return limits_refusal(text).message


class NoDocker:
    """A stand-in Docker runtime for a ds01d service in a unit test: the engine's facts, and
    an ``AssertionError`` for anything else asked (a subclass adds what a test lets through)."""

    def engine_info(self) -> Any:
        from ds01.runtime.docker import EngineInfo

        return EngineInfo(cgroup_driver="cgroupfs", cpus=4, memory_bytes=1 << 36)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Docker was asked: runtime.{name}")


class ListingDocker(NoDocker):
    """Docker as a service's pass sees it: ``containers`` listed (``running_record``)."""

    def __init__(self) -> None:
        self.containers: list[ContainerRecord] = []

    def list_managed(self) -> list[ContainerRecord]:
        return list(self.containers)


def running_record(
    name: str, user: str, uid: int, uuid: str, created_at: str = ""
) -> ContainerRecord:
    """A running ds01 container ``name`` of ``user`` (``uid``) holding the GPU ``uuid``, as
    Docker's list gives it (``created_at``: its ``ds01.created_at`` label)."""
    from ds01.model import labels as L
    from ds01.runtime.docker import ContainerRecord

    labels = {
        L.MANAGED: "true", L.USER: user, L.UID: str(uid), L.NAME: name, L.GPUS: uuid,
        L.GPU_EQUIVALENTS: "1", L.CREATED_AT: created_at,
    }  # fmt: skip
    return ContainerRecord.from_summary(
        {"Id": name * 8, "Names": [f"/{name}._.{uid}"], "State": "running", "Labels": labels}
    )


def simulated_backend_in(directory: Path) -> Callable[[Ds01Config], SimulatedBackend]:
    """A ``backend_factory`` for :func:`offline_service`: the configuration's simulated
    GPUs, their telemetry file in ``directory``."""
    from ds01.gpu.simulated import SimulatedBackend

    def backend(config: Ds01Config) -> SimulatedBackend:
        return SimulatedBackend(config.gpus, telemetry_file=directory / "telemetry.json")

    return backend


def offline_service(
    tmp_path: Path,
    docker: Any = None,
    *,
    config: Mapping[str, str] | None = None,
    **dependencies: Any,
) -> Ds01Service:
    """A ds01d service (``Ds01Service``) with its configuration, state and log directories
    under ``tmp_path`` (made when missing: a second call over the same ``tmp_path`` is a
    restart), ``config`` written there (file name → text), over ``docker`` (default
    ``NoDocker()``) and a store and audit log of its own; ``dependencies``: the other
    ``DaemonDependencies`` (``backend_factory``, ``clock``, ``cgroups``)."""
    from ds01.daemon.context import DaemonDependencies
    from ds01.daemon.service import Ds01Service
    from ds01.events.log import EventLog
    from ds01.runtime.store import StateStore

    paths = DaemonPaths(tmp_path / "config", tmp_path / "state", tmp_path / "log", tmp_path / "s")
    for directory in (paths.config_dir, paths.state_dir, paths.log_dir):
        directory.mkdir(exist_ok=True)
    for name, text in (config or {}).items():
        (paths.config_dir / name).write_text(text)
    runtime = NoDocker() if docker is None else docker
    return Ds01Service(
        DaemonDependencies(
            paths, runtime, StateStore(paths.state_db), EventLog(paths.events_file), **dependencies
        )
    )


def offline_example_config(
    starter_image: str = OFFLINE_STARTER_IMAGE, extra_entries: Sequence[Mapping[str, Any]] = ()
) -> tuple[dict[str, str], list[str]]:
    """``examples/config`` as an admin installs it, changed only where this offline machine
    needs it: file name → text, and a sentence per change.

    Its ``images.yaml`` (or, where the example ships none, the embedded default registry ds01
    would use) keeps every entry and its starter; only the starter entry's image becomes
    ``starter_image`` (no registry is reachable here, so the example's own starter image
    cannot be pulled). ``extra_entries`` are registered after the example's own.
    """
    from importlib import resources

    import yaml

    files = {
        path.name: path.read_text(encoding="utf-8")
        for path in sorted(EXAMPLE_CONFIG_DIR.glob("*.yaml"))
    }
    source = f"{IMAGES_FILE} of examples/config"
    if IMAGES_FILE not in files:
        source = f"the embedded default {IMAGES_FILE}, as examples/config ships none"
        files[IMAGES_FILE] = (
            resources.files("ds01.config").joinpath("defaults", IMAGES_FILE).read_text("utf-8")
        )
    registry = yaml.safe_load(files[IMAGES_FILE])
    changes = []
    for entry in registry["images"]:
        if entry["name"] == registry.get("starter") and entry["image"] != starter_image:
            changes.append(
                f"{source}: the starter {entry['name']}'s image "
                f"{entry['image']} is not available offline; {starter_image} is registered "
                "under that name instead"
            )
            entry["image"] = starter_image
    registry["images"] += [dict(e) for e in extra_entries]
    changes += [f"{IMAGES_FILE}: added {e['name']} ({e['image']})" for e in extra_entries]
    files[IMAGES_FILE] = yaml.safe_dump(registry, sort_keys=False)
    return files, changes


#: A ``resource-limits.yaml`` under which many one-GPU creates at once are all within quota
#: (the crash and stop tests: every outcome is decided by the fault, not by a limit).
MANY_CREATES_LIMITS = """
    defaults:
      gpu_limit: null
      max_gpus_per_container: 1
      max_containers: 10
      cpu_limit: 1
      memory_limit: 256M
"""

#: GECOS comment of the users the tests create, so leftovers of an interrupted run are
#: recognised and removed.
TEST_USER_COMMENT = "ds01-test"

#: Held by a test session with docker/e2e tests and by scripts/install.sh (`make setup`).
MACHINE_LOCK = "/tmp/ds01-tests.lock"
#: Set to 1 when an outer process already holds MACHINE_LOCK.
MACHINE_LOCK_HELD_ENV = "DS01_MACHINE_LOCK_HELD"


def hold_machine_lock(say: Callable[[str], None]) -> int | None:
    """Take MACHINE_LOCK for this process, waiting (and ``say``-ing so) while a test run holds
    it; return its descriptor (closing it releases the lock), or ``None`` when an outer
    process holds it for us (MACHINE_LOCK_HELD_ENV). Docker tests and benchmarks that remove
    ds01 containers or test users hold it."""
    if os.environ.get(MACHINE_LOCK_HELD_ENV) == "1":
        return None
    fd = os.open(MACHINE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        say(f"waiting for {MACHINE_LOCK} (another test run holds it)")
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd

SOCKET_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
#: Seconds a test waits for each prompt or line of a command on a pseudo-terminal.
PTY_TIMEOUT_S = 30.0

_HYPHENATED = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)+$")
_BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def remove_managed_containers(*, networks: bool = True) -> None:
    """Force-remove every Docker container labelled ``ds01.managed=true``, all at once, and
    (``networks``) ds01's per-user networks.

    Tests run one at a time on a machine of their own, so every such container is a leftover
    of the current or a previous test. A network is kept for the next test's ds01d, which
    guards it at its start and uses it, unless asked: making and removing one (a bridge and
    its firewall rules) costs about 0.2 s each way.
    """
    import docker

    client = docker.from_env()
    try:
        found = client.api.containers(all=True, filters=MANAGED_FILTER)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda c: _force_remove(client, c), found))
        if networks:
            remove_user_networks(client)
    finally:
        client.close()
    remove_empty_ds01_cgroups()


def _force_remove(client: Any, container: dict[str, Any]) -> None:
    from docker.errors import APIError, NotFound

    try:
        client.api.remove_container(container["Id"], force=True)
    except NotFound:
        pass
    except APIError as exc:  # e.g. "removal already in progress"
        print(f"ds01 tests: could not remove {container['Names']}: {exc}", file=sys.stderr)


def remove_empty_ds01_cgroups(root: Path = Path("/sys/fs/cgroup")) -> None:
    """Remove every empty cgroup under ``ds01.slice``, deepest first, in every hierarchy.

    Each test's ds01d has a state directory of its own and removes only the parents it made;
    one stopped right after a build (whose build slice it would remove at its next start)
    would leave the user's parent non-empty for the tests after it.
    """
    for top in [root / "ds01.slice", *root.glob("*/ds01.slice")]:
        if not top.is_dir():
            continue
        for directory in sorted(top.rglob("*.slice"), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # processes or child cgroups in it: in use
                directory.rmdir()


def remove_user_networks(client: Any) -> None:
    """Remove every per-user network of ds01 (label ``ds01.network``) and its firewall
    rules: leftovers of the current or a previous test (each test's ds01d is an instance of
    its own, which removes only the networks it made). One at a time: the rules of one
    bridge and ds01's shared chain are read and changed together."""
    for network in client.networks.list(filters={"label": "ds01.network"}):
        _remove_network(network)


def _remove_network(network: Any) -> None:
    from docker.errors import APIError, NotFound

    from ds01.runtime.firewall import Firewall, FirewallError

    bridge = (network.attrs.get("Options") or {}).get("com.docker.network.bridge.name")
    try:
        network.remove()
    except NotFound:
        pass
    except APIError as exc:
        print(f"ds01 tests: could not remove network {network.name}: {exc}", file=sys.stderr)
        return
    if bridge:
        try:
            Firewall().unguard(bridge)
        except FirewallError as exc:
            print(f"ds01 tests: rules of {bridge} left: {exc.message}", file=sys.stderr)


def make_world_traversable_dir(prefix: str) -> Path:
    """A fresh temporary directory with mode 0755.

    pytest's ``tmp_path`` is mode 0700 (and lives under root's temp directory), so other
    users could not reach a socket or file inside it.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def user_env(user: str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment, as a fresh login of ``user`` would have (root when ``None``).

    Nothing of the test runner's own environment leaks through (``HOME=/root``, pyenv,
    ``DS01_*``): the CLI must work from what a real user has.
    """
    if user is None:
        home, name = "/root", "root"
    else:
        home, name = pwd.getpwnam(user).pw_dir, user
    env = {
        "PATH": f"{BIN_DIR}:{_BASE_PATH}",
        "HOME": home,
        "USER": name,
        "LOGNAME": name,
        "LANG": "C.UTF-8",
    }
    env.update(extra or {})
    return env


class Ds01Daemon:
    """One ``ds01d`` under test, in a temporary root that every user can traverse.

    Layout of ``root`` (mode 0755)::

        root/config/     resource-limits.yaml, gpu-config.yaml, images.yaml (only those given;
                         a missing file means ds01d's embedded default)
        root/state/      --state-dir (SQLite state)
        root/log/        --log-dir (events.jsonl)
        root/run/ds01.sock   --socket (root/run is 0755 so users can connect)
        root/ds01d.out   the daemon's stdout and stderr, over all (re)starts

    Args:
        resource_limits, gpu_config, images: YAML texts for the three config files; they
            are dedented, so indented triple-quoted strings are fine. ``None`` = not written.
        extra_args: more command-line arguments for ``ds01d``.
        env: more environment variables for ``ds01d``.

    Use :meth:`cli` to run commands as users, :meth:`events` to read the audit log,
    :meth:`kill` / :meth:`restart` / :meth:`stop` to exercise crashes and restarts, and
    :attr:`paths` (a :class:`ds01.daemon.paths.DaemonPaths`) for the file locations.
    """

    def __init__(
        self,
        resource_limits: str | None = None,
        gpu_config: str | None = None,
        images: str | None = None,
        *,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = make_world_traversable_dir("ds01-test-")
        self.paths = DaemonPaths(
            config_dir=self.root / "config",
            state_dir=self.root / "state",
            log_dir=self.root / "log",
            socket=self.root / "run" / "ds01.sock",
        )
        for directory in (
            self.paths.config_dir,
            self.paths.state_dir,
            self.paths.log_dir,
            self.paths.socket.parent,
        ):
            directory.mkdir(mode=0o755)
            directory.chmod(0o755)  # whatever the umask
        self.output_file = self.root / "ds01d.out"
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        for name, text in (
            (RESOURCE_LIMITS_FILE, resource_limits),
            (GPU_CONFIG_FILE, gpu_config),
            (IMAGES_FILE, images),
        ):
            if text is not None:
                self.write_config(name, text)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Ds01Daemon {self.root} {state}>"

    # --- configuration ----------------------------------------------------------------------

    def write_config(self, name: str, text: str) -> Path:
        """Write (or replace) ``config/<name>``; the text is dedented. Returns its path.

        The running daemon is not told; send it the signal or request that reloads config.
        """
        path = self.paths.config_dir / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(textwrap.dedent(text), encoding="utf-8")
        tmp.chmod(0o644)
        tmp.replace(path)  # atomic: a reloading daemon never sees half a file
        return path

    # --- process ----------------------------------------------------------------------------

    @property
    def command(self) -> list[str]:
        """The ``ds01d`` command line."""
        return [
            str(BIN_DIR / "ds01d"),
            "--config-dir", str(self.paths.config_dir),
            "--state-dir", str(self.paths.state_dir),
            "--log-dir", str(self.paths.log_dir),
            "--socket", str(self.paths.socket),
            *self.extra_args,
        ]  # fmt: skip

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None, "ds01d was never started"
        return self.process.pid

    def start(self, timeout: float = SOCKET_TIMEOUT_S) -> None:
        """Start ``ds01d`` and wait until its socket accepts a connection.

        Fails the test, showing the daemon's output, if it exits or does not answer within
        ``timeout`` seconds.
        """
        if self.running:
            raise RuntimeError("ds01d is already running")
        if not Path(self.command[0]).exists():
            pytest.fail(f"{self.command[0]} not found: run `make setup`", pytrace=False)
        env = {**user_env(None), **self.env}
        with self.output_file.open("ab") as out:
            out.write(f"--- start: {' '.join(self.command)}\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
            )
        self.wait_for_socket(timeout)

    def start_refused(
        self, timeout: float = SOCKET_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ds01d`` expecting it to refuse to start: return its exit code and output
        (stdout and stderr together, also appended to ``ds01d.out``). Fails the test if it
        is still running after ``timeout`` seconds (it would then have started)."""
        if self.running:
            raise RuntimeError("ds01d is already running")
        try:
            result = subprocess.run(
                self.command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env={**user_env(None), **self.env},
                cwd=self.root,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"ds01d did not refuse to start within {timeout:.0f} s", pytrace=False)
        result.stdout += result.stderr
        with self.output_file.open("a", encoding="utf-8") as out:
            out.write(f"--- refused start: {' '.join(self.command)}\n{result.stdout}")
        return result

    def wait_for_socket(self, timeout: float = SOCKET_TIMEOUT_S) -> None:
        """Wait until the socket accepts a connection (a stale socket file does not count)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                pytest.fail(
                    f"ds01d exited with code {self.process.returncode} before its socket "
                    f"answered\n{self.log_tail()}",
                    pytrace=False,
                )
            if self._socket_answers():
                return
            if time.monotonic() > deadline:
                pytest.fail(
                    f"ds01d did not accept connections on {self.paths.socket} within "
                    f"{timeout:.0f} s\n{self.log_tail()}",
                    pytrace=False,
                )
            time.sleep(0.05)

    def _socket_answers(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            try:
                sock.connect(str(self.paths.socket))
            except OSError:
                return False
            return True

    def kill(self, sig: int = signal.SIGKILL, *, wait: bool | None = None) -> None:
        """Send ``sig`` to the daemon.

        By default waits for the process to end after SIGKILL, SIGTERM and SIGINT (a crash or
        a shutdown), and returns at once after other signals (e.g. SIGHUP to reload).
        A killed daemon leaves its socket file behind, as a real crash would.
        """
        if not self.running:
            raise RuntimeError("ds01d is not running")
        assert self.process is not None
        self.process.send_signal(sig)
        if wait is None:
            wait = sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)
        if wait:
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S * 2)
            except subprocess.TimeoutExpired:
                pytest.fail(f"ds01d did not exit after signal {sig}\n{self.log_tail()}")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """Stop the daemon: SIGTERM, then SIGKILL after ``timeout`` s. Returns its exit code
        (``None`` if it was not started). Safe to call more than once."""
        if self.process is None:
            return None
        if not stop_process(self.process, timeout):
            print(f"ds01 tests: ds01d ignored SIGTERM for {timeout} s; killed it")
        return self.process.returncode

    def restart(self, timeout: float = SOCKET_TIMEOUT_S) -> None:
        """Stop the daemon gracefully if it runs (a killed one stays as it is: dead, socket
        file left over), then start it again with the same directories and wait for it."""
        self.stop()
        self.start(timeout)

    def cleanup(self, *, keep_networks: bool = False) -> None:
        """Teardown: stop the daemon, remove every ds01-managed container (and, unless
        ``keep_networks``, ds01's per-user networks), delete the root."""
        try:
            self.stop()
        finally:
            try:
                remove_managed_containers(networks=not keep_networks)
            finally:
                shutil.rmtree(self.root, ignore_errors=True)

    # --- talking to it ----------------------------------------------------------------------

    def command_for(self, args: Sequence[str]) -> list[str]:
        """The executable and arguments for a CLI call.

        ``("container-create", "x", …)`` runs the ``container-create`` console script;
        ``("container", "create", "x", …)`` or ``("gpu-status",)`` likewise; anything whose
        first word is not a hyphenated command runs ``ds01`` with all the arguments.
        """
        if args and _HYPHENATED.match(args[0]):
            script = BIN_DIR / args[0]
            if not script.exists():
                raise LookupError(
                    f"no console script {args[0]!r} in {BIN_DIR}: is it in [project.scripts] "
                    "of pyproject.toml, and installed (make setup)?"
                )
            return [str(script), *args[1:]]
        return [str(BIN_DIR / "ds01"), *args]

    def spawn(self, user: str, *args: str, timeout: float = PTY_TIMEOUT_S) -> Any:
        """Run a ds01 command as ``user`` on a pseudo-terminal, the way :meth:`cli` runs it on
        pipes (``runuser -u USER -- env -i <a login's environment> COMMAND``), for commands
        that behave differently on a terminal: prompts, Ctrl-C (``child.sendintr()``).

        Returns a ``pexpect.spawn`` (text mode, ``timeout`` seconds per ``expect``), in the
        user's home, on a 40x120 terminal. Ctrl-C's signal is given its default action, as a
        terminal's foreground command has it: a test run started in the background
        (``pytest … &``) would otherwise pass it on ignored, and Ctrl-C would do nothing.
        """
        import pexpect  # only the tests that drive a terminal need it

        environment = user_env(user, {"DS01_SOCKET": str(self.paths.socket), "TERM": "xterm"})
        assignments = [f"{key}={value}" for key, value in environment.items()]
        command = ["env", "--default-signal=INT", "-i", *assignments, *self.command_for(args)]
        child = pexpect.spawn(
            "runuser",
            ["-u", user, "--", *command],
            env=user_env(None),
            cwd=environment["HOME"],
            encoding="utf-8",
            timeout=timeout,
        )
        child.setwinsize(40, 120)
        return child

    def cli(
        self,
        user: str | None,
        *args: str,
        input: str | None = None,
        timeout: float = 60,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a ds01 command as Unix user ``user`` (``None``: as root) and return the result.

        The command runs through ``runuser -u USER -- env -i … CMD``, so the daemon sees that
        user's real uid and groups; it gets a clean login-like environment (see
        :func:`user_env`) with ``DS01_SOCKET`` pointing at this daemon, plus ``env``. The
        working directory is the user's home unless ``cwd`` is given. The exit code is not
        checked: assert on ``.returncode``, ``.stdout`` and ``.stderr``.
        """
        return self.run_as(
            user,
            self.command_for(args),
            {"DS01_SOCKET": str(self.paths.socket), **(env or {})},
            input=input,
            timeout=timeout,
            cwd=cwd,
        )

    @property
    def docker_socket(self) -> Path:
        """The Docker API door's socket: ``docker.sock`` next to the API socket."""
        return self.paths.socket.parent / "docker.sock"

    def docker(
        self, user: str, *args: str, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run Debian's docker CLI (``DEBIAN_DOCKER``) as ``user`` against this daemon's
        Docker API door (``DOCKER_HOST``), as :meth:`cli` runs ds01's commands."""
        return self.run_as(
            user,
            [DEBIAN_DOCKER, *args],
            {"DOCKER_HOST": f"unix://{self.docker_socket}"},
            input=input,
            timeout=timeout,
            cwd=None,
        )

    def run_as(
        self,
        user: str | None,
        command: list[str],
        env: Mapping[str, str],
        *,
        input: str | None,
        timeout: float,
        cwd: str | Path | None,
    ) -> subprocess.CompletedProcess[str]:
        environment = user_env(user, env)
        if cwd is None:
            home = Path(environment["HOME"])
            cwd = home if home.is_dir() else "/"
        if user is not None:
            assignments = [f"{key}={value}" for key, value in environment.items()]
            command = ["runuser", "-u", user, "--", "env", "-i", *assignments, *command]
            environment = user_env(None)
        return subprocess.run(
            command,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=environment,
            cwd=cwd,
            check=False,
        )

    def cli_json(self, user: str | None, *args: str, **kwargs: Any) -> Any:
        """Run ``cli(user, *args, "--json")``, assert exit code 0, return the parsed JSON."""
        result = self.cli(user, *args, "--json", **kwargs)
        assert result.returncode == 0, describe(result)
        try:
            return json.loads(result.stdout)
        except json.JSONDecodeError as exc:
            pytest.fail(f"not JSON ({exc}):\n{describe(result)}", pytrace=False)

    def state_rows(self, sql: str) -> list[Any]:
        """The first column of the rows ``sql`` selects from ds01d's state store (opened
        read-only, also while ds01d runs); ``[]`` while the store or its table does not exist
        yet, or the store is busy."""
        try:
            db = sqlite3.connect(f"file:{self.paths.state_db}?mode=ro", uri=True, timeout=1)
        except sqlite3.OperationalError:
            return []
        try:
            return [row[0] for row in db.execute(sql)]
        except sqlite3.OperationalError:
            return []
        finally:
            db.close()

    def state_value(self, sql: str) -> Any:
        """The first value :meth:`state_rows` gives, or ``None``."""
        return next(iter(self.state_rows(sql)), None)

    def events(self) -> list[dict[str, Any]]:
        """All events written so far to ``<log-dir>/events.jsonl`` (``[]`` if none).

        A line torn by a kill -9 mid-write is left out, but only where the daemon marked
        it: the event after it must be ``audit.tail_damaged``; any other unreadable line
        fails the test."""
        try:
            text = self.paths.events_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        events: list[dict[str, Any]] = []
        torn: str | None = None
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                assert torn is None, f"two unreadable lines in a row: {torn!r}, {line!r}"
                torn = line
                continue
            if torn is not None:
                assert event.get("action") == "audit.tail_damaged", (
                    f"unreadable line {torn!r} not followed by audit.tail_damaged: {event}"
                )
                torn = None
            events.append(event)
        # A torn last line: the daemon marks it when it next writes.
        return events

    def events_where(self, **fields: Any) -> list[dict[str, Any]]:
        """The events whose top-level fields equal all of ``fields``
        (e.g. ``events_where(action="container.create", outcome="success")``)."""
        return [e for e in self.events() if all(e.get(k) == v for k, v in fields.items())]

    def log_tail(self, lines: int = 80) -> str:
        """The end of the daemon's output and of any ``*.log`` file in its log directory."""
        parts = []
        for path in (self.output_file, *sorted(self.paths.log_dir.glob("*.log"))):
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            tail = "\n".join(text.splitlines()[-lines:])
            parts.append(f"----- {path} -----\n{tail}")
        return "\n".join(parts) or "(ds01d wrote nothing)"


ENSURE_DOCKER = Path(__file__).resolve().parents[1] / "scripts" / "ensure-docker.sh"
#: Starts (idempotently: whatever is not running) and stops the Slurm test cluster.
SLURM_CLUSTER_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm-cluster.sh"


def docker_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def process_gone(pid: int) -> bool:
    """No such process, or a zombie (a killed dockerd stays one for a while here)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return any(line.startswith("State:") and "Z" in line for line in status.splitlines())


def stop_docker() -> None:
    """Stop the machine's dockerd (SIGTERM) and wait until it is gone. Only in a test that
    holds the machine lock (every docker/e2e session does), and only with
    :func:`restart_docker` in a ``finally``."""
    pid = int(Path("/var/run/docker.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    wait_until("dockerd to stop", lambda: process_gone(pid), 60, interval=0.2)
    assert not docker_answers(), "another dockerd answers: something restarted it"


def restart_docker() -> None:
    """scripts/ensure-docker.sh until `docker info` answers (it fails while the old dockerd
    is still a zombie holding its pid file: retry)."""
    for _ in range(20):
        if docker_answers():
            return
        subprocess.run([str(ENSURE_DOCKER)], capture_output=True, check=False, timeout=120)
        if docker_answers():
            return
        time.sleep(1)
    raise AssertionError("dockerd did not come back: run scripts/ensure-docker.sh")


def stop_process(process: subprocess.Popen[Any], timeout: float = 10.0) -> bool:
    """End a child process of the test: SIGTERM, then SIGKILL after ``timeout`` s; reaped
    either way. False if it had to be killed (nothing happens to one that has exited)."""
    if process.poll() is not None:
        return True
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False
    return True


def wait_until(
    what: str, check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1
) -> Any:
    """Call ``check`` every ``interval`` seconds until it returns something true, and return
    that; fail the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def wait_for_loop_pass(d: Ds01Daemon, check: str, timeout: float = 30.0) -> None:
    """Return once ds01d's background loop ``check`` (its name in ``ds01 admin doctor``:
    "queue", "oom-watcher", "lifecycle", ...) has finished a pass that began after this call:
    what a test waits for before it asserts that a pass changed nothing.

    The doctor gives the age of the loop's last success in whole seconds: "0 s" read a second
    or more after the call is a pass that ended more than half a second after it, and a pass
    takes far less."""
    since = time.monotonic()

    def passed() -> bool:
        if time.monotonic() - since < 1.0:
            return False
        report = json.loads(d.cli(None, "admin", "doctor", "--json").stdout)
        return any(
            f["check"] == check and "succeeded 0 s ago" in f["message"]
            for f in report["findings"]
        )

    wait_until(f"a {check} pass", passed, timeout=timeout)


def wait_for_drain(
    d: Ds01Daemon, user: str, start: datetime, lead_s: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The warning ``user`` gets for a reservation starting at ``start`` (local, naive) and
    the stop of their container at its start (``cleanup.reservation``), each waited for and
    checked to come at its time: the warning within ``lead_s`` (and a second) before the
    start, the stop at it or after."""

    def warned() -> list[dict[str, Any]]:
        return [e for e in d.events_where(action="lifecycle.warn", user=user)
                if e["details"].get("kind") == "reservation"]  # fmt: skip

    def local(event: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(event["ts"]).astimezone().replace(tzinfo=None)

    warning = wait_until(f"{user}'s warning", warned, timeout=10)[0]
    assert start - timedelta(seconds=lead_s + 1) <= local(warning) < start, (warning, start)
    stop = wait_until(
        "the stop at the start", lambda: d.events_where(action="cleanup.reservation"), timeout=10
    )[0]
    assert stop["user"] == user and local(stop) >= start, (stop, start)
    return warning, stop


_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A TCP port free on this machine now, never one this process was given before: the
    kernel may hand the same free port to two binds in a row once the first is closed, and
    a hub whose API port is its proxy's cannot start."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port


def value_and_source(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A ``check-limits --explain`` entry without where the file or Slurm says it (``line``,
    ``slurm``): what a test of the layers compares."""
    return {"value": entry["value"], "source": entry["source"]}


def docker_name(user: str, name: str) -> str:
    """The Docker name of ``user``'s container ``name`` (``{name}._.{uid}``)."""
    return f"{name}._.{pwd.getpwnam(user).pw_uid}"


def wait_for_docker_log(user: str, name: str, text: str) -> None:
    """Return once Docker's own log of ``user``'s container ``name`` holds ``text``.

    A line written to a container's terminal reaches its log through containerd's shim and
    dockerd after the write has returned: a test that reads the log through ds01 waits for
    that first."""
    container = docker_name(user, name)

    def logged() -> bool:
        logs = subprocess.run(["docker", "logs", container], capture_output=True, check=False)
        return text.encode() in logs.stdout

    wait_until(f"{text!r} in the log of {container}", logged)


def docker_view(docker_client: Any) -> dict[str, dict[str, Any]]:
    """Docker's own record of every ds01-managed container, by Docker name.

    One list call, no inspect per container: a create that dockerd cancels (its client was
    killed) is listed for a moment and then gone, and an inspect after the list would fail."""
    found = docker_client.api.containers(all=True, filters={"label": "ds01.managed=true"})
    return {
        c["Names"][0].lstrip("/"): {
            "id": c["Id"],
            "status": c["State"],
            "user": c["Labels"]["ds01.user"],
            "name": c["Labels"]["ds01.name"],
            "gpus": [u for u in c["Labels"].get("ds01.gpus", "").split(",") if u],
        }
        for c in found
    }


def assert_views_match_docker(d: Ds01Daemon, docker_client: Any) -> dict[str, dict[str, Any]]:
    """ds01's allocation view (gpu-status, container-list --all) equals Docker's labels,
    and no device is in two containers. Returns Docker's view."""
    docker = docker_view(docker_client)
    held = Counter(uuid for c in docker.values() for uuid in c["gpus"])
    assert all(n == 1 for n in held.values()), docker

    devices = d.cli_json(None, "gpu-status")
    holders = {
        dev["uuid"]: (dev["holder"]["user"], dev["holder"]["container"])
        for dev in devices
        if dev["holder"]
    }
    assert holders == {u: (c["user"], c["name"]) for c in docker.values() for u in c["gpus"]}

    listed = d.cli_json(None, "container-list", "--all")
    assert {r["docker_name"]: (r["user"], r["name"], r["gpus"]) for r in listed} == {
        key: (c["user"], c["name"], c["gpus"]) for key, c in docker.items()
    }
    return docker


def describe(result: subprocess.CompletedProcess[str]) -> str:
    """A command's arguments, exit code, stdout and stderr, for assertion messages."""
    args = result.args if isinstance(result.args, str) else " ".join(map(str, result.args))
    return (
        f"command: {args}\nexit code: {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )


BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
#: Benchmarks that need neither root nor Docker: tests/unit runs them, tests/integration
#: every other benchmarks/bench_*.py.
PURE_BENCHMARKS = (
    "bench_dockerfile_check.py",
    "bench_placement.py",
    "bench_queue.py",
    "bench_reservations.py",
    "bench_state_backup.py",
)
#: Benchmarks that need the Slurm test cluster (the ``slurm_cluster`` fixture).
CLUSTER_BENCHMARKS = ("bench_slurm.py",)
BENCHMARK_TIMEOUT_S = 300.0


def assert_benchmark_runs(name: str, env: Mapping[str, str] | None = None) -> None:
    """Run ``benchmarks/NAME --quick`` (its smallest size) with this interpreter, with
    ``env`` added to the environment; fail on a non-zero exit or a traceback. Its timings are
    never looked at."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS_DIR / name), "--quick"],
        capture_output=True,
        text=True,
        timeout=BENCHMARK_TIMEOUT_S,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, describe(result)
    assert "Traceback" not in result.stdout + result.stderr, describe(result)


def run_root(args: Iterable[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a system command as root (useradd, groupadd, mknod…), with output captured."""
    result = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(describe(result))
    return result


def can_run_as(user: str, executable: Path) -> bool:
    """Whether ``user`` can execute ``executable`` (e.g. the Python of the installed venv)."""
    result = subprocess.run(
        ["runuser", "-u", user, "--", str(executable), "-c", "pass"],
        capture_output=True,
        cwd="/",
        check=False,
    )
    return result.returncode == 0


def ensure_group(name: str) -> bool:
    """Create Unix group ``name`` if missing. Returns whether it was created."""
    if run_root(["getent", "group", name], check=False).returncode == 0:
        return False
    run_root(["groupadd", name])
    return True


def ensure_user(name: str, groups: Sequence[str] = ()) -> bool:
    """Create user ``name`` (home, /bin/sh, comment ``ds01-test``) if missing and add it to
    ``groups``. Returns whether the user was created."""
    created = False
    try:
        pwd.getpwnam(name)
    except KeyError:
        run_root(["useradd", "-m", "-s", "/bin/sh", "-c", TEST_USER_COMMENT, name])
        created = True
    for group in groups:
        run_root(["usermod", "-a", "-G", group, name])
    return created


def remove_user(name: str) -> None:
    """Delete user ``name`` with its home (``userdel -f -r``); only a warning on failure."""
    result = run_root(["userdel", "-f", "-r", name], check=False)
    if result.returncode not in (0, 12):  # 12: home or mail spool already gone
        print(f"ds01 tests: could not remove user {name}:\n{describe(result)}", file=sys.stderr)


def remove_group(name: str) -> None:
    """Delete group ``name``; only a warning on failure."""
    result = run_root(["groupdel", name], check=False)
    if result.returncode != 0 and run_root(["getent", "group", name], check=False).returncode == 0:
        print(f"ds01 tests: could not remove group {name}:\n{describe(result)}", file=sys.stderr)


def make_fake_gpu_nodes(count: int = 8) -> Path:
    """A world-readable directory with character devices ``nvidia0``…``nvidia{count-1}``
    (major 195, minor N, mode 0666, like the real ``/dev/nvidiaN``).

    Point ``gpu-config.yaml``'s ``simulated.device_node_dir`` at it: ds01d then gives a
    container ``--device DIR/nvidiaN:/dev/nvidiaN`` for simulated GPU N, and the container's
    ``devices.list`` cgroup file shows ``c 195:N rwm``, so a test can check which GPU a
    container really got.
    """
    directory = make_world_traversable_dir("ds01-fakegpu-")
    for n in range(count):
        node = directory / f"nvidia{n}"
        run_root(["mknod", "-m", "666", str(node), "c", "195", str(n)])
    return directory


def environ_flag(name: str) -> bool:
    """Whether environment variable ``name`` is set to something other than ''/0/false/no."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")
