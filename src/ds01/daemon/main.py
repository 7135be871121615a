"""``ds01d``: start the daemon (as root) on the configured socket.

This module holds only the command line, so that ``ds01d --help`` loads nothing else; the
daemon itself is ``ds01.daemon.run``. SIGTERM or SIGINT stops it gracefully: no new request
runs, the accepted ones finish (at most ``--drain-timeout`` seconds), the loops end, the
audit log is closed; the exit status is 0 when every client got its request's outcome, 1
when the drain was cut short (its deadline, or a second signal) and some client was told
that its outcome is unknown.
"""

from __future__ import annotations

import argparse

from ds01 import __version__

#: Seconds the requests accepted before a SIGTERM get to finish: a create or a stop inside
#: Docker takes seconds (a stop waits up to 10 s for the container's processes).
DEFAULT_DRAIN_SECONDS = 30.0


def build_parser() -> argparse.ArgumentParser:
    """ds01d's command line; the options appear in ``--help`` in the order added here."""
    parser = argparse.ArgumentParser(
        prog="ds01d",
        description="Run ds01d, the only process that talks to Docker on behalf of users.",
    )
    _add_paths(parser)
    _add_intervals(parser)
    _add_metrics(parser)
    _add_audit(parser)
    _add_shutdown_and_cluster(parser)
    parser.add_argument("--log-level", default="INFO", help="daemon log level [INFO]")
    parser.add_argument("--version", action="version", version=f"ds01d {__version__}")
    return parser


def _add_paths(parser: argparse.ArgumentParser) -> None:
    """Where ds01d reads, writes and listens."""
    parser.add_argument(
        "--config-dir", help="configuration directory [$DS01_CONFIG_DIR, /etc/ds01]"
    )
    parser.add_argument("--state-dir", help="state directory [$DS01_STATE_DIR, /var/lib/ds01]")
    parser.add_argument("--log-dir", help="log directory [$DS01_LOG_DIR, /var/log/ds01]")
    parser.add_argument("--socket", help="API socket [$DS01_SOCKET, /run/ds01/ds01.sock]")
    parser.add_argument(
        "--docker-socket",
        metavar="PATH",
        help="the Docker Engine API socket for users' own docker tools, or 'off' "
        "[$DS01_DOCKER_SOCKET, docker.sock next to the API socket: /run/ds01/docker.sock]",
    )
    parser.add_argument(
        "--cgroup-root", help="where the cgroup hierarchies are [$DS01_CGROUP_ROOT, /sys/fs/cgroup]"
    )


def _add_intervals(parser: argparse.ArgumentParser) -> None:
    """How often the daemon's loops look again."""
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
        "--gpu-use-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds between two looks for processes on the GPUs outside ds01's "
        "allocation [15]",
    )


def _add_metrics(parser: argparse.ArgumentParser) -> None:
    """The Prometheus exporter: where it listens and what it names."""
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


def _add_audit(parser: argparse.ArgumentParser) -> None:
    """The audit log's rotation and its suppression of repeated refusals."""
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


def _add_shutdown_and_cluster(parser: argparse.ArgumentParser) -> None:
    """The drain on SIGTERM and cluster mode's Slurm options."""
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=DEFAULT_DRAIN_SECONDS,
        metavar="SECONDS",
        help="on SIGTERM, seconds the requests already accepted get to finish before their "
        f"clients are told the outcome is unknown [{DEFAULT_DRAIN_SECONDS:g}]",
    )
    parser.add_argument(
        "--slurm-node",
        metavar="NAME",
        help="cluster mode (cluster: slurm): this node's Slurm name [$DS01_SLURM_NODE, the "
        "host's short name]",
    )
    parser.add_argument(
        "--slurm-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="cluster mode: seconds between two looks for containers whose Slurm job ended [10]",
    )


def _size(text: str) -> int:
    """A size flag (``64M``, ``1048576``) in bytes."""
    from ds01.model.units import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``ds01d``."""
    args = build_parser().parse_args(argv)
    from ds01.daemon.run import run  # the daemon, once the command line is understood

    run(args)
