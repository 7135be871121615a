"""MIG layouts: ``mig_layout`` in gpu-config.yaml, the plan (``ds01.core.mig``) and the
simulated backend's ``apply_mig``, whose changes survive a restart (a new backend)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from ds01.config.gpu_config import GpuConfig
from ds01.config.loader import parse_config
from ds01.core.allocation import Holding
from ds01.core.mig import Layout, plan_mig, steps_between
from ds01.errors import ConfigError, SystemFault
from ds01.gpu.simulated import SimulatedBackend
from ds01.model.mig import MigStep

DEFAULT_SPLIT = ("3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb")


def backend(tmp_path: Path | None = None, **config: object) -> SimulatedBackend:
    mig_file = None if tmp_path is None else tmp_path / "simulated-mig.json"
    return SimulatedBackend(GpuConfig(**config), mig_file=mig_file)  # type: ignore[arg-type]


def holding(user: str, name: str, *devices: str) -> Holding:
    return Holding(container=f"{name}._.1", name=name, user=user, devices=devices)


# --- configuration --------------------------------------------------------------------------


def test_mig_layout_reads_off_and_profile_lists_by_index_or_uuid() -> None:
    config = parse_config(
        "mig_layout:\n  0: off\n  3: [3g.20gb, 2g.10gb]\n  GPU-0123abcd-ef01: [7g.40gb]\n",
        "gpu-config",
        "gpu-config.yaml",
    )
    assert config.mig_layout == {
        0: False,
        3: ["3g.20gb", "2g.10gb"],
        "GPU-0123abcd-ef01": ["7g.40gb"],
    }
    assert parse_config("mig_layout:\n", "gpu-config", "g.yaml").mig_layout == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("  0: true\n", "`off` for a whole GPU"),
        ("  1: []\n", "nothing to run on"),
        ("  2: [3g.20gb, 9g.1gb]\n", "not a MIG profile: '9g.1gb'"),
        ("  gpu0: off\n", "is not a GPU"),
        ("  -1: off\n", "is not a GPU"),
    ],
)
def test_invalid_mig_layouts_are_refused_on_their_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config("backend: simulated\nmig_layout:\n" + text, "gpu-config", "g.yaml")
    assert "g.yaml:3: mig_layout." in refused.value.message
    assert message in refused.value.message


# --- planning ---------------------------------------------------------------------------------


def test_layouts_compare_as_multisets_and_describe_largest_first() -> None:
    assert Layout.of(["1g.5gb", "3g.20gb"]).same_as(Layout.of(["3g.20gb", "1g.5gb"]))
    assert not Layout.of(["3g.20gb"]).same_as(Layout.of(False))
    assert Layout.of(["1g.5gb", "3g.20gb"]).describe() == "MIG: 3g.20gb + 1g.5gb"
    assert Layout.of(False).describe() == "whole GPU"
    with pytest.raises(ValueError, match="not `true`"):
        Layout.of(True)


def test_steps_destroy_everything_switch_the_mode_then_create_largest_first() -> None:
    inventory = backend().inventory()
    split = [d for d in inventory.devices if d.gpu_index == 3]
    to_whole = steps_between(split, True, Layout.of(False))
    assert [s.action for s in to_whole] == ["destroy"] * 4 + ["disable_mig"]
    assert {s.uuid for s in to_whole if s.uuid} == {d.uuid for d in split}
    to_mig = steps_between([], False, Layout.of(["1g.5gb", "4g.20gb", "2g.10gb"]))
    assert [(s.action, s.profile) for s in to_mig] == [
        ("enable_mig", None),
        ("create", "4g.20gb"),
        ("create", "2g.10gb"),
        ("create", "1g.5gb"),
    ]
    assert steps_between(split, True, Layout.of(list(reversed(DEFAULT_SPLIT)))) == ()


def test_plan_per_gpu_unchanged_apply_held_invalid_unmanaged_and_missing() -> None:
    inventory = backend().inventory()
    gpu3 = inventory.gpus[3]
    mig_on_3 = [d.uuid for d in inventory.devices if d.gpu_index == 3]
    desired = {
        0: Layout.of(False),  # already whole
        1: Layout.of(["3g.20gb", "3g.20gb"]),  # free: can be applied
        2: Layout.of(["7g.40gb", "1g.5gb"]),  # 8 slices on a 7-slice GPU
        gpu3.uuid: Layout.of(False),  # held by bob's notebook
        7: Layout.of(False),  # no such GPU
    }
    held = {mig_on_3[1]: holding("bob", "notebook", mig_on_3[1])}

    plans = {(p.gpu_index, p.key): p for p in plan_mig(inventory, desired, held)}

    assert plans[(0, "0")].status == "unchanged"
    ready = plans[(1, "1")]
    assert ready.status == "apply"
    assert [s.describe() for s in ready.steps] == [
        "turn MIG mode on",
        "create 3g.20gb",
        "create 3g.20gb",
    ]
    assert ready.current == Layout(mig=False)
    invalid = plans[(2, "2")]
    assert invalid.status == "invalid" and "8 compute slices, the GPU has 7" in invalid.reason
    blocked = plans[(3, gpu3.uuid)]
    assert blocked.status == "held"
    assert blocked.holders == ("bob/notebook",)
    assert "bob/notebook" in blocked.reason
    assert len(blocked.steps) == 5  # what apply would do once it is free
    assert plans[(None, "7")].status == "missing"


def test_a_whole_gpu_held_blocks_and_unmanaged_gpus_are_listed() -> None:
    inventory = backend().inventory()
    gpu0 = inventory.gpus[0]
    plans = plan_mig(
        inventory, {0: Layout.of(["7g.40gb"])}, {gpu0.uuid: holding("alice", "thesis", gpu0.uuid)}
    )
    assert [p.status for p in plans] == ["held", "unmanaged", "unmanaged", "unmanaged"]


def test_profiles_the_gpu_does_not_offer_make_the_layout_invalid() -> None:
    inventory = backend().inventory()
    plans = plan_mig(
        inventory, {1: Layout.of(["3g.71gb"])}, {}, offered={1: ("7g.40gb", "3g.20gb", "1g.5gb")}
    )
    assert plans[1].status == "invalid"
    assert "offers no MIG profile 3g.71gb (it offers: 7g.40gb, 3g.20gb, 1g.5gb)" in plans[1].reason


# --- the simulated backend --------------------------------------------------------------------


def test_simulated_apply_changes_the_inventory_and_a_new_backend_keeps_it(tmp_path: Path) -> None:
    first = backend(tmp_path)
    before = first.inventory()
    gpu1, gpu3 = before.gpus[1], before.gpus[3]
    old_instances = {d.uuid for d in before.devices if d.gpu_index == 3}

    plans = {
        p.gpu_index: p
        for p in plan_mig(before, {1: Layout.of(["4g.20gb", "3g.20gb"]), 3: Layout.of(False)}, {})
    }
    first.apply_mig(gpu1, plans[1].steps)
    result = first.apply_mig(gpu3, plans[3].steps)

    assert result.done[-1] == "turn MIG mode off" and not result.pending_reset
    after = first.inventory()
    on_1 = [d for d in after.devices if d.gpu_index == 1]
    assert sorted(d.profile or "" for d in on_1) == ["3g.20gb", "4g.20gb"]
    assert all(d.kind == "mig" and d.uuid.startswith("MIG-") for d in on_1)
    assert sum((d.gpu_equivalents for d in on_1), Fraction(0)) == 1
    on_3 = [d for d in after.devices if d.gpu_index == 3]
    assert [(d.kind, d.uuid) for d in on_3] == [("gpu", gpu3.uuid)]
    assert not old_instances & {d.uuid for d in after.devices}

    saved = json.loads((tmp_path / "simulated-mig.json").read_text())
    assert set(saved) == {gpu1.uuid, gpu3.uuid}
    assert (tmp_path / "simulated-mig.json").stat().st_mode & 0o777 == 0o600

    restarted = backend(tmp_path).inventory()
    assert restarted.devices == after.devices
    assert restarted.gpus == after.gpus


def test_simulated_apply_refuses_what_a_gpu_would_refuse(tmp_path: Path) -> None:
    simulated = backend(tmp_path)
    gpu0 = simulated.inventory().gpus[0]
    with pytest.raises(SystemFault, match=r"no room for a 7g\.40gb"):
        simulated.apply_mig(gpu0, [MigStep("create", "7g.40gb")])  # MIG mode is off
    with pytest.raises(SystemFault, match="no MIG instance MIG-x"):
        simulated.apply_mig(gpu0, [MigStep("destroy", "1g.5gb", "MIG-x")])
    assert not (tmp_path / "simulated-mig.json").exists()
    assert simulated.inventory() == backend().inventory()


def test_a_broken_change_file_is_ignored_and_the_configured_layout_used(tmp_path: Path) -> None:
    (tmp_path / "simulated-mig.json").write_text("{not json")
    assert backend(tmp_path).inventory() == backend().inventory()


# --- placement --------------------------------------------------------------------------------


def test_a_layout_that_does_not_fit_the_placements_is_invalid_though_its_slices_do() -> None:
    simulated = backend()
    inventory = simulated.inventory()
    tables = {g.index: simulated.mig_placements(g) for g in inventory.gpus}

    (plan,) = [
        p
        for p in plan_mig(
            inventory, {1: Layout.of(["3g.20gb", "3g.20gb", "1g.5gb"])}, {}, tables=tables
        )
        if p.gpu_index == 1
    ]

    assert plan.status == "invalid"
    assert plan.reason.startswith("the instances do not fit the GPU's placement rules: 1g.5gb")
    assert plan.steps == ()


def test_simulated_apply_refuses_a_create_with_no_free_place(tmp_path: Path) -> None:
    simulated = backend(tmp_path)
    gpu1 = simulated.inventory().gpus[1]
    steps = [MigStep("enable_mig")] + [
        MigStep("create", p) for p in ("3g.20gb", "3g.20gb", "1g.5gb")
    ]

    with pytest.raises(SystemFault, match=r"no room for a 1g\.5gb instance \(the GPU has 3g"):
        simulated.apply_mig(gpu1, steps)
    assert not (tmp_path / "simulated-mig.json").exists()


def test_simulated_apply_places_instances_at_the_planned_starts_and_keeps_them(
    tmp_path: Path,
) -> None:
    simulated = backend(tmp_path)
    inventory = simulated.inventory()
    gpu1 = inventory.gpus[1]
    tables = {g.index: simulated.mig_placements(g) for g in inventory.gpus}
    plans = plan_mig(inventory, {1: Layout.of(["2g.10gb", "3g.20gb"])}, {}, tables=tables)
    steps = next(p for p in plans if p.gpu_index == 1).steps
    assert [(s.profile, s.start) for s in steps if s.action == "create"] == [
        ("3g.20gb", 0),
        ("2g.10gb", 4),
    ]

    simulated.apply_mig(gpu1, steps)

    saved = json.loads((tmp_path / "simulated-mig.json").read_text())[gpu1.uuid]
    assert sorted((i["profile"], i["start"]) for i in saved["instances"]) == [
        ("2g.10gb", 4),
        ("3g.20gb", 0),
    ]
    restarted = backend(tmp_path)
    gpu1 = restarted.inventory().gpus[1]
    with pytest.raises(SystemFault, match=r"no room for a 1g\.5gb instance at memory slice 4"):
        restarted.apply_mig(gpu1, [MigStep("create", "1g.5gb", start=4)])
    restarted.apply_mig(gpu1, [MigStep("create", "1g.5gb")])  # the driver's choice: 6
    saved = json.loads((tmp_path / "simulated-mig.json").read_text())[gpu1.uuid]
    assert sorted(i["start"] for i in saved["instances"]) == [0, 4, 6]
