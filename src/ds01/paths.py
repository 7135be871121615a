"""Default file locations and the environment variables that override them.

Plain strings and ``os`` only: the CLI imports this on every command, so it must cost
nothing to import. ``ds01.daemon.paths.DaemonPaths`` is the daemon's resolved set.
"""

from __future__ import annotations

import os

DEFAULT_CONFIG_DIR = "/etc/ds01"
DEFAULT_STATE_DIR = "/var/lib/ds01"
DEFAULT_LOG_DIR = "/var/log/ds01"
DEFAULT_SOCKET = "/run/ds01/ds01.sock"

ENV_CONFIG_DIR = "DS01_CONFIG_DIR"
ENV_STATE_DIR = "DS01_STATE_DIR"
ENV_LOG_DIR = "DS01_LOG_DIR"
ENV_SOCKET = "DS01_SOCKET"
#: Cluster mode: the Slurm node name of this host's ds01d (default: the host's short name).
ENV_SLURM_NODE = "DS01_SLURM_NODE"
#: ``slurm`` on a Slurm cluster's login node: ``container-list``, ``ds01 queue`` and
#: ``gpu-status`` show the whole cluster from Slurm's data (docs/cluster.md), no ds01d needed.
ENV_CLUSTER = "DS01_CLUSTER"
#: What Slurm sets in a job's environment: the node the job runs on.
ENV_SLURMD_NODENAME = "SLURMD_NODENAME"
#: In a socket path, the Slurm node's name (as ``%n`` in slurm.conf): several ds01d on one
#: host, one per node (the test cluster).
NODE_PLACEHOLDER = "%n"

RESOURCE_LIMITS_FILE = "resource-limits.yaml"
GPU_CONFIG_FILE = "gpu-config.yaml"
IMAGES_FILE = "images.yaml"
EVENTS_FILE = "events.jsonl"
STATE_DB_FILE = "ds01.db"
#: In the state directory: what the simulated GPU backend reports (tests and demos write it).
SIMULATED_TELEMETRY_FILE = "simulated-telemetry.json"
#: In the state directory: the simulated GPUs' MIG layouts as `ds01 admin mig apply` left them.
SIMULATED_MIG_FILE = "simulated-mig.json"
#: In the state directory: the processes the simulated GPUs report (tests write it).
SIMULATED_PROCESS_FILE = "simulated-processes.json"


#: The Docker API door's socket: this name next to the API socket, unless named.
DOCKER_SOCKET_NAME = "docker.sock"
ENV_DOCKER_SOCKET = "DS01_DOCKER_SOCKET"
#: The value of ``--docker-socket`` (or ``DS01_DOCKER_SOCKET``) that turns the door off.
DOCKER_SOCKET_OFF = "off"


def pick(flag: str | None, env: str, default: str) -> str:
    """A path from a command-line flag, else the environment variable ``env``, else ``default``."""
    return flag or os.environ.get(env) or default


def socket_path(flag: str | None = None) -> str:
    """The API socket from ``flag``, else ``DS01_SOCKET``, else the default; a ``%n`` in it
    is this host's Slurm node name (``slurm_node``)."""
    path = pick(flag, ENV_SOCKET, DEFAULT_SOCKET)
    if NODE_PLACEHOLDER in path:
        path = path.replace(NODE_PLACEHOLDER, slurm_node())
    return path


def slurm_node(flag: str | None = None) -> str:
    """This host's Slurm node name: ``flag``, else Slurm's own word inside a job
    (``SLURMD_NODENAME``), else ``DS01_SLURM_NODE``, else the host's short name."""
    return (
        flag
        or os.environ.get(ENV_SLURMD_NODENAME)
        or os.environ.get(ENV_SLURM_NODE)
        or os.uname().nodename.split(".")[0]
    )


def docker_socket_path(flag: str | None, api_socket: str) -> str | None:
    """The Docker API door's socket from ``flag``, else ``DS01_DOCKER_SOCKET``, else
    ``docker.sock`` next to ``api_socket``; ``None`` when set to ``off``."""
    text = flag or os.environ.get(ENV_DOCKER_SOCKET) or ""
    if text.lower() == DOCKER_SOCKET_OFF:
        return None
    return text or os.path.join(os.path.dirname(api_socket), DOCKER_SOCKET_NAME)


def config_dir(flag: str | None = None) -> str:
    return pick(flag, ENV_CONFIG_DIR, DEFAULT_CONFIG_DIR)
