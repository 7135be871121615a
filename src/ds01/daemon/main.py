"""``ds01d``: start the daemon (as root) on the configured socket."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from ds01 import __version__
from ds01.errors import Ds01Error

if TYPE_CHECKING:
    from ds01.daemon.energy import EnergyMeter
    from ds01.daemon.service import Ds01Service
    from ds01.metrics.exporter import ListenAddress, MetricsExporter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ds01d",
        description="Run ds01d, the only process that talks to Docker on behalf of users.",
    )
    parser.add_argument(
        "--config-dir", help="configuration directory [$DS01_CONFIG_DIR, /etc/ds01]"
    )
    parser.add_argument("--state-dir", help="state directory [$DS01_STATE_DIR, /var/lib/ds01]")
    parser.add_argument("--log-dir", help="log directory [$DS01_LOG_DIR, /var/log/ds01]")
    parser.add_argument("--socket", help="API socket [$DS01_SOCKET, /run/ds01/ds01.sock]")
    parser.add_argument(
        "--cgroup-root", help="where the cgroup hierarchies are [$DS01_CGROUP_ROOT, /sys/fs/cgroup]"
    )
    parser.add_argument(
        "--oom-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds between two scans for OOM kills [2]",
    )
    parser.add_argument(
        "--queue-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds between two passes of the GPU queue when nothing changes [5]",
    )
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="Prometheus exporter address, or 'off' [$DS01_METRICS_LISTEN, 127.0.0.1:9101]",
    )
    parser.add_argument(
        "--metrics-allow-remote",
        action="store_true",
        help="allow a non-loopback exporter address (the metrics name users; no "
        "authentication) [$DS01_METRICS_ALLOW_REMOTE=1]",
    )
    parser.add_argument(
        "--metrics-container-names",
        action="store_true",
        help="name the container holding each device in the metrics (every local user can "
        "read them; off: users and devices only) [$DS01_METRICS_CONTAINER_NAMES=1]",
    )
    parser.add_argument(
        "--audit-max-bytes",
        type=_size,
        default=None,
        metavar="SIZE",
        help="rotate the audit log when events.jsonl reaches this size, e.g. 64M; 0 = by "
        "age only [64M]",
    )
    parser.add_argument(
        "--audit-keep-files",
        type=int,
        default=None,
        metavar="N",
        help="rotated audit log files to keep [4]",
    )
    parser.add_argument(
        "--audit-refusal-window",
        type=float,
        default=None,
        metavar="SECONDS",
        help="window in which a user's refusals beyond 10 of one action (30 in all) are "
        "counted in one audit.suppressed event instead of written [60]",
    )
    parser.add_argument("--log-level", default="INFO", help="daemon log level [INFO]")
    parser.add_argument("--version", action="version", version=f"ds01d {__version__}")
    return parser


def _size(text: str) -> int:
    """A size flag (``64M``, ``1048576``) in bytes."""
    from ds01.core.units import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if os.geteuid() != 0:
        sys.exit("ds01d: must run as root (it alone holds Docker access).")
    metrics_address = _metrics_address(args)
    # Imported here so that `ds01d --help` stays fast.
    from ds01.daemon import dispatcher
    from ds01.daemon.disk import DiskMeter, detect_storage
    from ds01.daemon.energy import EnergyMeter
    from ds01.daemon.lifecycle import LifecycleLoop
    from ds01.daemon.networks import network_name
    from ds01.daemon.observed import ObservedContainers
    from ds01.daemon.oom import DEFAULT_INTERVAL_SECONDS, OomWatcher
    from ds01.daemon.paths import DaemonPaths
    from ds01.daemon.sampler import Sampler
    from ds01.daemon.server import Ds01HttpServer, terminals_of
    from ds01.daemon.service import Ds01Service
    from ds01.daemon.state import StateStore
    from ds01.events.log import EventLog, utc_now
    from ds01.gpu.backend import make_backend
    from ds01.runtime.cgroups import DEFAULT_ROOT, CgroupManager
    from ds01.runtime.docker import DockerRuntime

    paths = DaemonPaths.resolve(args.config_dir, args.state_dir, args.log_dir, args.socket)
    for directory, mode in ((paths.state_dir, 0o700), (paths.log_dir, 0o750)):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(mode)
    cgroup_root = Path(args.cgroup_root or os.environ.get("DS01_CGROUP_ROOT") or DEFAULT_ROOT)
    try:
        events = EventLog(paths.events_file, **_event_log_options(args))
    except ValueError as exc:
        sys.exit(f"ds01d: {exc}")
    try:
        runtime = DockerRuntime.from_env()
        service = Ds01Service(
            paths=paths,
            runtime=runtime,
            store=StateStore(paths.state_db),
            events=events,
            cgroups=CgroupManager(cgroup_root, runtime.engine_info().cgroup_driver),
            # Simulated GPUs read their utilisation from a file in the state directory, and
            # keep their MIG layouts there once `ds01 admin mig apply` changed them.
            backend_factory=lambda config: make_backend(
                config.gpus,
                simulated_telemetry_file=paths.simulated_telemetry_file,
                simulated_mig_file=paths.simulated_mig_file,
            ),
        )
        service.share_log_with_admins()
        service.storage = detect_storage(runtime)
        removed = service.reconcile()
        emptied = service.reconcile_cgroups()
        # The firewall before anything is served; a failure is logged and fails closed.
        records = service.runtime.list_managed()
        service.networks.reconcile(r.uid for r in records)
    except Ds01Error as exc:
        sys.exit(f"ds01d: {exc.message}")
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
    watcher = OomWatcher(
        service.runtime,
        service.cgroups,
        service.store,
        service.events,
        service.engine.cgroup_driver,
        interval_seconds=args.oom_interval or DEFAULT_INTERVAL_SECONDS,
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
    service.lifecycle_pass = lambda dry_run: lifecycle.run_pass(dry_run=dry_run)
    energy = EnergyMeter(service)
    disk_meter = DiskMeter(service, utc_now)
    exporter = _metrics_exporter(service, energy, container_names=_metrics_container_names(args))
    if (
        metrics_address is not None
    ):  # scrapes reuse one container list until Docker reports a change
        service.observed = ObservedContainers(service.runtime)
    server = Ds01HttpServer(paths.socket, service)

    def shutdown(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGHUP, lambda signum, frame: service.config())
    for loop in (watcher, queue, lifecycle, energy, disk_meter):
        service.loops.add(loop.tracker)
    log.info("listening on %s (config %s)", paths.socket, paths.config_dir)
    watcher.start()
    queue.start()
    lifecycle.start()
    energy.start()
    disk_meter.start()
    if service.observed is not None:
        service.observed.start()
    _start_exporter(exporter, metrics_address)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        exporter.stop()
        if service.observed is not None:
            service.observed.stop()
        energy.stop()
        disk_meter.stop()
        lifecycle.stop()
        queue.stop()
        watcher.stop()
        server.server_close()
        paths.socket.unlink(missing_ok=True)
        service.events.close()
        service.store.close()


def _metrics_address(args: argparse.Namespace) -> ListenAddress | None:
    """The exporter's address from the flags or the environment; exits on a bad one."""
    from ds01.metrics.exporter import (
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
    from ds01.metrics.exporter import ENV_METRICS_CONTAINER_NAMES

    return bool(args.metrics_container_names) or (
        os.environ.get(ENV_METRICS_CONTAINER_NAMES) == "1"
    )


def _metrics_exporter(
    service: Ds01Service, energy: EnergyMeter, *, container_names: bool
) -> MetricsExporter:
    """The exporter of ``service``: its counters listen to the event log from now on."""
    from ds01.metrics.activity import ActivityCounters
    from ds01.metrics.collector import Ds01Collector
    from ds01.metrics.exporter import MetricsExporter
    from ds01.metrics.snapshot import Snapshotter

    activity = ActivityCounters()
    service.events.subscribe(activity.observe)
    snapshots = Snapshotter(service, activity, energy.totals, container_names=container_names)
    return MetricsExporter(Ds01Collector(snapshots.take))


def _start_exporter(exporter: MetricsExporter, address: ListenAddress | None) -> None:
    """Start serving metrics; a failure is logged and ds01d carries on without them."""
    log = logging.getLogger("ds01d")
    if address is None:
        log.info("metrics exporter off")
        return
    try:
        bound = exporter.start(address)
    except OSError as exc:
        log.error("metrics exporter cannot listen on %s: %s; running without it", address, exc)
        return
    log.info("metrics on http://%s/metrics", bound)
