"""Docker label keys: the one place they are spelled.

Labels are the record of what ds01 created and which devices each container holds
(DESIGN.md §5). Only ds01d writes them; nothing a client sends becomes a label verbatim.
"""

from __future__ import annotations

PREFIX = "ds01."

MANAGED = "ds01.managed"
USER = "ds01.user"
UID = "ds01.uid"
GROUP = "ds01.group"
NAME = "ds01.name"
GPUS = "ds01.gpus"  # comma-separated device UUIDs, empty when none
GPU_EQUIVALENTS = "ds01.gpu_equivalents"  # exact fraction "3/7", or "0"
CREATED_AT = "ds01.created_at"  # ISO 8601 UTC
INTERFACE = "ds01.interface"  # cli | deploy | proxy | job
IMAGE = "ds01.image"  # what the user asked for (registry name or reference)
REQUEST_ID = "ds01.request_id"  # ties a container to the daemon's create intent
MEMORY_BYTES = "ds01.memory_bytes"  # the container's memory limit in bytes, "" = unlimited
CPUS = "ds01.cpus"  # the container's CPU limit (CPUs, e.g. "0.5"), "" = unlimited
DISK_BYTES = "ds01.disk_bytes"  # the container's disk limit in bytes, "" = unlimited
KEPT_IMAGE = "ds01.kept_image"  # the commit it was re-created from (devices changed), if any
PORTS = "ds01.ports"  # published ports "container:host,…"; host empty = chosen by Docker

# On an image: the user it was built for. Such an image is allowed for that user even when
# images.yaml does not list it (only root can label images on this host).
IMAGE_OWNER = "ds01.image.owner"
# On an image: the container port its JupyterLab listens on. ds01 publishes that port on
# 127.0.0.1 and gives each container a token of its own (env JUPYTER_TOKEN, which Jupyter
# Server reads); containers inherit the label from their image.
JUPYTER_PORT = "ds01.jupyter.port"
JUPYTER_TOKEN = "ds01.jupyter.token"  # noqa: S105 - a label key; on a container: its token
JUPYTER_TOKEN_ENV = "JUPYTER_TOKEN"  # noqa: S105 - the variable's name

# On a network: ds01's network of one user's containers (value ``NETWORK_USER``), with ``UID``
# and the ds01d instance that created it (an instance removes only what it created).
NETWORK = "ds01.network"
NETWORK_USER = "user"
INSTANCE = "ds01.instance"

# AIME ML Containers compatibility (DESIGN.md §2.8).
AIME_MLC = "aime.mlc"
AIME_NAME = "aime.mlc.NAME"
AIME_USER = "aime.mlc.USER"
AIME_VERSION = "aime.mlc.MLC_VERSION"
AIME_WORK_MOUNT = "aime.mlc.WORK_MOUNT"
AIME_DATA_MOUNT = "aime.mlc.DATA_MOUNT"
AIME_MODELS_MOUNT = "aime.mlc.MODELS_MOUNT"
AIME_FRAMEWORK = "aime.mlc.FRAMEWORK"
AIME_GPUS = "aime.mlc.GPUS"
AIME_MLC_VERSION_VALUE = "4"

MANAGED_FILTER = {"label": f"{MANAGED}=true"}

CONTAINER_NAME_SEPARATOR = "._."
#: Suffix of a container's old self while ds01 re-creates it on other devices.
REPLACED_SUFFIX = ".replaced"


def container_name(name: str, uid: int) -> str:
    """Docker name of a user's container: ``{name}._.{uid}`` (AIME convention)."""
    return f"{name}{CONTAINER_NAME_SEPARATOR}{uid}"
