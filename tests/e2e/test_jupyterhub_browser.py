"""In a real browser: users log in to a real JupyterHub with their Unix passwords (PAM), pick
devices in ds01's options form and land in JupyterLab in a ds01 container.

Debian's Chromium (/usr/bin/chromium), headless, driven by Playwright (never
``playwright install``: nothing is downloaded), on per-user subdomains of
``hub.localhost`` (``hubproc``). The hub runs as its hub identity (dave, in
the group ``shadow`` for PAM while the test runs; the passwords of alice, bob and carol are
set for the test and locked again after it). One hub, three scenes:

1. alice picks a MIG slice, lands in JupyterLab and runs a cell that prints
   ``NVIDIA_VISIBLE_DEVICES`` and ``DS01_GPUS``: the UUID ``gpu-status`` shows for her;
   her server is a ds01 container of hers (her uid, /workspace, ``jupyterhub-singleuser``),
   whose create ds01d logged as alice via the hub;
2. bob asks for the one whole GPU while alice's other container holds it: the spawn page
   shows his place in ds01's queue; when alice stops that container his server starts and
   he lands in JupyterLab (the events of the dispatched create name the hub too);
3. carol (a quota of half a GPU) asks for a whole GPU: the form refuses it with ds01's
   message;
4. ds01d and the hub restart while alice's and bob's servers run: the hub finds both again
   (``load_state``, ``poll``), no container is made again and no device is held twice;
5. ds01 stops alice's container (as an idle stop would): the hub shows her server stopped
   (``poll``); the container and her workspace stay;
6. a pending server stopped in the hub withdraws its request from ds01's queue.

A screenshot of each page is saved in the test's temporary directory (``DS01_SCREENSHOTS``
names another directory to keep them, as docs/images was made).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import threading
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hubbrowser import CHROMIUM, chromium, hub_passwords, log_in, open_form, start, wait_for_lab
from hubproc import HUB_USER, Hub, docker0_gateway, lab_status, require_hub_tools

from support import OFFLINE_STARTER_IMAGE, TEST_IMAGE, describe, wait_until

USERS = ("alice", "bob", "carol")
LIMITS = f"""
    defaults:
      gpu_limit: 1
      max_gpus_per_container: 1
      memory_limit: 2G
      gpu_hold_after_stop_minutes: 0
    users:
      alice: {{gpu_limit: 2}}
      carol: {{gpu_limit: 0.5}}
    hub:
      users: [{HUB_USER}]
"""
# One whole GPU, and one split into MIG instances.
GPUS = """
    backend: simulated
    simulated:
      gpus:
        - {}
        - mig: true
          mig_instances: [{profile: 3g.20gb}, {profile: 2g.10gb}, {profile: 1g.5gb}]
"""
IMAGES = f"""
    images:
      - name: jupyter
        image: {OFFLINE_STARTER_IMAGE}
        framework: none
        description: JupyterLab with jupyterhub-singleuser, built offline
      - name: busybox
        image: {TEST_IMAGE}
        framework: none
        description: BusyBox
    starter: jupyter
"""
CELL = "import os; print(os.environ['NVIDIA_VISIBLE_DEVICES'], os.environ.get('DS01_GPUS'))"


@pytest.fixture
def passwords(unix_users: dict[str, Any]) -> Iterator[None]:
    """Passwords for the test users and PAM for the hub; both undone afterwards."""
    with hub_passwords(USERS, HUB_USER):
        yield


@pytest.fixture
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure-jupyterhub.sh", pytrace=False)
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail("playwright is missing: run scripts/ensure-jupyterhub.sh", pytrace=False)
    with chromium() as launched:
        yield launched


@pytest.fixture
def shots(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "screenshots"
    directory.mkdir()
    yield directory
    keep = os.environ.get("DS01_SCREENSHOTS")
    if keep:
        shutil.copytree(directory, keep, dirs_exist_ok=True)


def form_of(browser: Any, hub: Hub, user: str, shots: Path) -> Any:
    """A page of ``user``, logged in, on ds01's options form (alice's login page saved)."""
    shot = shots / "jupyterhub-login.png" if user == "alice" else None
    page = log_in(browser, hub, user, shot)
    open_form(page, hub)
    return page


#: The kernel state JupyterLab shows in a notebook's toolbar. It says ``idle`` before the
#: notebook has a kernel at all (its default), so only ``dead`` is read from it.
DEAD_KERNEL = ".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='dead']"


#: A GET from inside the page: the browser resolves the server's ``*.localhost`` name (the
#: test process's own resolver need not) and sends the page's login, with the XSRF token
#: that a single-user server asks of a browser's API requests (as JupyterLab sends it).
FETCH = """async url => {
    const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || "";
    const r = await fetch(url, {headers: {"X-XSRFToken": decodeURIComponent(xsrf)}});
    return [r.status, await r.text()];
}"""


def sessions(page: Any) -> list[dict[str, Any]]:
    """The single-user server's sessions (``/api/sessions``), asked with the page's login."""
    status, text = page.evaluate(FETCH, page.url.split("/lab", 1)[0] + "/api/sessions")
    assert status == 200, f"{status} {text}"
    return list(json.loads(text))


def new_kernel(page: Any, known: set[str]) -> dict[str, Any] | None:
    """The kernel of a session not in ``known``, once the page is connected to it and it is
    idle, or once it is dead; ``None`` before."""
    for session in sessions(page):
        kernel = session.get("kernel") or {}
        if session["id"] in known or not kernel:
            continue
        state = kernel.get("execution_state")
        if state == "dead" or (state == "idle" and kernel.get("connections", 0) >= 1):
            return dict(kernel)
    return None


def run_cell(page: Any, code: str, shots: Path) -> str:
    """Open a notebook from JupyterLab's launcher, run ``code``, return its output.

    JupyterLab runs a cell only once the notebook's session has its kernel: a Shift+Enter
    before that (the kernel still starting, slow on a busy machine) clears the cell and runs
    nothing, so no output ever comes. The cell is run once the server has the notebook's
    new kernel idle with the page connected to it (which the page does only once its
    session holds the kernel). A new notebook's editor may also take keys before it is
    ready for them (lost on a busy machine: an empty cell runs with no output), so the code
    is typed again until the cell shows it. A kernel that dies is seen at once (the server's
    state, then the notebook's toolbar): the lab is loaded again with its workspace reset
    and a new notebook tried, twice at most, each try's page saved. (A plain reload would
    restore the workspace: the dead notebook's tab in front, and no launcher to click.)"""
    for attempt in range(3):
        known = {session["id"] for session in sessions(page)}
        page.click(".jp-LauncherCard[data-category='Notebook']")
        kernel = wait_until(
            "the new notebook's kernel, idle and connected to the page",
            lambda known=known: new_kernel(page, known),
            timeout=120,
            interval=0.2,
        )
        if kernel["execution_state"] != "dead":
            editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
            deadline = time.monotonic() + 60
            while True:
                editor.click()
                page.keyboard.press("Control+A")
                page.keyboard.type(code)
                if code in str(editor.inner_text()).replace("\u00a0", " "):
                    break
                assert time.monotonic() < deadline, f"the cell shows {editor.inner_text()!r}"
                page.wait_for_timeout(500)
            page.keyboard.press("Shift+Enter")
            output = page.locator(".jp-OutputArea-output")
            output.or_(page.locator(DEAD_KERNEL)).first.wait_for(timeout=120_000)
            if output.count():
                return str(output.first.inner_text())
        page.screenshot(path=str(shots / f"dead-kernel-{attempt}.png"))
        assert attempt < 2, f"the notebook's kernel died three times: {kernel}"
        lab = page.url.split("/lab", 1)[0] + "/lab"
        page.goto(f"{lab}?reset")
        page.wait_for_selector(".jp-LauncherCard", timeout=90_000)
    raise AssertionError("unreachable")


def test_users_start_jupyterlab_on_their_ds01_devices_in_a_browser(
    ds01d: Any, docker_client: Any, passwords: None, browser: Any, shots: Path
) -> None:
    require_hub_tools()
    d = ds01d(resource_limits=LIMITS, gpu_config=GPUS, images=IMAGES)
    hub = Hub(d.paths.socket, docker0_gateway(docker_client))
    try:
        hub.start()
        scenes(d, hub, browser, shots, docker_client)
    finally:
        hub.stop()
        print(f"===== the hub =====\n{hub.tail()}")
        shutil.rmtree(hub.dir, ignore_errors=True)


def users_containers(docker_client: Any) -> dict[str, str]:
    """Name → id of the test users' running ds01 containers."""
    listed = docker_client.containers.list(filters={"label": "ds01.managed"})
    return {c.name: c.id for c in listed if c.labels.get("ds01.user") in USERS}


def mark(what: str, started: float = time.monotonic()) -> None:
    """Print how long the test module has been loaded (pytest shows it on a failure)."""
    print(f"{time.monotonic() - started:6.1f} s  {what}")


def scenes(d: Any, hub: Hub, browser: Any, shots: Path, docker_client: Any) -> None:
    mark("hub up")
    # 1. alice: a MIG slice, JupyterLab, a cell showing her device.
    alice = form_of(browser, hub, "alice", shots)
    assert alice.locator("#ds01-device option[value='mig:1g.5gb']").count() == 1
    alice.screenshot(path=shots / "jupyterhub-form.png")
    start(alice, "mig:1g.5gb")
    wait_for_lab(alice, "alice")
    hers = [
        dev["uuid"]
        for dev in d.cli_json("alice", "gpu-status")
        if (dev.get("holder") or {}).get("user") == "alice"
    ]
    assert len(hers) == 1 and hers[0].startswith("MIG-"), hers
    printed = run_cell(alice, CELL, shots)
    alice.screenshot(path=shots / "jupyterlab-cell.png")
    assert hers[0] in printed.split(), printed
    mark("1. alice in JupyterLab")
    alice_uid = pwd.getpwnam("alice")
    server = docker_client.api.inspect_container(f"jupyterhub._.{alice_uid.pw_uid}")
    assert server["Config"]["User"] == f"{alice_uid.pw_uid}:{alice_uid.pw_gid}"
    assert server["Config"]["Cmd"][0] == "jupyterhub-singleuser"
    assert server["Config"]["Labels"]["ds01.gpus"] == hers[0]
    assert any(m["Destination"] == "/workspace" for m in server["Mounts"])
    created = d.events_where(action="container.create", outcome="success", user="alice")
    assert [e["details"].get("via") for e in created] == [HUB_USER], created

    # 2. bob waits in ds01's queue for the one whole GPU, which alice's container holds.
    held = d.cli(
        "alice", "container-create", "train", "--image", "busybox", "--gpus", "1", "--start"
    )
    assert held.returncode == 0, describe(held)
    bob = form_of(browser, hub, "bob", shots)
    start(bob, "gpus:1")
    bob.locator("#progress-message", has_text="position 1").wait_for()
    bob.screenshot(path=shots / "jupyterhub-queued.png")
    mark("2. bob queued")
    stopped = d.cli("alice", "container-stop", "train")
    assert stopped.returncode == 0, describe(stopped)
    mark("2. the GPU freed")
    wait_for_lab(bob, "bob")
    # Dispatched later by ds01d's queue (the create's doer is ds01d), his request's events
    # still name the hub that asked for it.
    bobs = f"container/jupyterhub._.{pwd.getpwnam('bob').pw_uid}"
    dispatched = [
        (e["action"], e["user"], e["details"].get("via"))
        for e in d.events()
        if e["action"] in ("queue.join", "container.create", "queue.start")
        and (e["user"] == "bob" or e["resource"] == bobs)
    ]
    assert dispatched == [
        ("queue.join", "bob", HUB_USER),
        ("container.create", "ds01d", HUB_USER),
        ("queue.start", "bob", HUB_USER),
    ], dispatched
    mark("2. bob in JupyterLab")

    # 3. carol's quota is half a GPU: the form refuses a whole one with ds01's message.
    carol = form_of(browser, hub, "carol", shots)
    start(carol, "gpus:1")
    carol.wait_for_load_state()
    text = carol.inner_text("body")
    assert "ds01:" in text, text
    assert "GPU" in text and "limit" in text.lower(), text
    assert carol.locator("#ds01-device").count() == 1  # the form again
    carol.screenshot(path=shots / "jupyterhub-over-quota.png")
    mark("3. carol refused")

    # 4. ds01d and the hub restart while alice's and bob's servers run: the hub finds them
    # again, nothing is made twice, no device is held twice.
    ids = users_containers(docker_client)
    hub.stop()
    d.restart()
    hub.start()
    for user in ("alice", "bob"):
        wait_until(f"{user}'s server in the hub again", lambda u=user: hub.server(u))
        assert lab_status(hub, user) == 200, user
    assert users_containers(docker_client) == ids
    held = [dev["uuid"] for dev in d.cli_json(None, "gpu-status") if dev.get("holder")]
    assert len(held) == len(set(held)) == 2, held
    mark("4. restarts")

    # 5. ds01 stops alice's server (as its idle stop would): the hub shows it stopped; the
    # container and her workspace stay.
    stopped = d.cli("alice", "container-stop", "jupyterhub")
    assert stopped.returncode == 0, describe(stopped)
    wait_until("the hub to see alice's server stopped", lambda: hub.server("alice") is None)
    assert server["Id"] in {c.id for c in docker_client.containers.list(all=True)}
    assert Path(alice_uid.pw_dir, "workspace").is_dir()
    mark("5. stopped by ds01")

    # 6. alice asks for a whole GPU while bob holds it, then stops the pending server in the
    # hub: her request leaves ds01's queue.
    # The hub answers a spawn that stays pending after its slow-spawn wait (10 s), or with an
    # error once it is interrupted: ask in the background, and let the queue tell.
    def ask() -> None:
        with contextlib.suppress(urllib.error.HTTPError):
            hub.api("POST", "/users/alice/server", {"image": "jupyter", "gpus": 1})

    asking = threading.Thread(target=ask)
    asking.start()
    (waiting,) = wait_until("alice's request in the queue", lambda: d.cli_json("alice", "queue"))
    assert waiting["container"] == "jupyterhub", waiting
    hub.api("DELETE", "/users/alice/server")
    wait_until("the request withdrawn", lambda: not d.cli_json("alice", "queue"))
    asking.join()
    (withdrawn,) = d.events_where(action="queue.cancel", user="alice")
    assert withdrawn["details"].get("via") == HUB_USER, withdrawn
    mark("6. withdrawn")

    # Simulated GPUs: no made-up UUID reaches the NVIDIA runtime; DS01_GPUS names them.
    assert printed.split() == ["void", hers[0]], printed
