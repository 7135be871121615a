"""What ds01d loads before its socket answers: not the exporter's dependencies, nor the
handlers of the routes a first list does not need.

``ds01.daemon.run`` imports prometheus-client (through ``ds01.metrics.collector`` and
``exporter``) in the exporter's own thread, once the socket is served; everything the start
imports before that must not pull it in at module level, nor the CLI, the dashboard or the
JupyterHub spawner, nor docker-py (with requests and urllib3): the start reads Docker
through ``ds01.runtime.engine_socket``, and docker-py loads on first other use. The server
loads the handler modules of the admin, queue, image, event, report and dashboard routes
when a route first calls them (``ds01.daemon.deferred``).
Checked in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys

#: What ``ds01.daemon.run`` imports before ``serve_forever``: its own module, the server
#: and the service, the loops, the Docker API door, the backups, and the exporter's address
#: and counters (which stay light).
BEFORE_SERVING = (
    "ds01.daemon.main",
    "ds01.daemon.run",
    "ds01.daemon.ledger",
    "ds01.daemon.server",
    "ds01.daemon.service",
    "ds01.daemon.state_start",
    "ds01.daemon.state_backup",
    "ds01.daemon.docker_api",
    "ds01.daemon.dispatcher",
    "ds01.daemon.lifecycle",
    "ds01.daemon.sampler",
    "ds01.daemon.oom",
    "ds01.daemon.energy",
    "ds01.daemon.networks",
    "ds01.daemon.disk",
    "ds01.daemon.gpu_use",
    "ds01.daemon.slurm_jobs",
    "ds01.metrics.listen",
    "ds01.metrics.activity",
)
#: What loads only once the socket answers, or never in ds01d.
AFTER_SERVING = (
    "prometheus_client",
    "ds01.metrics.collector",
    "ds01.metrics.exporter",
    "ds01.metrics.snapshot",
    "ds01.cli",
    "ds01.tui",
    "ds01.jupyterhub",
    "textual",
    "docker",
    "requests",
    "urllib3",
    # The handlers the server loads on first use.
    "ds01.daemon.admin",
    "ds01.daemon.doctor",
    "ds01.daemon.events_view",
    "ds01.daemon.exemptions",
    "ds01.daemon.gpu_check",
    "ds01.daemon.logs_view",
    "ds01.daemon.overview",
    "ds01.daemon.queue_view",
    "ds01.daemon.report_view",
    "ds01.daemon.stats_view",
    "ds01.config.edit",
    # The Docker API door's handlers and decisions, loaded on the door's first request.
    "ds01.daemon.door_requests",
    "ds01.daemon.door_exchange",
    "ds01.daemon.door_containers",
    "ds01.daemon.door_images",
    "ds01.core.docker_api",
    # The lifecycle's activity report, loaded with its first pass.
    "ds01.core.report",
    # The door's archive rules (a copy in or out, a load) and the image rules (a commit).
    "ds01.runtime.archive_rewrite",
    "ds01.core.docker_archive",
    "ds01.core.docker_load",
    "ds01.core.image_build",
    "ds01.core.dockerfile_bases",
)


def test_the_start_loads_neither_the_exporter_nor_the_deferred_handlers_before_it_serves() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {BEFORE_SERVING!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {AFTER_SERVING!r}\n"
        f"             or m.startswith({AFTER_SERVING!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert ast.literal_eval(result.stdout.strip()) == []
