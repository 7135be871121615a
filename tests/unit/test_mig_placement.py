"""MIG placement: the tables of NVIDIA's MIG user guide (``ds01.model.mig_placement``) and
the pure search over them (``ds01.core.mig_placement``)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.core.mig_placement import NoFit, PlacedInstance, free_starts, place
from ds01.model.mig_placement import (
    A100_40GB_TABLE,
    A100_H100_80GB_TABLE,
    MigPlacementTable,
    known_placement_table,
)


def starts(result: tuple[PlacedInstance, ...] | NoFit) -> list[tuple[str, int]]:
    assert not isinstance(result, NoFit), result
    return [(p.profile, p.start) for p in result]


def test_two_3g_take_every_memory_slice_so_no_1g_fits_beside_them() -> None:
    result = place(A100_40GB_TABLE, ["3g.20gb", "3g.20gb", "1g.5gb"])

    assert isinstance(result, NoFit)
    assert result.profile == "1g.5gb"
    assert "3g.20gb (memory slices 0-3), 3g.20gb (memory slices 4-7)" in result.reason


def test_the_search_moves_large_instances_to_make_room_for_small_ones() -> None:
    # 3g at 0 would leave 4-7: a 2g at 4, a 1g at 6 and nowhere for the second 1g (a
    # 1g.5gb may not begin at 7), so the 3g goes to 4.
    result = place(A100_40GB_TABLE, ["1g.5gb", "3g.20gb", "1g.5gb", "2g.10gb"])

    assert starts(result) == [("3g.20gb", 4), ("2g.10gb", 0), ("1g.5gb", 2), ("1g.5gb", 3)]


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        (["7g.40gb"], [("7g.40gb", 0)]),
        (["3g.20gb", "4g.20gb"], [("4g.20gb", 0), ("3g.20gb", 4)]),
        (["1g.10gb"] * 4, [("1g.10gb", 0), ("1g.10gb", 2), ("1g.10gb", 4), ("1g.10gb", 6)]),
        (["1g.5gb"] * 7, [("1g.5gb", s) for s in range(7)]),
        (
            ["2g.10gb"] * 3 + ["1g.5gb"],
            [("2g.10gb", 0), ("2g.10gb", 2), ("2g.10gb", 4), ("1g.5gb", 6)],
        ),
    ],
)
def test_layouts_of_the_mig_user_guide_fit(
    wanted: list[str], expected: list[tuple[str, int]]
) -> None:
    assert starts(place(A100_40GB_TABLE, wanted)) == expected


def test_the_80gb_table_has_the_same_shapes_with_twice_the_memory() -> None:
    assert starts(place(A100_H100_80GB_TABLE, ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"])) == [
        ("3g.40gb", 4),
        ("2g.20gb", 0),
        ("1g.10gb", 2),
        ("1g.10gb", 3),
    ]
    refused = place(A100_H100_80GB_TABLE, ["3g.20gb"])
    assert isinstance(refused, NoFit) and "has no MIG profile 3g.20gb" in refused.reason


def test_an_eighth_1g_is_refused_for_want_of_compute_slices() -> None:
    refused = place(A100_40GB_TABLE, ["1g.5gb"] * 8)

    assert isinstance(refused, NoFit)
    assert "7 of the GPU's 7 are taken" in refused.reason


def test_instances_in_use_stay_where_they_are() -> None:
    in_use = [PlacedInstance("3g.20gb", 4, 4)]

    assert free_starts(A100_40GB_TABLE, "2g.10gb", in_use) == (0, 2)
    assert free_starts(A100_40GB_TABLE, "3g.20gb", in_use) == (0,)
    assert starts(place(A100_40GB_TABLE, ["4g.20gb"], in_use)) == [("4g.20gb", 0)]
    fragmented = place(A100_40GB_TABLE, ["4g.20gb"], [PlacedInstance("1g.5gb", 1, 1)])
    assert isinstance(fragmented, NoFit) and "1g.5gb (memory slice 1)" in fragmented.reason


@pytest.mark.parametrize(
    ("model", "memory_mib", "table"),
    [
        ("NVIDIA A100-SXM4-40GB", 40960, A100_40GB_TABLE),
        ("NVIDIA A100-PCIE-40GB", 40536, A100_40GB_TABLE),
        ("NVIDIA A100-SXM4-80GB", 81920, A100_H100_80GB_TABLE),
        ("NVIDIA A100 80GB PCIe", 81920, A100_H100_80GB_TABLE),
        ("NVIDIA H100 80GB HBM3", 81559, A100_H100_80GB_TABLE),
        ("NVIDIA H100 NVL", 95830, None),
        ("NVIDIA A30", 24576, None),
        ("NVIDIA RTX A6000", 49140, None),
    ],
)
def test_known_tables_by_board(
    model: str, memory_mib: int, table: MigPlacementTable | None
) -> None:
    assert known_placement_table(model, memory_mib) is table


def _fits_by_brute_force(table: MigPlacementTable, wanted: Sequence[str]) -> bool:
    shapes = [shape for name in wanted if (shape := table.shape(name)) is not None]
    if sum(s.compute_slices for s in shapes) > table.compute_slices:
        return False
    for choice in itertools.product(*(s.starts for s in shapes)):
        used = [slot for s, start in zip(shapes, choice, strict=True) for slot in s.span(start)]
        if len(used) == len(set(used)):
            return True
    return False


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([p.name for p in A100_40GB_TABLE.profiles]), max_size=7))
def test_place_finds_a_placement_exactly_when_one_exists(wanted: list[str]) -> None:
    result = place(A100_40GB_TABLE, wanted)

    assert isinstance(result, NoFit) != _fits_by_brute_force(A100_40GB_TABLE, wanted)
    if not isinstance(result, NoFit):
        assert sorted(p.profile for p in result) == sorted(wanted)
        slots = [s for p in result for s in p.slices]
        assert len(slots) == len(set(slots))
        for placed in result:
            shape = A100_40GB_TABLE.shape(placed.profile)
            assert shape is not None and placed.start in shape.starts
