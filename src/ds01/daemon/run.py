"""ds01d's life: start the service and its loops, serve the socket, stop gracefully.

``run`` is what ``ds01d`` (``ds01.daemon.main``) does once its command line is parsed.
SIGTERM or SIGINT stops it gracefully (:class:`GracefulStop`).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ds01.errors import Ds01Error
from ds01.runtime.userfs import start_fork_server, stop_fork_server

if TYPE_CHECKING:
    from ds01.daemon.disk import DiskMeter
    from ds01.daemon.dispatcher import GpuDispatcher
    from ds01.daemon.energy import EnergyMeter
    from ds01.daemon.gpu_use import GpuUseWatch
    from ds01.daemon.lifecycle import LifecycleLoop
    from ds01.daemon.networks import NetworkUpkeep
    from ds01.daemon.oom import OomWatcher
    from ds01.daemon.paths import DaemonPaths
    from ds01.daemon.server import Door, Ds01HttpServer
    from ds01.daemon.service import Ds01Service
    from ds01.daemon.slurm_jobs import SlurmJobReaper
    from ds01.metrics.activity import ActivityCounters
    from ds01.metrics.exporter import MetricsExporter
    from ds01.metrics.listen import ListenAddress
    from ds01.runtime.docker import DockerRuntime, EngineInfo

#: pydantic's switch for its plugins, which ds01d turns off (``run``).
PYDANTIC_PLUGINS_ENV = "PYDANTIC_DISABLE_PLUGINS"
#: Seconds a loop's pass under way still gets once the drain is over, at least.
LOOP_STOP_FLOOR_SECONDS = 1.0
#: Seconds after ds01d begins to serve that its background work (loops, backups, the
#: exporter) starts at the latest, when no request was answered before.
BACKGROUND_START_SECONDS = 1.0


def _event_log_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``EventLog`` keyword arguments the ``--audit-*`` flags set (the rest default)."""
    options: dict[str, Any] = {}
    if args.audit_max_bytes is not None:
        options["max_bytes"] = args.audit_max_bytes or None
    if args.audit_keep_files is not None:
        options["keep_files"] = args.audit_keep_files
    if args.audit_refusal_window is not None:
        options["refusal_window_seconds"] = args.audit_refusal_window
    return options


class Stoppable(Protocol):
    """A loop of ds01d that acts on containers: told first to begin nothing new."""

    def request_stop(self) -> None: ...


class GracefulStop:
    """What SIGTERM and SIGINT do. The first begins the drain: ``loops`` begin nothing new
    and the server answers what it accepted, for at most ``drain_seconds``. A second one
    ends the drain at once: requests still running are answered that their outcome is
    unknown (and logged), so that a hung Docker call cannot hold ds01d for the whole drain.
    """

    def __init__(
        self, server: Ds01HttpServer, loops: list[Stoppable], drain_seconds: float
    ) -> None:
        self.server = server
        self.loops = loops
        self.drain_seconds = drain_seconds
        self.deadline: float | None = None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        log = logging.getLogger("ds01d")
        if self.deadline is not None:
            log.warning(
                "signal %d again: not waiting for the %d request(s) still running",
                signum,
                self.server.connections.running,
            )
            self.server.hurry()
            self.deadline = time.monotonic()
            return
        self.deadline = time.monotonic() + self.drain_seconds
        log.info(
            "signal %d: stopping; the accepted requests get up to %g s to finish (a second "
            "signal ends that now)",
            signum,
            self.drain_seconds,
        )
        # Not in the handler: telling the queue takes its lock, which this thread may hold.
        threading.Thread(target=self._begin, name="ds01d-stop", daemon=True).start()

    def _begin(self) -> None:
        for loop in self.loops:
            loop.request_stop()
        self.server.drain(self.drain_seconds)

    def seconds_left(self) -> float:
        """What is left of the drain for the loops' passes under way (at least a floor)."""
        left = 0.0 if self.deadline is None else self.deadline - time.monotonic()
        return max(left, LOOP_STOP_FLOOR_SECONDS)


def _prepare_process(args: argparse.Namespace) -> None:
    """The interpreter set up for ds01d's start (collector, pydantic, logging); exits
    unless ds01d runs as root."""
    # The start allocates some 100,000 objects that live as long as ds01d (modules, models,
    # the ledger); the cyclic collector would walk them about 140 times while they load,
    # some 15 % of the start's CPU. So it is off until ds01d serves, and what the start made
    # is then frozen out of its reach (``_serving_collector``).
    gc.disable()
    # ds01 uses no pydantic plugin: without this, the first model pydantic builds would
    # read every installed package's entry points looking for one (some 5 ms of the start).
    os.environ.setdefault(PYDANTIC_PLUGINS_ENV, "__all__")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if os.geteuid() != 0:
        sys.exit("ds01d: must run as root (it alone holds Docker access).")


def run(args: argparse.Namespace) -> None:
    """Run ds01d with the parsed command line ``args`` until a signal stops it; exits
    with the status of ``ds01.daemon.main``'s docstring."""
    _prepare_process(args)
    metrics_address = _metrics_address(args)
    paths = _prepared_paths(args)
    state_lock = _locked_state(paths)
    docker = _DockerStart.begin()
    # Imported here, while Docker lists (_DockerStart): the exporter's address and the state
    # directory are checked before anything heavy loads.
    from ds01.daemon.server import Ds01HttpServer
    from ds01.daemon.state_backup import StateBackups

    service, settling = _started_service(args, paths, docker)
    backups = StateBackups(service.store)
    # A copy of the state as it is at start, before any change: nothing writes the store
    # from here until ds01d serves, which waits for it. SQLite copies, checks and flushes
    # it without holding the interpreter's lock.
    first_backup = _InThread("ds01d-first-backup", backups.backup_now)
    loops = _Loops.of(service, args)
    activity = _activity_counters(service)
    metrics = _MetricsStart(
        lambda: _metrics_exporter(
            service, activity, loops.energy, container_names=_metrics_container_names(args)
        ),
        metrics_address,
    )
    from ds01.daemon import docker_api  # noqa: F401 (loaded while the settling waits)

    # No socket is bound before the start is settled: a client that can connect finds the
    # firewall in place and the half-made containers gone.
    _wait_for(settling)
    first_backup.wait()
    server = Ds01HttpServer(paths.socket, service, doors=_doors(args, paths, service))

    def start_background() -> None:
        backups.start()
        loops.start()
        metrics.start()  # loads the exporter while the socket already answers
        start_fork_server()  # a small process forks the checks made as a user from now on

    # A failed background start stops ds01d as a SIGTERM would (a drain, then exit status 1).
    background = _BackgroundStart(
        server.answered, start_background, fail=lambda: os.kill(os.getpid(), signal.SIGTERM)
    )
    stop = GracefulStop(server, [background, loops.queue, loops.lifecycle], args.drain_timeout)
    signal.signal(signal.SIGTERM, stop.on_signal)
    signal.signal(signal.SIGINT, stop.on_signal)
    signal.signal(signal.SIGHUP, lambda signum, frame: service.config())
    logging.getLogger("ds01d").info("listening on %s (config %s)", paths.socket, paths.config_dir)
    unfinished: list[str] = []
    _serving_collector()
    background.begin()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        background.request_stop()
        metrics.stop()
        service.ledger.stop()
        unfinished = loops.stop(stop)
        server.server_close()
        paths.socket.unlink(missing_ok=True)
        backups.stop()  # the last copy, once nothing writes any more
        service.events.close()
        service.store.close()
        stop_fork_server()
        os.close(state_lock)
    if background.error is not None:
        sys.exit(f"ds01d: could not start its background work: {background.error}")
    _exit_status(server, unfinished)


class _BackgroundStart:
    """ds01d's background work (``start``: its loops, the backups thread, the exporter)
    begun once the server answered its first request (``answered``), or
    ``BACKGROUND_START_SECONDS`` after it began to serve: the first answer does not share
    the interpreter with the loops' first passes and the exporter's imports. A stop asked
    before then (:meth:`request_stop`) means it never begins; stopping what did begin
    works the same either way (each ``stop`` of what never started returns at once). When
    ``start`` raises, ``fail`` is called (ds01d's own SIGTERM): ds01d stops rather than
    serve without its loops."""

    def __init__(
        self, answered: threading.Event, start: Callable[[], None], fail: Callable[[], None]
    ) -> None:
        self._answered = answered
        self._start = start
        self._fail = fail
        self._lock = threading.Lock()
        self._stopped = False
        #: What ``start`` raised (then ``fail`` was called: ds01d stops, exit status 1).
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="ds01d-background", daemon=True)

    def begin(self) -> None:
        """Wait in a thread of its own for the first answer, then start the work."""
        self._thread.start()

    def _run(self) -> None:
        self._answered.wait(BACKGROUND_START_SECONDS)
        with self._lock:
            if self._stopped:
                return
            try:
                self._start()
            except Exception as exc:  # ds01d without its loops must not go on serving
                logging.getLogger("ds01d").exception("could not start the background work")
                self.error = exc
        if self.error is not None:
            self._fail()

    def request_stop(self) -> None:
        """ds01d stops: the work is not begun from now on (a start under way ends first)."""
        with self._lock:
            self._stopped = True


def _wait_for(settling: _InThread[None]) -> None:
    """The start's settling done (``_settled``); exits when Docker refused it."""
    try:
        settling.wait()
    except Ds01Error as exc:
        sys.exit(f"ds01d: {exc.message}")


def _serving_collector() -> None:
    """The cyclic garbage collector on again, for what ds01d allocates from now on: what
    the start made goes to the permanent generation, which no collection walks (the start's
    own garbage, small, stays with it)."""
    gc.freeze()
    gc.enable()


def _doors(args: argparse.Namespace, paths: DaemonPaths, service: Ds01Service) -> list[Door]:
    """The Docker API door, unless turned off."""
    from ds01.daemon.docker_api import DockerApiServer
    from ds01.paths import docker_socket_path

    path = docker_socket_path(args.docker_socket, str(paths.socket))
    log = logging.getLogger("ds01d")
    if path is None:
        log.info("Docker API socket off")
        return []
    door = DockerApiServer(Path(path), service)
    log.info("Docker API for users on %s", path)
    return [door]


def _exit_status(server: Ds01HttpServer, unfinished: list[str]) -> None:
    """Exit 1 when a client was told its outcome is unknown or a pass was cut off."""
    log = logging.getLogger("ds01d")
    if server.cut_short or unfinished:
        log.error(
            "stopped with %d request(s) whose outcome their clients were told is unknown",
            len(server.cut_short),
        )
        sys.exit(1)
    log.info("stopped")


def _prepared_paths(args: argparse.Namespace) -> DaemonPaths:
    """ds01d's directories, made and given their modes; exits when one cannot be."""
    from ds01.daemon.paths import DaemonPaths

    paths = DaemonPaths.resolve(args.config_dir, args.state_dir, args.log_dir, args.socket)
    for directory, mode in ((paths.state_dir, 0o700), (paths.log_dir, 0o750)):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(mode)
        except OSError as exc:
            sys.exit(
                f"ds01d: cannot prepare {directory}: {exc.strerror or exc}. ds01d needs to "
                "write there: make it a writable directory of root's (a read-only file "
                "system must be remounted read-write), then start ds01d again."
            )
    return paths


def _locked_state(paths: DaemonPaths) -> int:
    """The state directory's lock, held for ds01d's whole life: no second ds01d, and no
    restore, on this state. Exits when another holds it."""
    from ds01.runtime.store_files import StateDirBusy, lock_state_dir

    try:
        return lock_state_dir(paths.state_dir)
    except StateDirBusy as exc:
        sys.exit(f"ds01d: {exc.message}")


T = TypeVar("T")


class _InThread(Generic[T]):
    """``work`` run in a thread of its own from now on, while ds01d's main thread goes on
    with its start: for what waits on Docker or ``iptables`` (a wait holds no interpreter
    lock, so it costs the main thread nothing). :meth:`wait` waits for it and returns its
    result, or raises what it raised."""

    def __init__(self, name: str, work: Callable[[], T]) -> None:
        self._work = work
        self._result: list[T] = []
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result.append(self._work())
        except Exception as exc:  # raised again in the main thread, by ``wait``
            self._error = exc

    def wait(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result[0]


class _DockerStart:
    """Docker's client, its engine's info and the container ledger's start (the one full
    container list of ds01d's start, every reader after it uses the ledger), begun before
    the rest of ds01d loads: those imports are most of the start, and Docker answers on the
    other core meanwhile. :meth:`wait` waits for it and raises what it raised (a
    ``Ds01Error``: Docker refused)."""

    def __init__(self, runtime: DockerRuntime) -> None:
        from ds01.daemon.ledger import ContainerLedger

        self.runtime = runtime
        self.ledger = ContainerLedger(runtime)
        self._begun = _InThread("ds01d-docker-start", self._run)

    @classmethod
    def begin(cls) -> _DockerStart:
        """Connect to Docker and begin; exits when Docker cannot be reached."""
        from ds01.runtime.docker import DockerRuntime

        try:
            return cls(DockerRuntime.from_env())
        except Ds01Error as exc:
            sys.exit(f"ds01d: {exc.message}")

    def _run(self) -> EngineInfo:
        self.ledger.start()
        return self.runtime.engine_info()

    def wait(self) -> EngineInfo:
        """Wait for the start to end; the engine's info."""
        return self._begun.wait()


def _started_service(
    args: argparse.Namespace, paths: DaemonPaths, docker: _DockerStart
) -> tuple[Ds01Service, _InThread[None]]:
    """The service, with what the last ds01d left half-done settled, and the rest of that
    settling (the firewall up, the disk-limit mode) under way, to be waited for before
    anything is served (``_settled``); exits when Docker or the state refuse."""
    from ds01.daemon.context import DaemonDependencies
    from ds01.daemon.service import Ds01Service
    from ds01.daemon.state_start import open_state
    from ds01.events.log import EventLog
    from ds01.gpu.backend import make_backend
    from ds01.runtime.cgroups import DEFAULT_ROOT, CgroupManager

    cgroup_root = Path(args.cgroup_root or os.environ.get("DS01_CGROUP_ROOT") or DEFAULT_ROOT)
    try:
        events = EventLog(paths.events_file, **_event_log_options(args))
    except ValueError as exc:
        sys.exit(f"ds01d: {exc}")
    try:
        engine = docker.wait()
        runtime, ledger = docker.runtime, docker.ledger
        given = DaemonDependencies(
            paths=paths,
            runtime=runtime,
            ledger=ledger,
            store=open_state(paths.state_db, ledger, events),
            events=events,
            cgroups=CgroupManager(cgroup_root, engine.cgroup_driver),
            engine=engine,
            slurm_node=args.slurm_node,
            # Simulated GPUs read their utilisation from a file in the state directory, and
            # keep their MIG layouts there once `ds01 admin mig apply` changed them.
            backend_factory=lambda config: make_backend(
                config.gpus,
                simulated_telemetry_file=paths.simulated_telemetry_file,
                simulated_mig_file=paths.simulated_mig_file,
                simulated_process_file=paths.simulated_process_file,
            ),
        )
        service = Ds01Service(given)
        settling = _settled(service)
    except Ds01Error as exc:
        sys.exit(f"ds01d: {exc.message}")
    return service, settling


def _settled(service: Ds01Service) -> _InThread[None]:
    """At start: the audit log given to the admins, half-made containers and unused cgroup
    parents removed, the disk-limit mode detected, users' networks guarded (a failure is
    logged and fails closed), and what was done logged.

    The last two wait on Docker and ``iptables``: they run in a thread of their own (the
    one returned) while the main thread builds the rest of ds01d, which waits for it before
    it binds its sockets (``run``). The networks' lock is taken before that thread begins,
    so nothing could use a network before its rules are in place in any case."""
    from ds01.daemon.disk import detect_storage
    from ds01.daemon.networks import network_name

    service.share_log_with_admins()
    removed = service.reconciler.reconcile()
    records = service.records()
    guard_networks = service.networks.begin_reconcile(r.uid for r in records)

    def wait_on_docker_and_iptables() -> None:
        guard_networks()  # first: it holds the networks' lock until it is done
        service.status.storage = detect_storage(service.runtime, service.engine)

    settling = _InThread("ds01d-settle", wait_on_docker_and_iptables)
    emptied = service.enforcement.reconcile_cgroups()
    log = logging.getLogger("ds01d")
    if removed:
        log.warning("removed %d half-made container(s): %s", len(removed), ", ".join(removed))
    if emptied:
        log.info("removed %d empty cgroup parent(s): %s", len(emptied), ", ".join(emptied))
    log.info("cgroups: %r", service.cgroups)
    legacy = [r.docker_name for r in records if r.networks not in ((), (network_name(r.uid),))]
    if legacy:
        log.warning(
            "%d container(s) not on their owner's network until their next start: %s",
            len(legacy),
            ", ".join(legacy),
        )
    return settling


@dataclass(frozen=True)
class _Loops:
    """ds01d's background loops, started after the service and stopped before it."""

    watcher: OomWatcher
    queue: GpuDispatcher
    lifecycle: LifecycleLoop
    energy: EnergyMeter
    disk_meter: DiskMeter
    gpu_use: GpuUseWatch
    slurm: SlurmJobReaper
    network_upkeep: NetworkUpkeep

    @classmethod
    def of(cls, service: Ds01Service, args: argparse.Namespace) -> _Loops:
        """The loops of ``service``, not started; each one's health is in its status."""
        from ds01.daemon import dispatcher
        from ds01.daemon.disk import DiskMeter
        from ds01.daemon.energy import EnergyMeter
        from ds01.daemon.gpu_use import DEFAULT_INTERVAL_SECONDS as GPU_USE_INTERVAL
        from ds01.daemon.gpu_use import GpuUseWatch
        from ds01.daemon.lifecycle import LifecycleLoop
        from ds01.daemon.networks import NETWORK_UPKEEP_INTERVAL_S, NetworkUpkeep
        from ds01.daemon.oom import DEFAULT_INTERVAL_SECONDS, OomWatcher
        from ds01.daemon.sampler import Sampler
        from ds01.daemon.server import terminals_of
        from ds01.daemon.slurm_jobs import DEFAULT_INTERVAL_SECONDS as SLURM_INTERVAL
        from ds01.daemon.slurm_jobs import JOB_GONE_REASON, SlurmJobReaper
        from ds01.events.log import utc_now

        watcher = OomWatcher(
            service.ledger,
            service.cgroups,
            service.store,
            service.events,
            service.engine.cgroup_driver,
            interval_seconds=args.oom_interval or DEFAULT_INTERVAL_SECONDS,
            on_docker_back=service.create_intents.settle_failed_creates,
        )
        queue = dispatcher.GpuDispatcher(
            service, interval_seconds=args.queue_interval or dispatcher.DEFAULT_INTERVAL_SECONDS
        )
        sampler = Sampler(
            service.runtime,
            service.cgroups,
            service.engine.cgroup_driver,
            sessions=terminals_of(service).attached,
        )
        lifecycle = LifecycleLoop(service, sampler)
        service.status.lifecycle_pass = lambda dry_run: lifecycle.run_pass(dry_run=dry_run)
        gpu_use = GpuUseWatch(service, interval_seconds=args.gpu_use_interval or GPU_USE_INTERVAL)
        loops = cls(
            watcher,
            queue,
            lifecycle,
            EnergyMeter(service),
            DiskMeter(service, utc_now),
            gpu_use,
            SlurmJobReaper(
                service,
                lambda record: service.containers.remove_by_daemon(
                    record, reason=JOB_GONE_REASON
                ),
                interval_seconds=args.slurm_interval or SLURM_INTERVAL,
            ),
            NetworkUpkeep(
                service.networks,
                NETWORK_UPKEEP_INTERVAL_S,
                lambda: service.containers.release_networks_if_unused(service.networks.emptied()),
            ),
        )
        for loop in loops.all():
            service.status.loops.add(loop.tracker)
        return loops

    def all(
        self,
    ) -> tuple[
        OomWatcher,
        GpuDispatcher,
        LifecycleLoop,
        EnergyMeter,
        DiskMeter,
        GpuUseWatch,
        SlurmJobReaper,
        NetworkUpkeep,
    ]:
        return (
            self.watcher,
            self.queue,
            self.lifecycle,
            self.energy,
            self.disk_meter,
            self.gpu_use,
            self.slurm,
            self.network_upkeep,
        )

    def start(self) -> None:
        for loop in self.all():
            loop.start()

    def stop(self, stop: GracefulStop) -> list[str]:
        """Stop every loop; return the passes that were cut off."""
        unfinished: list[str] = []
        self.energy.stop()
        self.disk_meter.stop()
        self.gpu_use.stop()
        self.slurm.stop()
        self.network_upkeep.stop()
        # A pass under way finishes within what is left of the drain, or is cut off (the
        # next ds01d adopts or rolls back what it began, as after a crash).
        if not self.lifecycle.stop(stop.seconds_left()):
            unfinished.append("a lifecycle pass")
        if not self.queue.stop(stop.seconds_left()):
            unfinished.append("a pass of the GPU queue")
        self.watcher.stop()
        if unfinished:
            logging.getLogger("ds01d").error("stopping: cut off %s", " and ".join(unfinished))
        return unfinished


def _metrics_address(args: argparse.Namespace) -> ListenAddress | None:
    """The exporter's address from the flags or the environment; exits on a bad one."""
    from ds01.metrics.listen import (
        DEFAULT_LISTEN,
        ENV_METRICS_ALLOW_REMOTE,
        ENV_METRICS_LISTEN,
        parse_listen,
    )

    text = args.metrics_listen or os.environ.get(ENV_METRICS_LISTEN) or DEFAULT_LISTEN
    allow_remote = args.metrics_allow_remote or os.environ.get(ENV_METRICS_ALLOW_REMOTE) == "1"
    try:
        return parse_listen(text, allow_remote=allow_remote)
    except Ds01Error as exc:
        sys.exit(f"ds01d: {exc.message}")


def _metrics_container_names(args: argparse.Namespace) -> bool:
    from ds01.metrics.listen import ENV_METRICS_CONTAINER_NAMES

    return bool(args.metrics_container_names) or (
        os.environ.get(ENV_METRICS_CONTAINER_NAMES) == "1"
    )


def _activity_counters(service: Ds01Service) -> ActivityCounters:
    """The exporter's counters, listening to the event log from now on (before ds01d serves,
    so that no event is missed while the exporter itself still loads)."""
    from ds01.metrics.activity import ActivityCounters

    activity = ActivityCounters()
    service.events.subscribe(activity.observe)
    return activity


def _metrics_exporter(
    service: Ds01Service, activity: ActivityCounters, energy: EnergyMeter, *, container_names: bool
) -> MetricsExporter:
    """The exporter of ``service`` (this imports prometheus-client: about a third of
    ds01d's imports)."""
    from ds01.metrics.collector import Ds01Collector
    from ds01.metrics.exporter import MetricsExporter
    from ds01.metrics.snapshot import Snapshotter

    snapshots = Snapshotter(service, activity, energy.totals, container_names=container_names)
    return MetricsExporter(Ds01Collector(snapshots.take))


class _MetricsStart:
    """Builds and starts the exporter in a thread of its own, so that ds01d's socket answers
    while prometheus-client loads. ``start`` and ``stop`` are called from ``main``'s thread;
    ``stop`` waits for the start to end, then stops what it started."""

    def __init__(self, build: Callable[[], MetricsExporter], address: ListenAddress | None) -> None:
        self._build = build
        self._address = address
        self._exporter: MetricsExporter | None = None
        self._thread = threading.Thread(target=self._run, name="ds01d-metrics-start", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        if self._address is None:
            logging.getLogger("ds01d").info("metrics exporter off")
            return
        exporter = self._build()
        _start_exporter(exporter, self._address)
        self._exporter = exporter

    def stop(self) -> None:
        if self._thread.is_alive() or self._thread.ident is not None:
            self._thread.join()
        if self._exporter is not None:
            self._exporter.stop()


def _start_exporter(exporter: MetricsExporter, address: ListenAddress) -> None:
    """Start serving metrics; a failure is logged and ds01d carries on without them."""
    log = logging.getLogger("ds01d")
    try:
        bound = exporter.start(address)
    except OSError as exc:
        log.error("metrics exporter cannot listen on %s: %s; running without it", address, exc)
        return
    log.info("metrics on http://%s/metrics", bound)
