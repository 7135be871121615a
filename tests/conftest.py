"""Test infrastructure shared by the whole suite (no tests here).

Markers (registered in pyproject.toml):

- ``docker``: needs root and a Docker engine that answers. Every test under
  ``tests/integration/`` gets it automatically, and so does every test that uses one of the
  fixtures ``docker_client``, ``test_image``, ``test_image_alt`` or ``ds01d``.
- ``e2e``: runs the CLI as real Unix users against a real ds01d (same requirements).
  Every test under ``tests/e2e/`` gets it automatically.

Without root or Docker those tests are SKIPPED with the reason, so that the pure unit tests
still run anywhere. When ``CI`` is set (to anything but ``0``/``false``) or
``DS01_REQUIRE_DOCKER=1`` (``make test`` sets it), they FAIL instead: CI can never pass by
silently skipping them.

Fixtures:

- ``docker_client`` (session): ``docker.from_env()``.
- ``test_image`` / ``test_image_alt`` (session): ``"ds01-test/busybox:latest"`` and
  ``"ds01-test/busybox-alt:latest"``, after checking the image exists (``make images``).
- ``unix_users`` (session): real users alice, bob, carol, dave, erin (see ``TEST_USERS``),
  mapping name → ``pwd.struct_passwd``.
- ``fake_gpu_nodes`` (session): a directory with ``nvidia0``…``nvidia7`` character devices.
- ``slurm_cluster`` (session): a real Slurm cluster on this machine (``scripts/slurm-cluster.sh``),
  started in the background at the session's start when a collected test needs it.
- ``ds01d`` (function): factory of :class:`support.Ds01Daemon`; see its docstring.
- ``home_dir`` (function): factory of fresh directories owned by a test user, with files.
- ``local_registry`` (function): Debian's docker-registry on 127.0.0.1 holding the test
  image under a reference it yields (not present locally): pulls without a network.
- ``webhook`` (function): a local HTTP endpoint recording the JSON bodies POSTed to it, as
  ``(port, bodies)``: the lifecycle's webhook notices.

Helpers live in ``tests/support.py``; import them as ``from support import …`` (this
directory is on ``sys.path`` because it holds this conftest and no ``__init__.py``).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest
from hypothesis import HealthCheck, settings

from support import (
    MACHINE_LOCK_HELD_ENV,
    SLURM_CLUSTER_SCRIPT,
    TEST_IMAGE,
    TEST_IMAGE_ALT,
    TEST_USER_COMMENT,
    Ds01Daemon,
    can_run_as,
    ensure_group,
    ensure_user,
    environ_flag,
    free_port,
    hold_machine_lock,
    make_fake_gpu_nodes,
    remove_group,
    remove_managed_containers,
    remove_user,
    remove_user_networks,
    wait_until,
)

TESTS_DIR = Path(__file__).resolve().parent

# Hypothesis's time checks (200 ms a test case, slow data generation) are wall-clock limits,
# which tests never assert: under `make test` the unit tests run at nice 19 beside the Docker
# tests (scripts/run-tests.sh) and may wait for a CPU. What a test checks is unchanged.
settings.register_profile("ds01", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ds01")

#: Markers whose tests need root and a Docker engine.
DOCKER_MARKERS = ("docker", "e2e")
#: Fixtures that need root and a Docker engine; a test using one is marked ``docker``.
DOCKER_FIXTURES = frozenset({"docker_client", "test_image", "test_image_alt", "ds01d"})
#: Directories whose tests are marked automatically.
AUTO_MARKERS = {TESTS_DIR / "integration": "docker", TESTS_DIR / "e2e": "e2e"}

#: Unix users the ``unix_users`` fixture provides, with their supplementary groups.
#: alice and carol are PhD students, bob an MSc student, dave in no group, erin an admin.
TEST_USERS: Mapping[str, Sequence[str]] = {
    "alice": ("phd",),
    "bob": ("msc",),
    "carol": ("phd",),
    "dave": (),
    "erin": ("ds01-admin",),
}
TEST_GROUPS = ("phd", "msc", "ds01-admin")


def strict_mode() -> bool:
    """True when docker/e2e tests must fail rather than skip (CI, or DS01_REQUIRE_DOCKER=1)."""
    return environ_flag("CI") or os.environ.get("DS01_REQUIRE_DOCKER", "") == "1"


@functools.cache
def docker_problem() -> str | None:
    """Why docker/e2e tests cannot run here, or ``None`` if they can (checked once)."""
    if os.geteuid() != 0:
        return "needs root (it creates Unix users and runs ds01d, which talks to Docker)"
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return (
            f"no Docker engine answers ({type(exc).__name__}: {exc}); "
            "`make test` starts one (scripts/ensure-docker.sh)"
        )
    return None


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the current test, or fail it in strict mode (see :func:`strict_mode`)."""
    if strict_mode():
        pytest.fail(f"{reason} [required: CI or DS01_REQUIRE_DOCKER=1 is set]", pytrace=False)
    pytest.skip(reason)


def needs_docker(item: pytest.Item) -> bool:
    if any(item.get_closest_marker(name) for name in DOCKER_MARKERS):
        return True
    return bool(DOCKER_FIXTURES.intersection(getattr(item, "fixturenames", ())))


def _lock_machine(config: pytest.Config) -> None:
    """Hold the machine lock for the whole session (released when the process exits).

    docker/e2e tests own the machine: they remove every ds01-managed container and the test
    users. A second session (or ``make setup`` reinstalling /opt/ds01/venv) waits here
    instead of pulling the ground from under the first.
    """
    fd = hold_machine_lock(lambda message: print(f"ds01 tests: {message}", flush=True))
    if fd is None:
        return  # an outer `flock` already holds it
    os.environ[MACHINE_LOCK_HELD_ENV] = "1"  # `make setup` run by a test must not wait on us
    config.stash[_MACHINE_LOCK_FD] = fd


_MACHINE_LOCK_FD = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by directory and fixtures; skip docker/e2e tests that cannot run here."""
    for item in items:
        path = Path(str(item.path)).resolve()
        for directory, marker in AUTO_MARKERS.items():
            if path.is_relative_to(directory) and not item.get_closest_marker(marker):
                item.add_marker(marker)
        if DOCKER_FIXTURES.intersection(getattr(item, "fixturenames", ())) and not any(
            item.get_closest_marker(name) for name in DOCKER_MARKERS
        ):
            item.add_marker("docker")
    docker_items = [item for item in items if needs_docker(item)]
    if docker_items and os.geteuid() == 0:
        _lock_machine(config)
    if strict_mode():
        return  # pytest_runtest_setup fails them instead
    problem = docker_problem() if docker_items else None
    if problem is not None:
        for item in docker_items:
            item.add_marker(pytest.mark.skip(reason=f"docker/e2e test: {problem}"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """In strict mode, fail (never skip) a docker/e2e test that cannot run here."""
    if strict_mode() and needs_docker(item):
        problem = docker_problem()
        if problem is not None:
            pytest.fail(
                f"docker/e2e test cannot run: {problem} "
                "[required: CI or DS01_REQUIRE_DOCKER=1 is set]",
                pytrace=False,
            )


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        skip_or_fail(f"{what} needs root")


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A ``docker.DockerClient`` for the local engine (``docker.from_env()``)."""
    problem = docker_problem()
    if problem is not None:
        skip_or_fail(problem)
    import docker

    client = docker.from_env()
    yield client
    remove_user_networks(client)  # the tests keep them from one to the next
    client.close()


def _require_image(client: Any, ref: str) -> str:
    from docker.errors import ImageNotFound

    try:
        client.images.get(ref)
    except ImageNotFound:
        pytest.fail(
            f"test image {ref} is missing: run `make images` (scripts/build-test-images.sh); "
            "no registry is reachable, so tests never pull",
            pytrace=False,
        )
    return ref


@pytest.fixture(scope="session")
def test_image(docker_client: Any) -> str:
    """``"ds01-test/busybox:latest"``: ~2 MB busybox (sh, sleep, ps, nc, wget…), PATH=/bin."""
    return _require_image(docker_client, TEST_IMAGE)


@pytest.fixture(scope="session")
def test_image_alt(docker_client: Any) -> str:
    """``"ds01-test/busybox-alt:latest"``: the same image under a second reference."""
    return _require_image(docker_client, TEST_IMAGE_ALT)


@pytest.fixture(scope="session")
def unix_users() -> Iterator[dict[str, pwd.struct_passwd]]:
    """Real Unix users for identity, ownership and quota tests.

    Creates (``useradd -m -s /bin/sh``) whichever of alice, bob, carol, dave and erin do
    not exist, the groups ``phd`` (alice, carol), ``msc`` (bob) and ``ds01-admin`` (erin),
    and adds the memberships. At the end of the session it deletes (``userdel -r``) the
    users and groups it created, and any user left over by an interrupted earlier session
    (recognised by the comment field ``ds01-test``). Returns name → ``pwd.struct_passwd``.
    """
    require_root("creating Unix users")
    created_groups = [group for group in TEST_GROUPS if ensure_group(group)]
    to_remove: list[str] = []
    try:
        for name, groups in TEST_USERS.items():
            existed_as_test_user = _is_test_user(name)
            if ensure_user(name, groups) or existed_as_test_user:
                to_remove.append(name)
        yield {name: pwd.getpwnam(name) for name in TEST_USERS}
    finally:
        for name in reversed(to_remove):
            remove_user(name)
        for group in reversed(created_groups):
            remove_group(group)


def _is_test_user(name: str) -> bool:
    try:
        return pwd.getpwnam(name).pw_gecos == TEST_USER_COMMENT
    except KeyError:
        return False


@pytest.fixture(scope="session")
def _installed_for_users(unix_users: dict[str, pwd.struct_passwd]) -> None:
    """Check once that other users can run this interpreter and its console scripts."""
    if not can_run_as("alice", Path(sys.executable)):
        pytest.fail(
            f"user alice cannot run {sys.executable}: run the tests with the world-readable "
            "install, /opt/ds01/venv/bin/pytest (`make test` does)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def fake_gpu_nodes() -> Iterator[Path]:
    """A world-readable directory with ``nvidia0``…``nvidia7``: character devices 195:N.

    For ``gpu-config.yaml``::

        backend: simulated
        simulated:
          device_node_dir: <this directory>

    A container that got simulated GPU N then lists ``c 195:N rwm`` in its cgroup
    ``devices.list``.
    """
    require_root("mknod")
    directory = make_fake_gpu_nodes(8)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def ds01d(
    request: pytest.FixtureRequest,
    docker_client: Any,
    test_image: str,
    unix_users: dict[str, pwd.struct_passwd],
    _installed_for_users: None,
) -> Iterator[Callable[..., Ds01Daemon]]:
    """Factory: ``ds01d(resource_limits=None, gpu_config=None, images=None, *, start=True,
    extra_args=(), env=None) -> Ds01Daemon``.

    Each call writes the given YAML texts (omitted → ds01d's embedded default; texts are
    dedented) into a fresh temporary root every user can traverse, starts ``ds01d`` on a
    socket there and waits for it (up to 10 s; the test fails with the daemon's output if
    it does not come up). ``support.TEST_IMAGES_YAML`` registers the test image as
    ``busybox``. Example::

        def test_quota(ds01d):
            d = ds01d(resource_limits="defaults:\\n  gpu_limit: 1\\n", images=TEST_IMAGES_YAML)
            r = d.cli("alice", "container-create", "a", "--image", "busybox", "--gpus", "2")
            assert r.returncode == 3, describe(r)

    The Unix users exist (the fixture uses ``unix_users``) and the test image is present.
    At teardown every daemon is stopped (SIGTERM, SIGKILL after 5 s), every container
    labelled ``ds01.managed=true`` is force-removed, and the temp root is deleted. Users'
    networks stay for the next test (removed at the end of the session), unless the test
    is marked ``fresh_networks``: then none exists before it and none is left after it. The
    daemon's output is printed, so pytest shows it when the test fails.
    """
    yield from _daemon_factory(request)


@pytest.fixture(scope="class")
def ds01d_per_class(
    request: pytest.FixtureRequest,
    docker_client: Any,
    test_image: str,
    unix_users: dict[str, pwd.struct_passwd],
    _installed_for_users: None,
) -> Iterator[Callable[..., Ds01Daemon]]:
    """The ``ds01d`` factory, whose daemons live for one test class: for a table of attempts
    that each check they changed nothing, so that one daemon serves every row."""
    yield from _daemon_factory(request)


def _daemon_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., Ds01Daemon]]:
    """What ``ds01d`` and ``ds01d_per_class`` yield, and their clean-up."""
    # Leftovers of an interrupted run would be adopted. Users' networks are kept from one test
    # to the next (each ds01d guards what it finds), except for tests marked fresh_networks.
    fresh_networks = request.node.get_closest_marker("fresh_networks") is not None
    remove_managed_containers(networks=fresh_networks)
    daemons: list[Ds01Daemon] = []

    def make(
        resource_limits: str | None = None,
        gpu_config: str | None = None,
        images: str | None = None,
        *,
        start: bool = True,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> Ds01Daemon:
        daemon = Ds01Daemon(resource_limits, gpu_config, images, extra_args=extra_args, env=env)
        daemons.append(daemon)
        if start:
            daemon.start()
        return daemon

    yield make
    for daemon in daemons:
        print(f"===== ds01d in {daemon.root} =====\n{daemon.log_tail()}")
        daemon.cleanup(keep_networks=not fresh_networks)


@pytest.fixture
def webhook() -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """A local HTTP endpoint that records the JSON bodies POSTed to it."""
    received: list[dict[str, Any]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], received
    server.shutdown()
    server.server_close()


@pytest.fixture
def home_dir(unix_users: dict[str, pwd.struct_passwd]) -> Iterator[Callable[..., Path]]:
    """Factory: ``home_dir(user, files={name: text}) -> Path``, a fresh directory in the
    user's home, owned by them, with those files written exactly as given (owned by them
    too); removed at teardown."""
    made: list[Path] = []

    def make(user: str, files: dict[str, str] | None = None) -> Path:
        entry = unix_users[user]
        path = Path(entry.pw_dir) / f"ds01t-{uuid.uuid4().hex[:8]}"
        path.mkdir(mode=0o755)
        made.append(path)
        for name, text in (files or {}).items():
            (path / name).write_text(text, encoding="utf-8", newline="")
        for item in [path, *path.rglob("*")]:
            os.lchown(item, entry.pw_uid, entry.pw_gid)
        return path

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def local_registry(docker_client: Any, test_image: str) -> Iterator[str]:
    """Debian's docker-registry on a free port of 127.0.0.1 (Docker trusts 127.0.0.0/8
    without TLS), holding the test image; yields its reference there, not present locally."""
    binary = shutil.which("docker-registry")
    if binary is None:
        skip_or_fail("docker-registry is not installed: `make images` installs it")
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="ds01-registry-"))
    (root / "config.yml").write_text(
        f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        encoding="utf-8",
    )
    with (root / "log").open("wb") as log:
        process = subprocess.Popen(
            [str(binary), "serve", str(root / "config.yml")], stdout=log, stderr=log
        )
    reference = f"127.0.0.1:{port}/ds01-test/ds01t-pulled:v1"

    def answers() -> bool:
        assert process.poll() is None, f"docker-registry exited:\n{(root / 'log').read_text()}"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
        except OSError:
            return False
        return True

    try:
        wait_until("docker-registry to answer", answers, timeout=10)
        docker_client.images.get(test_image).tag(reference)
        for line in docker_client.images.push(reference, stream=True, decode=True):
            assert "error" not in line, line
        docker_client.images.remove(reference)
        yield reference
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


class SlurmClusterUp:
    """``scripts/slurm-cluster.sh up`` running in the background, its output kept in files
    (not pipes: the daemons it starts must not hold the test's end of one)."""

    TIMEOUT_S = 600.0

    def __init__(self) -> None:
        self._output = Path(tempfile.mkdtemp(prefix="ds01-slurm-up-"))
        with (
            (self._output / "stdout").open("wb") as stdout,
            (self._output / "stderr").open("wb") as stderr,
        ):
            self.process = subprocess.Popen(
                ["bash", str(SLURM_CLUSTER_SCRIPT), "up"],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )

    def result(self) -> subprocess.CompletedProcess[str]:
        """Wait for ``up`` to end (killed after ``TIMEOUT_S`` from now): what it returned
        and printed."""
        try:
            self.process.wait(timeout=self.TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        stdout, stderr = ((self._output / name).read_text() for name in ("stdout", "stderr"))
        shutil.rmtree(self._output, ignore_errors=True)
        return subprocess.CompletedProcess(
            self.process.args, self.process.returncode, stdout, stderr
        )


def slurm_cluster_down() -> None:
    """``scripts/slurm-cluster.sh down``: every daemon of the cluster stopped, its state gone."""
    subprocess.run(
        ["bash", str(SLURM_CLUSTER_SCRIPT), "down"], capture_output=True, timeout=120, check=False
    )


_SLURM_UP = pytest.StashKey[SlurmClusterUp]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the Slurm test cluster in the background as soon as the session knows that a
    test of it will run (as root, after the machine lock is taken): ``slurm_cluster`` then
    finds it up instead of waiting for ``up``."""
    if session.config.option.collectonly or os.geteuid() != 0:
        return
    if any("slurm_cluster" in getattr(item, "fixturenames", ()) for item in session.items):
        session.config.stash[_SLURM_UP] = SlurmClusterUp()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A cluster started for the session whose tests never asked for it (``-x``, an
    interrupt) goes down too."""
    started = session.config.stash.get(_SLURM_UP, None)
    if started is not None:
        del session.config.stash[_SLURM_UP]
        started.result()
        slurm_cluster_down()


@pytest.fixture(scope="session")
def slurm_cluster(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """A real Slurm cluster on this machine: ``scripts/slurm-cluster.sh up`` (munge, MariaDB,
    slurmdbd, slurmctld, slurmd nodes ``node1`` with 2 GPUs and ``node2`` with 4, Debian's
    packages installed if missing), and ``down`` at the end of the session. The session
    began ``up`` in the background when it collected a test that needs the cluster
    (``pytest_collection_finish``); this waits for it to end.

    Returns the variables ``up`` printed: ``SLURM_CONF`` (give it to every Slurm command and
    ds01's), ``DS01_SLURM_CLUSTER``, ``DS01_SLURM_DIR``. The accounting database starts empty
    only when the cluster was not already up.
    """
    require_root("the Slurm test cluster")
    started = request.config.stash.get(_SLURM_UP, None)
    if started is None:
        started = SlurmClusterUp()
    else:
        del request.config.stash[_SLURM_UP]
    try:
        up = started.result()
        if up.returncode != 0:
            pytest.fail(f"slurm-cluster.sh up failed:\n{up.stdout}{up.stderr}", pytrace=False)
        exports = {}
        for line in up.stdout.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            exports[name] = value
        yield exports
    finally:
        slurm_cluster_down()
