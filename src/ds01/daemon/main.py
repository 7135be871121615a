"""``ds01d``: start the daemon (as root) on the configured socket."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

import click

from ds01.errors import Ds01Error
from ds01.paths import DaemonPaths


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config-dir", envvar="DS01_CONFIG_DIR", help="Configuration directory [/etc/ds01].")
@click.option("--state-dir", envvar="DS01_STATE_DIR", help="State directory [/var/lib/ds01].")
@click.option("--log-dir", envvar="DS01_LOG_DIR", help="Log directory [/var/log/ds01].")
@click.option(
    "--socket", "socket_path", envvar="DS01_SOCKET", help="API socket [/run/ds01/ds01.sock]."
)
@click.option("--log-level", default="INFO", show_default=True, help="Daemon log level.")
def main(
    config_dir: str | None,
    state_dir: str | None,
    log_dir: str | None,
    socket_path: str | None,
    log_level: str,
) -> None:
    """Run ds01d, the only process that talks to Docker on behalf of users."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if os.geteuid() != 0:
        raise click.ClickException("ds01d must run as root (it alone holds Docker access).")
    paths = DaemonPaths.resolve(config_dir, state_dir, log_dir, socket_path)
    # Imported here so that `ds01d --help` stays fast.
    from ds01.daemon.server import Ds01HttpServer
    from ds01.daemon.service import Ds01Service
    from ds01.daemon.state import StateStore
    from ds01.events.log import EventLog
    from ds01.runtime.docker import DockerRuntime

    for directory, mode in ((paths.state_dir, 0o700), (paths.log_dir, 0o750)):
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, mode)
    try:
        service = Ds01Service(
            paths=paths,
            runtime=DockerRuntime.from_env(),
            store=StateStore(paths.state_db),
            events=EventLog(paths.events_file),
        )
        removed = service.reconcile()
    except Ds01Error as exc:
        raise click.ClickException(exc.message) from exc
    log = logging.getLogger("ds01d")
    if removed:
        log.warning("removed %d half-made container(s): %s", len(removed), ", ".join(removed))
    server = Ds01HttpServer(paths.socket, service)

    def shutdown(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGHUP, lambda signum, frame: service.config())
    log.info("listening on %s (config %s)", paths.socket, paths.config_dir)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        paths.socket.unlink(missing_ok=True)
        service.store.close()
    sys.exit(0)
