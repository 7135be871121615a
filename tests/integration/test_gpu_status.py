"""``gpu-status`` and ``check-limits`` of a real ds01d, and where its allocator puts requests.

On the embedded default inventory (four simulated A100s, GPU 3 split 3g.20gb + 2g.10gb +
1g.5gb + 1g.5gb) ``gpu-status --json`` must list every device by UUID with who holds it; a
MIG request gets the smallest free instance that satisfies it (best fit, never beyond the
user's remaining quota); UUIDs survive a daemon restart; a GPU in MIG mode without instances
is reported unusable and never handed out. ``check-limits`` reports the resolved limits, the
caller's usage and, with ``--explain``, the layer each value came from.
"""

from __future__ import annotations

from typing import Any

import pytest

from support import TEST_IMAGES_YAML, describe

DEFAULT_MIG_PROFILES = ["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"]
DEVICE_KEYS = {"uuid", "kind", "profile", "gpu_equivalents", "holder"}

#: Room for every MIG instance of the default inventory in alice's quota.
ROOMY_LIMITS = """
    defaults:
      gpu_limit: 4
      max_containers: 8
"""

#: Two 1g.5gb instances (2/7) fit, and one more 1g.5gb (1/7) still fits, but nothing larger.
TIGHT_LIMITS = """
    defaults:
      gpu_limit: 0.43
      max_containers: 8
"""

USABLE_GPU = "GPU-aaaaaaaa-0000-4000-8000-000000000000"
MIG_GPU_WITHOUT_INSTANCES = "GPU-bbbbbbbb-0000-4000-8000-000000000000"
ONE_USABLE_ONE_EMPTY_MIG_GPU = f"""
    backend: simulated
    simulated:
      gpus:
        - uuid: {USABLE_GPU}
        - uuid: {MIG_GPU_WITHOUT_INSTANCES}
          mig: true
"""
NO_QUOTA_OBSTACLE = """
    defaults:
      gpu_limit: null
      max_gpus_per_container: null
      max_containers: 8
"""

#: Identical 1g.5gb instances on two GPUs: GPU 0 has 7 free slices, GPU 1 only 2.
TWO_MIG_GPUS = """
    backend: simulated
    simulated:
      gpus:
        - mig: true
          mig_instances:
            - profile: 1g.5gb
            - profile: 3g.20gb
            - profile: 3g.20gb
        - mig: true
          mig_instances:
            - profile: 1g.5gb
            - profile: 1g.5gb
"""

LAYERED_LIMITS = """
    defaults:
      cpu_limit: 2
      gpu_limit: 1
    groups:
      phd:
        gpu_limit: 2
    users:
      alice:
        memory_limit: 4G
"""


# --- helpers --------------------------------------------------------------------------------


def gpu_status(daemon: Any, user: str = "alice") -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = daemon.cli_json(user, "gpu-status")
    return devices


def create(daemon: Any, user: str, name: str, *args: str) -> dict[str, Any]:
    """Create ``name`` as ``user`` from the test image; return the CLI's JSON."""
    info: dict[str, Any] = daemon.cli_json(
        user, "container-create", name, "--image", "busybox", *args
    )
    return info


def try_create(daemon: Any, user: str, name: str, *args: str) -> Any:
    """A create that may be refused: it fails at once instead of waiting in the queue."""
    return daemon.cli(user, "container-create", name, "--image", "busybox", "--no-wait", *args)


def device_of(daemon: Any, info: dict[str, Any]) -> dict[str, Any]:
    """The one device a created container got, as ``gpu-status`` reports it."""
    (uuid,) = info["gpus"]
    (device,) = [d for d in gpu_status(daemon) if d["uuid"] == uuid]
    return device


def holders(devices: list[dict[str, Any]]) -> dict[str, Any]:
    return {d["uuid"]: d["holder"] for d in devices}


# --- the default inventory ------------------------------------------------------------------


def test_default_inventory_lists_three_gpus_and_four_mig_instances(ds01d):
    d = ds01d(images=TEST_IMAGES_YAML)

    devices = gpu_status(d)

    assert len(devices) == 7
    for device in devices:
        assert set(device) >= DEVICE_KEYS, device
        assert device["holder"] is None
    gpus = [x for x in devices if x["kind"] == "gpu"]
    migs = [x for x in devices if x["kind"] == "mig"]
    assert len(gpus) == 3 and len(migs) == 4
    assert [x["profile"] for x in migs] == DEFAULT_MIG_PROFILES
    assert all(x["uuid"].startswith("GPU-") and x["gpu_equivalents"] == 1.0 for x in gpus)
    assert all(x["uuid"].startswith("MIG-") for x in migs)
    # JSON rounds GPU-equivalents to 4 decimals (3/7 -> 0.4286).
    expected = [3 / 7, 2 / 7, 1 / 7, 1 / 7]
    assert [x["gpu_equivalents"] for x in migs] == pytest.approx(expected, abs=1e-4)
    assert len({x["uuid"] for x in devices}) == 7
    assert sum(x["gpu_equivalents"] for x in devices) == pytest.approx(4.0, abs=1e-3)

    text = d.cli("alice", "gpu-status")
    assert text.returncode == 0, describe(text)
    assert "Allocated 0 of 4 GPU-equivalents" in text.stdout, describe(text)


def test_holder_is_exactly_the_device_the_container_got(ds01d):
    d = ds01d(images=TEST_IMAGES_YAML)
    (big_slice,) = [x for x in gpu_status(d) if x["profile"] == "3g.20gb"]

    info = create(d, "alice", "notebook", "--mig", "3g.20gb")

    assert info["gpus"] == [big_slice["uuid"]]
    # Everyone sees who holds what; the container's name only its owner (and admins).
    for user, container in (("alice", "notebook"), ("bob", None), (None, "notebook")):
        held = holders(gpu_status(d, user))
        assert held[big_slice["uuid"]] == {
            "user": "alice",
            "container": container,
            "borrowed": False,
        }
        assert all(h is None for uuid, h in held.items() if uuid != big_slice["uuid"]), held


# --- placement ------------------------------------------------------------------------------


def test_mig_requests_get_the_smallest_free_instance_that_fits(ds01d):
    d = ds01d(resource_limits=ROOMY_LIMITS, images=TEST_IMAGES_YAML)

    got = [device_of(d, create(d, "alice", f"s{i}", "--mig", "1g.5gb")) for i in range(4)]

    assert [x["profile"] for x in got] == ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"]
    assert len({x["uuid"] for x in got}) == 4
    refused = try_create(d, "alice", "s4", "--mig", "1g.5gb")
    assert refused.returncode == 3, "no MIG instance is left; a whole GPU is no substitute\n" + (
        describe(refused)
    )
    assert d.cli_json("alice", "check-limits")["usage"]["gpu_equivalents"] == pytest.approx(1.0)


def test_equal_instances_are_packed_onto_the_gpu_with_fewest_free_slices(ds01d):
    d = ds01d(resource_limits=ROOMY_LIMITS, gpu_config=TWO_MIG_GPUS, images=TEST_IMAGES_YAML)

    first = device_of(d, create(d, "alice", "p1", "--mig", "1g.5gb"))
    second = device_of(d, create(d, "alice", "p2", "--mig", "1g.5gb"))

    # Lowest index first would take GPU 0's 1g.5gb and break up its 3g.20gb blocks.
    assert (first["gpu_index"], first["profile"]) == (1, "1g.5gb")
    assert (second["gpu_index"], second["profile"]) == (1, "1g.5gb")
    assert first["uuid"] != second["uuid"]


def test_larger_instance_is_not_given_when_it_would_break_the_quota(ds01d):
    d = ds01d(resource_limits=TIGHT_LIMITS, images=TEST_IMAGES_YAML)
    create(d, "alice", "a", "--mig", "1g.5gb")
    create(d, "alice", "b", "--mig", "1g.5gb")

    # 1/7 more would fit the quota, but only 2g.10gb and 3g.20gb are free.
    refused = try_create(d, "alice", "c", "--mig", "1g.5gb")

    assert refused.returncode == 3, describe(refused)
    usage = d.cli_json("alice", "check-limits")["usage"]
    assert usage["gpu_equivalents"] == pytest.approx(2 / 7, abs=1e-4)
    assert usage["containers"] == 2


def test_device_uuids_and_holders_survive_a_daemon_restart(ds01d):
    d = ds01d(images=TEST_IMAGES_YAML)
    before = gpu_status(d)
    info = create(d, "alice", "kept", "--gpus", "1")

    d.restart()

    after = gpu_status(d)
    assert [x["uuid"] for x in after] == [x["uuid"] for x in before]
    assert holders(after)[info["gpus"][0]] == {
        "user": "alice",
        "container": "kept",
        "borrowed": False,
    }


def test_gpu_in_mig_mode_without_instances_is_unusable_and_never_allocated(ds01d):
    d = ds01d(
        resource_limits=NO_QUOTA_OBSTACLE,
        gpu_config=ONE_USABLE_ONE_EMPTY_MIG_GPU,
        images=TEST_IMAGES_YAML,
    )

    assert [x["uuid"] for x in gpu_status(d)] == [USABLE_GPU]
    text = d.cli("alice", "gpu-status")
    assert text.returncode == 0, describe(text)
    (line,) = [x for x in text.stdout.splitlines() if MIG_GPU_WITHOUT_INSTANCES in x]
    assert "unusable" in line, describe(text)

    two = try_create(d, "alice", "two", "--gpus", "2")
    assert two.returncode == 3, describe(two)
    mig = try_create(d, "alice", "slice", "--mig", "1g.5gb")
    assert mig.returncode == 4, describe(mig)  # no instance exists to serve it
    assert "This server has no MIG instances" in mig.stderr, describe(mig)
    assert create(d, "alice", "one", "--gpus", "1")["gpus"] == [USABLE_GPU]
    second = try_create(d, "bob", "another", "--gpus", "1")
    assert second.returncode == 3, describe(second)
    held = [uuid for c in d.cli_json("erin", "container-list", "--all") for uuid in c["gpus"]]
    assert held == [USABLE_GPU]


# --- check-limits ---------------------------------------------------------------------------


def test_check_limits_reports_limits_and_usage(ds01d):
    d = ds01d(resource_limits=LAYERED_LIMITS, images=TEST_IMAGES_YAML)
    create(d, "alice", "trainer", "--gpus", "1")
    create(d, "alice", "editor")

    report = d.cli_json("alice", "check-limits")

    assert report["limits"]["gpu_limit"] == 2
    assert report["limits"]["cpu_limit"] == 2
    assert report["limits"]["memory_limit"] == "4G"
    assert report["usage"]["gpu_equivalents"] == pytest.approx(1.0)
    assert report["usage"]["containers"] == 2
    assert report["usage"]["gpu_containers"] == ["trainer"]
    bob = d.cli_json("bob", "check-limits")
    assert bob["usage"]["gpu_equivalents"] == 0
    assert bob["usage"]["containers"] == 0
    assert bob["limits"]["gpu_limit"] == 1


def test_check_limits_explain_names_the_source_of_every_value(ds01d):
    d = ds01d(resource_limits=LAYERED_LIMITS, images=TEST_IMAGES_YAML)

    explain = d.cli_json("alice", "check-limits", "--explain")["explain"]

    # ``line``: where resource-limits.yaml (LAYERED_LIMITS as written: a blank first line)
    # sets it; ``slurm``: nothing on a single server.
    assert explain["gpu_limit"] == {"value": 2, "source": "group:phd", "line": 7, "slurm": None}
    assert explain["cpu_limit"] == {"value": 2, "source": "defaults", "line": 3, "slurm": None}
    assert explain["memory_limit"] == {
        "value": "4G",
        "source": "user:alice",
        "line": 10,
        "slurm": None,
    }
    assert (explain["pids_limit"]["source"], explain["pids_limit"]["line"]) == ("builtin", None)
    bob = d.cli_json("bob", "check-limits", "--explain")["explain"]
    assert bob["gpu_limit"] == {"value": 1, "source": "defaults", "line": 4, "slurm": None}
