"""End to end: ``ds01 admin mig plan|apply`` on the simulated backend.

gpu-config.yaml wants GPU 1 split into two 3g.20gb instances and GPU 3 (split 3g+2g+1g+1g)
whole again. alice holds a slice of GPU 3: the plan says GPU 1 can change and GPU 3 cannot
(and who holds it); apply changes GPU 1, refuses GPU 3 and logs both; users then get the
new instances. The change survives a restart of ds01d (the simulated state file), and once
alice's container is gone GPU 3 changes too; a reservation of its 2g.10gb slice, which has
no equivalent left, is then reported as affected. A layout whose instances do not fit the
GPU's placements is refused before anything changes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from support import TEST_IMAGES_YAML, describe

WANTED = """
    backend: simulated
    mig_layout:
      1: [3g.20gb, 3g.20gb]
      3: off
"""

LIMITS = """
    defaults:
      gpu_limit: 2
      max_containers: 4
"""


def by_gpu(plan: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {g["gpu_index"]: g for g in plan["gpus"]}


def devices_of(d: Any, index: int) -> list[tuple[str, str | None]]:
    return [
        (g["kind"], g["profile"])
        for g in d.cli_json("bob", "gpu-status")
        if g["gpu_index"] == index
    ]


def test_mig_apply_changes_free_gpus_refuses_held_ones_and_survives_a_restart(
    ds01d: Any, unix_users: dict[str, Any]
) -> None:
    d = ds01d(resource_limits=LIMITS, gpu_config=WANTED, images=TEST_IMAGES_YAML)
    slice_ = d.cli("alice", "container-create", "nb", "--image", "busybox", "--mig", "2g.10gb")
    assert slice_.returncode == 0, describe(slice_)
    assert devices_of(d, 1) == [("gpu", None)]

    plan = by_gpu(d.cli_json("erin", "admin", "mig", "plan"))
    assert plan[1]["status"] == "apply"
    assert plan[1]["current"]["description"] == "whole GPU"
    assert plan[1]["desired"]["description"] == "MIG: 3g.20gb + 3g.20gb"
    assert plan[1]["steps"] == [
        "turn MIG mode on",
        "create 3g.20gb at memory slice 0",
        "create 3g.20gb at memory slice 4",
    ]
    assert plan[3]["status"] == "held" and plan[3]["holders"] == ["alice/nb"]
    assert plan[0]["status"] == plan[2]["status"] == "unmanaged"
    table = d.cli("erin", "admin", "mig", "plan")
    assert table.returncode == 0 and "in use by alice/nb" in table.stdout, describe(table)

    refused = d.cli("alice", "admin", "mig", "apply")
    assert refused.returncode == 5, describe(refused)
    assert d.events_where(action="auth.denied", user="alice", resource="admin/mig")

    applied = d.cli(None, "admin", "mig", "apply")

    assert applied.returncode == 1, describe(applied)  # GPU 3 is not as desired yet
    assert "GPU 1: now MIG: 3g.20gb + 3g.20gb." in applied.stdout
    assert "REFUSED: GPU 3: in use by alice/nb" in applied.stdout
    assert devices_of(d, 1) == [("mig", "3g.20gb"), ("mig", "3g.20gb")]
    assert devices_of(d, 3) == [("mig", p) for p in ("3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb")]
    assert d.events_where(action="gpu.mig_apply", outcome="success")
    assert d.events_where(action="gpu.mig_apply", outcome="denied")
    d.restart()
    assert devices_of(d, 1) == [("mig", "3g.20gb"), ("mig", "3g.20gb")]
    assert by_gpu(d.cli_json(None, "admin", "mig", "plan"))[1]["status"] == "unchanged"

    assert d.cli("alice", "container-remove", "nb").returncode == 0
    tomorrow = (datetime.now() + timedelta(days=1)).strftime("%Y-%m-%d 09:00")
    kept = d.cli_json("bob", "reserve", "--mig", "2g.10gb", "--from", tomorrow, "--hours", "2")
    last = d.cli_json(None, "admin", "mig", "apply", "--gpu", "3")
    assert last["complete"], last
    assert [g["outcome"] for g in last["gpus"]] == ["applied"]
    assert devices_of(d, 3) == [("gpu", None)]
    # No 2g.10gb is left anywhere: the reservation is not left pointing at nothing silently.
    d.cli_json(None, "maintenance", "run")  # a lifecycle pass: reservations are repaired
    listed = d.cli_json("bob", "reservations")
    assert [r["missing_devices"] for r in listed] == [kept["devices"]]
    assert "affected" in d.cli("bob", "reservations").stdout
    assert d.events_where(action="reservation.affected", resource=f"reservation/{kept['id']}")
    split = {
        g["uuid"] for g in d.cli_json("bob", "gpu-status") if g["gpu_index"] == 1
    }  # the only 3g.20gb instances left
    for name in ("big", "big2"):
        made = d.cli("bob", "container-create", name, "--image", "busybox", "--mig", "3g.20gb")
        assert made.returncode == 0, describe(made)
    assert {u for c in d.cli_json("bob", "container-list") for u in c["gpus"]} == split


def test_a_layout_whose_placements_do_not_fit_is_refused_before_the_gpu_is_touched(
    ds01d: Any,
) -> None:
    # 3 + 3 + 1 = 7 compute slices, but two 3g.20gb take all 8 memory slices of an
    # A100-40GB: no 1g.5gb fits beside them.
    d = ds01d(
        gpu_config="""
            backend: simulated
            mig_layout:
              1: [3g.20gb, 3g.20gb, 1g.5gb]
        """
    )

    plan = by_gpu(d.cli_json(None, "admin", "mig", "plan"))[1]
    assert plan["status"] == "invalid", plan
    assert "1g.5gb" in plan["reason"] and "memory slices 4-7" in plan["reason"], plan
    applied = d.cli(None, "admin", "mig", "apply")
    assert applied.returncode == 1, describe(applied)
    assert "GPU 1: not changed: the instances do not fit" in applied.stdout, describe(applied)
    assert devices_of(d, 1) == [("gpu", None)]
