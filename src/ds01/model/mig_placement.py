"""Where MIG instances may sit on a GPU: the placement tables of NVIDIA's MIG user guide.

An A100 or H100 has 8 memory slices and 7 compute slices. A GPU instance of a profile takes
``size`` consecutive memory slices beginning at one of the profile's ``starts``; no two
instances share a memory slice. Placement, not the count of compute slices, decides what
fits: on an A100-40GB two ``3g.20gb`` take memory slices 0-3 and 4-7, so no ``1g.5gb`` fits
beside them although only 6 of the 7 compute slices are used.

These are public facts (``nvidia-smi mig -lgipp`` prints them); the NVML backend reads them
from the driver where it can and uses these tables where it cannot.
"""

from __future__ import annotations

from dataclasses import dataclass

MEMORY_SLICES = 8
"""Memory slices of an A100 or H100 (a placement's ``start + size`` is at most this)."""

COMPUTE_SLICES = 7
"""Compute slices of an A100 or H100."""


@dataclass(frozen=True)
class MigProfileShape:
    """One GPU-instance profile's footprint.

    Attributes:
        name: ``3g.20gb``.
        compute_slices: the ``3`` of ``3g``.
        size: memory slices an instance takes.
        starts: the memory slices an instance may begin at.
    """

    name: str
    compute_slices: int
    size: int
    starts: tuple[int, ...]

    def span(self, start: int) -> range:
        """The memory slices an instance beginning at ``start`` takes."""
        return range(start, start + self.size)


@dataclass(frozen=True)
class MigPlacementTable:
    """A GPU's MIG profiles and their placements.

    Attributes:
        memory_slices: memory slices of the GPU.
        compute_slices: compute slices of the GPU.
        profiles: every plain profile the GPU offers, largest first.
    """

    memory_slices: int
    compute_slices: int
    profiles: tuple[MigProfileShape, ...]

    def shape(self, name: str) -> MigProfileShape | None:
        """The profile called ``name``, or ``None`` if the GPU has none."""
        return next((p for p in self.profiles if p.name == name), None)


def _a100_h100_table(memory_unit_gb: int) -> MigPlacementTable:
    """The table shared by A100 and H100 boards; ``memory_unit_gb`` is the memory of one
    memory slice in the profile names (5 on a 40 GB board, 10 on an 80 GB one)."""
    unit = memory_unit_gb
    return MigPlacementTable(
        memory_slices=MEMORY_SLICES,
        compute_slices=COMPUTE_SLICES,
        profiles=(
            MigProfileShape(f"7g.{8 * unit}gb", 7, 8, (0,)),
            MigProfileShape(f"4g.{4 * unit}gb", 4, 4, (0,)),
            MigProfileShape(f"3g.{4 * unit}gb", 3, 4, (0, 4)),
            MigProfileShape(f"2g.{2 * unit}gb", 2, 2, (0, 2, 4)),
            MigProfileShape(f"1g.{2 * unit}gb", 1, 2, (0, 2, 4, 6)),
            MigProfileShape(f"1g.{unit}gb", 1, 1, (0, 1, 2, 3, 4, 5, 6)),
        ),
    )


A100_40GB_TABLE = _a100_h100_table(5)
"""A100-SXM4-40GB and A100-PCIE-40GB."""

A100_H100_80GB_TABLE = _a100_h100_table(10)
"""A100 80GB (SXM4 and PCIe) and H100 80GB (SXM5 and PCIe)."""

_GIB = 1024


def known_placement_table(model: str, memory_mib: int) -> MigPlacementTable | None:
    """The placement table of a board by its NVML name and memory, ``None`` for a board
    these tables do not describe (A30, H100 NVL 94 GB, H200, …: ask the driver)."""
    if "A100" in model and memory_mib <= 48 * _GIB:
        return A100_40GB_TABLE
    if ("A100" in model or "H100" in model) and 72 * _GIB <= memory_mib <= 88 * _GIB:
        return A100_H100_80GB_TABLE
    return None


__all__ = [
    "A100_40GB_TABLE",
    "A100_H100_80GB_TABLE",
    "COMPUTE_SLICES",
    "MEMORY_SLICES",
    "MigPlacementTable",
    "MigProfileShape",
    "known_placement_table",
]
