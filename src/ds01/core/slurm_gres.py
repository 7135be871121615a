"""A node's ``gres.conf`` lines and its ``slurm.conf`` ``NodeName`` line from its ds01 GPU
inventory. Pure.

The GRES order is ds01's contract with the jobs Slurm starts: one ``gres.conf`` line per
device, in the inventory's order (GPU index, then MIG instances in their GPU's order), each
preceded by a comment ``# index N: UUID``. N is the number Slurm 22.05 gives the device on
the node (``SLURM_JOB_GPUS``): not the line's position but the number that ends its first
device file (``/dev/nvidia3`` is 3, whatever line it is on; ``slurmd -G`` shows it, and
tests/e2e/test_slurm_sync.py checks the two agree). ``GresLine.index`` → ``GresLine.uuid``
maps a job's devices back to the UUIDs ds01 allocates by. That number is unique for whole
GPUs only: MIG slices share their GPU's device node, so a slice's index names its GPU and
the slice itself is told apart by its type (``None`` when the file ends in no number).

- a whole GPU is untyped ``gpu``, its ``File=`` the device node (the simulated backend's
  ``device_node``, else ``/dev/nvidia<index>``); on a node that also has MIG slices it is
  typed ``gpu:full`` (``FULL_GPU_TYPE``): Slurm refuses a node whose GPUs are partly typed
  ("Some gpu GRES in slurm.conf have a type while others do not"). An untyped request
  (``--gres=gpu:1``) takes any type, so users ask for ``gpu:full:N`` there;
- a MIG slice is typed ``gpu:<profile>`` (``Type=3g.20gb``) with ``MultipleFiles=`` its
  GPU's device node and its two ``nvidia-caps`` device files (GPU instance and compute
  instance ``0``, ds01's one per slice), found in the driver's
  ``/proc/driver/nvidia-caps/mig-minors`` (``parse_mig_minors``, ``mig_cap_files``). Slurm
  wants a file on every record and refuses one file on two records; a slice whose cap files
  are unknown (the simulated backend has none) is refused with ``InvalidInput``;
- reserved devices are left out (ds01 never gives them, so Slurm must not count them).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ds01.errors import InvalidInput
from ds01.model.device import Device, Inventory

#: Where NVIDIA's driver puts whole GPUs' device nodes.
NVIDIA_DEVICE_DIR = "/dev"
#: The GRES type of a whole GPU on a node that also has MIG slices.
FULL_GPU_TYPE = "full"
#: Where the driver lists the minor numbers of MIG instances' capability devices.
MIG_MINORS_FILE = "/proc/driver/nvidia-caps/mig-minors"
#: Where those capability devices are.
NVIDIA_CAPS_DIR = "/dev/nvidia-caps"
_TRAILING_NUMBER_RE = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class GresLine:
    """One device as Slurm's GRES: its index on the node, UUID, type (``None``: untyped, a
    whole GPU on a node without MIG slices) and device files (one for a whole GPU)."""

    index: int | None
    uuid: str
    type: str | None
    files: tuple[str, ...]

    def text(self, node: str) -> str:
        typed = f" Type={self.type}" if self.type else ""
        key = "File" if len(self.files) == 1 else "MultipleFiles"
        return f"NodeName={node} Name=gpu{typed} {key}={','.join(self.files)}"

    def to_dict(self) -> dict[str, object]:
        return {"index": self.index, "uuid": self.uuid, "type": self.type, "files": self.files}


def parse_mig_minors(text: str) -> dict[str, int]:
    """``/proc/driver/nvidia-caps/mig-minors`` (``gpu0/gi1/access 12`` per line): path →
    minor number."""
    minors: dict[str, int] = {}
    for line in text.splitlines():
        path, _, minor = line.strip().partition(" ")
        if minor.strip().isdigit():
            minors[path] = int(minor)
    return minors


def mig_cap_files(devices: Sequence[Device], minors: Mapping[str, int]) -> dict[str, list[str]]:
    """MIG slice UUID → its capability device files (GPU instance, then compute instance 0),
    for the slices ``minors`` (``parse_mig_minors``) lists."""
    found: dict[str, list[str]] = {}
    for device in devices:
        if device.kind != "mig" or device.instance_id is None:
            continue
        base = f"gpu{device.gpu_index}/gi{device.instance_id}"
        keys = (f"{base}/access", f"{base}/ci0/access")
        if all(key in minors for key in keys):
            found[device.uuid] = [f"{NVIDIA_CAPS_DIR}/nvidia-cap{minors[key]}" for key in keys]
    return found


def slurm_index(path: str) -> int | None:
    """The number Slurm gives a GRES device whose (first) file is ``path``: the digits that
    end it; ``None`` when there are none."""
    match = _TRAILING_NUMBER_RE.search(path)
    return int(match.group(1)) if match else None


def _gpu_node(device: Device) -> str:
    return device.device_node or f"{NVIDIA_DEVICE_DIR}/nvidia{device.gpu_index}"


def gres_lines(
    inventory: Inventory, mig_files: Mapping[str, Sequence[str]] | None = None
) -> list[GresLine]:
    """The node's devices as GRES, in ds01's order (see the module docstring); ``mig_files``:
    MIG slice UUID → its capability device files (``mig_cap_files``).

    Raises:
        InvalidInput: a MIG slice whose capability files are not in ``mig_files``.
    """
    devices = sorted(
        (d for d in inventory.devices if d.uuid not in inventory.reserved),
        key=lambda d: (d.gpu_index, d.kind == "mig", d.start or 0, d.instance_id or 0),
    )
    caps = mig_files or {}
    unknown = [d.label for d in devices if d.kind == "mig" and d.uuid not in caps]
    if unknown:
        raise InvalidInput(
            f"MIG slice(s) {', '.join(unknown)}: their nvidia-caps device files are not in "
            f"{MIG_MINORS_FILE}, and Slurm needs them to count a slice (a simulated MIG "
            "slice has none)."
        )
    typed = any(d.kind == "mig" for d in devices)
    lines = []
    for device in devices:
        node = _gpu_node(device)
        if device.kind == "mig":
            files = (node, *caps[device.uuid])
            lines.append(GresLine(slurm_index(node), device.uuid, device.profile, files))
        else:
            kind = FULL_GPU_TYPE if typed else None
            lines.append(GresLine(slurm_index(node), device.uuid, kind, (node,)))
    return lines


def node_gres(lines: list[GresLine]) -> str:
    """The ``Gres=`` value of the node's ``NodeName`` line: ``gpu:N`` for untyped whole GPUs,
    ``gpu:<type>:N`` per type; empty when the node has no device."""
    untyped = sum(1 for line in lines if line.type is None)
    typed = Counter(line.type for line in lines if line.type is not None)
    parts = [f"gpu:{untyped}"] if untyped else []
    parts += [f"gpu:{kind}:{n}" for kind, n in sorted(typed.items())]
    return ",".join(parts)


def gres_conf(node: str, lines: list[GresLine]) -> str:
    """``gres.conf`` for ``node``: a header, then per device its index → UUID comment and its
    line."""
    out = [
        f"# gres.conf of node {node}, written by `ds01 admin slurm gres` from its ds01 inventory.",
        "# One line per device; `index N` is the number Slurm gives it (SLURM_JOB_GPUS).",
    ]
    for line in lines:
        out.append(f"# index {line.index}: {line.uuid}")
        out.append(line.text(node))
    return "\n".join(out) + "\n"


def node_line(node: str, lines: list[GresLine]) -> str:
    """The GRES part of ``node``'s ``slurm.conf`` line (CPUs, memory and the rest are the
    admin's): ``NodeName=<node> Gres=...``."""
    gres = node_gres(lines)
    return f"NodeName={node} Gres={gres}" if gres else f"NodeName={node}"


__all__ = [
    "FULL_GPU_TYPE",
    "MIG_MINORS_FILE",
    "GresLine",
    "gres_conf",
    "gres_lines",
    "mig_cap_files",
    "node_gres",
    "node_line",
    "parse_mig_minors",
    "slurm_index",
]
