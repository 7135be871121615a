"""Where MIG instances go on a GPU: a pure search over its placement table.

``place`` answers "can these instances be made on this GPU, beside those already there, and
where": it tries every start of every wanted instance (largest first, lowest start first:
at most a few hundred steps on an 8-slice GPU) and returns a start for each, or the first
instance that does not fit and why. ``ds01 admin mig plan`` uses it with nothing occupied
(``apply`` destroys every instance first); making one instance beside others in use is the
same call with those others as ``occupied``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ds01.model.mig_placement import MigPlacementTable, MigProfileShape


@dataclass(frozen=True)
class PlacedInstance:
    """An instance of ``profile`` on memory slices ``start`` to ``start + size - 1``."""

    profile: str
    start: int
    size: int

    @property
    def slices(self) -> range:
        return range(self.start, self.start + self.size)

    def describe(self) -> str:
        """``3g.20gb (memory slices 0-3)``, ``1g.5gb (memory slice 6)``."""
        last = self.start + self.size - 1
        where = f"slice {self.start}" if last == self.start else f"slices {self.start}-{last}"
        return f"{self.profile} (memory {where})"


@dataclass(frozen=True)
class NoFit:
    """Why the wanted instances cannot all be made: ``profile`` is the first that fails."""

    profile: str
    reason: str


def free_starts(
    table: MigPlacementTable, profile: str, occupied: Iterable[PlacedInstance]
) -> tuple[int, ...]:
    """The starts at which an instance of ``profile`` could be made beside ``occupied``
    (empty for a profile the table lacks)."""
    shape = table.shape(profile)
    if shape is None:
        return ()
    taken = {s for placed in occupied for s in placed.slices}
    return tuple(
        start
        for start in shape.starts
        if start + shape.size <= table.memory_slices and taken.isdisjoint(shape.span(start))
    )


def place(
    table: MigPlacementTable,
    wanted: Sequence[str],
    occupied: Sequence[PlacedInstance] = (),
) -> tuple[PlacedInstance, ...] | NoFit:
    """A start for every profile of ``wanted`` beside ``occupied``, or why there is none.

    The result lists the new instances largest first (the order to create them in). Among
    several solutions the one with the lowest starts for the largest instances is taken,
    which keeps the free slices together at the top.
    """
    shapes: list[MigProfileShape] = []
    for name in wanted:
        shape = table.shape(name)
        if shape is None:
            offered = ", ".join(p.name for p in table.profiles)
            return NoFit(name, f"the GPU has no MIG profile {name} (it has: {offered})")
        shapes.append(shape)
    shapes.sort(key=lambda s: (-s.size, -s.compute_slices, s.name))
    used = sum(_compute_slices(table, p) for p in occupied)
    for index, shape in enumerate(shapes):
        used += shape.compute_slices
        if used > table.compute_slices:
            return NoFit(
                shape.name,
                f"{shape.name} needs {shape.compute_slices} compute slice(s) and "
                f"{used - shape.compute_slices} of the GPU's {table.compute_slices} are taken "
                f"by {_listed(occupied, shapes[:index])}",
            )
    found = _search(table, shapes, list(occupied))
    if found is not None:
        return tuple(found[len(occupied) :])
    return _why_not(table, shapes, occupied)


def _compute_slices(table: MigPlacementTable, placed: PlacedInstance) -> int:
    shape = table.shape(placed.profile)
    return shape.compute_slices if shape is not None else 0


def _search(
    table: MigPlacementTable, shapes: Sequence[MigProfileShape], placed: list[PlacedInstance]
) -> list[PlacedInstance] | None:
    """Depth first: ``placed`` plus a placement of every shape, or ``None``."""
    if not shapes:
        return placed
    shape, rest = shapes[0], shapes[1:]
    for start in free_starts(table, shape.name, placed):
        found = _search(table, rest, [*placed, PlacedInstance(shape.name, start, shape.size)])
        if found is not None:
            return found
    return None


def _why_not(
    table: MigPlacementTable, shapes: Sequence[MigProfileShape], occupied: Sequence[PlacedInstance]
) -> NoFit:
    """The first instance that does not fit when each takes its lowest free start (no
    solution exists, so this one-path walk fails too) and why."""
    placed = list(occupied)
    for shape in shapes:
        starts = free_starts(table, shape.name, placed)
        if not starts:
            allowed = ", ".join(str(s) for s in shape.starts)
            size = "1 memory slice" if shape.size == 1 else f"{shape.size} memory slices"
            beside = ", ".join(p.describe() for p in placed) or "nothing"
            return NoFit(
                shape.name,
                f"{shape.name} takes {size} beginning at {allowed}, and none is free "
                f"beside {beside}",
            )
        placed.append(PlacedInstance(shape.name, starts[0], shape.size))
    # Unreachable when the search found nothing; kept total for the type checker.
    return NoFit(shapes[-1].name if shapes else "", "no placement found")


def _listed(occupied: Sequence[PlacedInstance], shapes: Sequence[MigProfileShape]) -> str:
    names = [p.profile for p in occupied] + [s.name for s in shapes]
    return " + ".join(names) or "nothing"


__all__ = ["NoFit", "PlacedInstance", "free_starts", "place"]
