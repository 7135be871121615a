"""A node's ``gres.conf`` lines and its ``slurm.conf`` ``NodeName`` line from its ds01 GPU
inventory. Pure.

The GRES order is ds01's contract with the jobs Slurm starts: one ``gres.conf`` line per
device, in the inventory's order (GPU index, then MIG instances in their GPU's order), so the
device Slurm numbers N on the node (``SLURM_JOB_GPUS``, ``CUDA_VISIBLE_DEVICES``) is the Nth
line, and ``GresLine.index`` → ``GresLine.uuid`` maps it back to the UUID ds01 allocates by.
Each line is preceded by a comment naming that index and UUID.

- a whole GPU is untyped ``gpu``, its ``File=`` the device node (the simulated backend's
  ``device_node``, else ``/dev/nvidia<index>``);
- a MIG slice is typed ``gpu:<profile>`` (``Type=3g.20gb``), ``Count=1`` and no ``File=``:
  its device files are the driver's ``nvidia-caps`` entries, which ds01's inventory does not
  know, so Slurm counts and orders slices but cannot confine a job to one (ds01d, which
  creates the container on the slice's UUID, does);
- reserved devices are left out (ds01 never gives them, so Slurm must not count them).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ds01.model.device import Device, Inventory

#: Where NVIDIA's driver puts whole GPUs' device nodes.
NVIDIA_DEVICE_DIR = "/dev"


@dataclass(frozen=True)
class GresLine:
    """One device as Slurm's GRES: its index on the node, UUID, type (``None``: a whole GPU)
    and device file (``None``: a MIG slice)."""

    index: int
    uuid: str
    type: str | None
    file: str | None

    def text(self, node: str) -> str:
        if self.type is None:
            return f"NodeName={node} Name=gpu File={self.file}"
        return f"NodeName={node} Name=gpu Type={self.type} Count=1"

    def to_dict(self) -> dict[str, object]:
        return {"index": self.index, "uuid": self.uuid, "type": self.type, "file": self.file}


def _line(index: int, device: Device) -> GresLine:
    if device.kind == "mig":
        return GresLine(index, device.uuid, device.profile, None)
    file = device.device_node or f"{NVIDIA_DEVICE_DIR}/nvidia{device.gpu_index}"
    return GresLine(index, device.uuid, None, file)


def gres_lines(inventory: Inventory) -> list[GresLine]:
    """The node's devices as GRES, in ds01's order (see the module docstring)."""
    devices = sorted(
        (d for d in inventory.devices if d.uuid not in inventory.reserved),
        key=lambda d: (d.gpu_index, d.kind == "mig", d.start or 0, d.instance_id or 0),
    )
    return [_line(i, d) for i, d in enumerate(devices)]


def node_gres(lines: list[GresLine]) -> str:
    """The ``Gres=`` value of the node's ``NodeName`` line: ``gpu:N`` for whole GPUs, then
    ``gpu:<profile>:N`` per MIG profile; empty when the node has no device."""
    whole = sum(1 for line in lines if line.type is None)
    typed = Counter(line.type for line in lines if line.type is not None)
    parts = [f"gpu:{whole}"] if whole else []
    parts += [f"gpu:{profile}:{n}" for profile, n in sorted(typed.items())]
    return ",".join(parts)


def gres_conf(node: str, lines: list[GresLine]) -> str:
    """``gres.conf`` for ``node``: a header, then per device its index → UUID comment and its
    line."""
    out = [
        f"# gres.conf of node {node}, written by `ds01 admin slurm gres` from its ds01 inventory.",
        "# One line per device; Slurm's GPU index on this node is the line's position.",
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


__all__ = ["GresLine", "gres_conf", "gres_lines", "node_gres", "node_line"]
