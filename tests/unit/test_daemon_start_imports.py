"""What ds01d loads before its socket answers: not the exporter's dependencies.

``ds01.daemon.run`` imports prometheus-client (through ``ds01.metrics.collector`` and
``exporter``) in the exporter's own thread, once the socket is served; everything the start
imports before that must not pull it in at module level, nor the CLI, the dashboard or the
JupyterHub spawner. Checked in a fresh interpreter.
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
)


def test_the_start_loads_nothing_of_the_exporter_before_it_serves() -> None:
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
