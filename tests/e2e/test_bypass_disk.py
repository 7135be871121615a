"""End to end: a container cannot fill the host's disk (issue 12, item 9).

Real ds01d, real Docker, real users. On this machine kind (overlay2 on extfs) Docker cannot
cap a container's writable layer, so ds01d measures it and the lifecycle loop warns, then
stops: a container that writes past its ``disk_limit`` with ``dd`` is warned and stopped
(``cleanup.disk``) and may not start again; two containers that together pass the user's
``aggregate.disk_limit`` are both stopped and a third is refused; the tricks a user tries
next (hard links, symlinks to the host's ``/``, data hidden deep in the tree or behind a
removed name, an image ``VOLUME``) neither inflate nor hide the use. ``admin doctor`` says
which mode the host is in, ``check-limits`` shows the values and where they came from,
``container-list`` the use.
"""

from __future__ import annotations

import io
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ds01.core.disk import driver_can_enforce
from ds01.runtime.docker import DockerRuntime
from support import TEST_IMAGES_YAML, describe, value_and_source, wait_for_loop_pass, wait_until

MIB = 1024**2
GRACE_S = 3.0  # disk_grace_minutes: 0.05

LIMITS = """
    defaults:
      disk_limit: 30M
      max_containers: 6
      idle_timeout_hours: null
      max_runtime_hours: null
    users:
      bob:
        disk_limit: 200M
    aggregate:
      users:
        bob:
          disk_limit: 50M
    policies:
      lifecycle_interval_seconds: 0.5
      disk_grace_minutes: 0.05
"""




def inside(d: Any, user: str, name: str, script: str) -> None:
    """Run ``script`` in ``user``'s container ``name`` as that user (``container-open``)."""
    result = d.cli(user, "container-open", name, "--", "sh", "-c", script)
    assert result.returncode == 0, describe(result)


def disk_events(d: Any, action: str, docker_name: str) -> list[dict[str, Any]]:
    return d.events_where(action=action, resource=f"container/{docker_name}")


def status_of(docker_client: Any, docker_name: str) -> str:
    return str(docker_client.api.inspect_container(docker_name)["State"]["Status"])


def listed(d: Any, user: str) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in d.cli_json(user, "container-list")}


def measured(d: Any, user: str, name: str, at_least: int) -> dict[str, Any]:
    """``name``'s row of ``container-list`` once its measured use reaches ``at_least``."""
    return wait_until(
        f"{name}'s disk use of {at_least} bytes in container-list",
        lambda: next(
            (
                r
                for r in [listed(d, user).get(name)]
                if r and r["disk_bytes"] is not None and r["disk_bytes"] >= at_least
            ),
            None,
        ),
        timeout=15,
    )


@pytest.fixture
def volume_image(docker_client: Any, test_image: str) -> Iterator[str]:
    """alice's own image that declares a VOLUME: writes there miss the writable layer."""
    tag = "ds01-test/volume:latest"
    dockerfile = (
        f"FROM {test_image}\nLABEL ds01.image.owner=alice\n"
        "RUN mkdir -m 1777 /scratch\nVOLUME /scratch\n"
    )
    docker_client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=tag, pull=False, rm=True
    )
    yield tag
    docker_client.images.remove(tag, force=True)


def test_a_container_writing_past_its_disk_limit_is_warned_stopped_and_not_restarted(
    ds01d: Any, docker_client: Any, unix_users: dict[str, Any]
) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    uid = unix_users["alice"].pw_uid
    fill = f"fill._.{uid}"
    d.cli_json("alice", "container-create", "fill", "--image", "busybox", "--start")
    inside(d, "alice", "fill", "dd if=/dev/zero of=/tmp/fill bs=1M count=40 && sync")

    stop = wait_until(
        "the disk stop", lambda: disk_events(d, "cleanup.disk", fill), timeout=GRACE_S + 20
    )[0]
    warnings = [w for w in disk_events(d, "lifecycle.warn", fill) if w["details"]["kind"] == "disk"]
    assert warnings and warnings[0]["details"]["level"] == 2, warnings
    assert warnings[0]["ts"] <= stop["ts"]
    assert warnings[0]["details"]["limit_bytes"] == 30 * MIB
    assert stop["details"]["used_bytes"] >= 40 * MIB
    assert "above its disk limit of 30M" in stop["details"]["reason"]
    assert status_of(docker_client, fill) == "exited"

    row = listed(d, "alice")["fill"]
    assert row["disk_bytes"] >= 40 * MIB and row["disk_limit_bytes"] == 30 * MIB
    text = d.cli("alice", "container-list")
    assert "DISK" in text.stdout and "/30M" in text.stdout, describe(text)

    again = d.cli("alice", "container-start", "fill")
    assert again.returncode == 3, describe(again)
    assert "cannot start" in again.stderr and "container-remove fill" in again.stderr
    assert d.events_where(action="container.start", outcome="denied", user="alice")

    # Asking for more than the limit is refused, in either mode, before anything is made.
    big = d.cli("alice", "container-create", "big", "--image", "busybox", "--disk", "1G")
    assert big.returncode == 3, describe(big)
    assert "disk 1G is above your limit of 30M" in big.stderr
    assert "big" not in listed(d, "alice")


def test_the_users_total_over_two_containers_stops_both_and_refuses_a_third(
    ds01d: Any, docker_client: Any, unix_users: dict[str, Any]
) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    uid = unix_users["bob"].pw_uid
    for name in ("one", "two"):
        d.cli_json("bob", "container-create", name, "--image", "busybox", "--start")
        inside(d, "bob", name, "dd if=/dev/zero of=/tmp/fill bs=1M count=30 && sync")

    for name in ("one", "two"):
        wait_until(
            f"the total's stop of {name}",
            lambda name=name: disk_events(d, "cleanup.disk", f"{name}._.{uid}"),
            timeout=GRACE_S + 20,
        )
        assert status_of(docker_client, f"{name}._.{uid}") == "exited"
    stops = d.events_where(action="cleanup.disk", user="bob")
    assert {s["details"]["scope"] for s in stops} == {"total"}, stops
    warned = d.events_where(action="lifecycle.warn", user="bob")
    assert {w["details"]["kind"] for w in warned} == {"disk_total"}, warned

    limits = d.cli_json("bob", "check-limits")
    assert limits["aggregate_usage"]["disk_bytes"] >= 60 * MIB
    third = d.cli("bob", "container-create", "three", "--image", "busybox")
    assert third.returncode == 3, describe(third)
    assert "disk total of 50M" in third.stderr, describe(third)
    start = d.cli("bob", "container-start", "one")
    assert start.returncode == 3 and "aggregate.disk_limit" in start.stderr, describe(start)


def test_links_neither_inflate_nor_hide_and_deep_or_volume_data_is_found(
    ds01d: Any, docker_client: Any, unix_users: dict[str, Any], volume_image: str
) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    uid = unix_users["alice"].pw_uid
    for name, image in (("links", "busybox"), ("deep", "busybox"), ("vol", volume_image)):
        d.cli_json("alice", "container-create", name, "--image", image, "--start")

    # 10M hard-linked 40 times (400M if each link counted), links to the host's / and /usr
    # and a link loop (the host's disk if followed): measured as the 10M it holds.
    inside(d, "alice", "links",
           "dd if=/dev/zero of=/tmp/data bs=1M count=10 && mkdir /tmp/l && "
           "for i in $(seq 40); do ln /tmp/data /tmp/l/$i; done && "
           "ln -s / /tmp/host && ln -s /usr /tmp/usr && ln -s . /tmp/loop && sync")  # fmt: skip
    row = measured(d, "alice", "links", 10 * MIB)
    # 40M written deep down (deeper than the walk keeps open), its first name removed so
    # that only a hard link holds it.
    inside(d, "alice", "deep",
           "cd /tmp && for i in $(seq 150); do mkdir d && cd d; done && "
           "dd if=/dev/zero of=x bs=1M count=40 && ln x y && rm x && sync")  # fmt: skip
    inside(d, "alice", "vol", "dd if=/dev/zero of=/scratch/fill bs=1M count=40 && sync")

    for name in ("deep", "vol"):
        wait_until(
            f"the disk stop of {name}",
            lambda name=name: disk_events(d, "cleanup.disk", f"{name}._.{uid}"),
            timeout=GRACE_S + 20,
        )
    time.sleep(GRACE_S + 1)  # "links" had every chance to be (wrongly) stopped
    wait_for_loop_pass(d, "disk-meter")  # and the meter measured it once more since
    row = listed(d, "alice")["links"]
    assert 10 * MIB <= row["disk_bytes"] < 12 * MIB, row
    assert row["status"] == "running"
    assert not disk_events(d, "cleanup.disk", f"links._.{uid}")
    assert not disk_events(d, "lifecycle.warn", f"links._.{uid}")

    # The volume goes with its container: nothing is left behind on the host's disk.
    volumes = [
        m["Name"]
        for m in docker_client.api.inspect_container(f"vol._.{uid}")["Mounts"]
        if m["Type"] == "volume"
    ]
    assert volumes
    removed = d.cli("alice", "container-remove", "vol")
    assert removed.returncode == 0, describe(removed)
    assert not [v for v in docker_client.api.volumes()["Volumes"] or [] if v["Name"] in volumes]


def test_doctor_check_limits_and_the_container_say_how_disk_is_limited(
    ds01d: Any, docker_client: Any, unix_users: dict[str, Any]
) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    info = docker_client.info()
    backing = dict(info.get("DriverStatus") or []).get("Backing Filesystem")
    can, _ = driver_can_enforce(info["Driver"], backing)

    report = json.loads(d.cli("erin", "admin", "doctor", "--json").stdout)
    [finding] = [f for f in report["findings"] if f["check"] == "disk"]
    assert info["Driver"] in finding["message"], finding
    if not can:
        assert finding["message"].startswith("Disk limits are measured by the lifecycle loop")
        assert "xfs" in finding["message"] and "pquota" in finding["message"]

    bob = d.cli_json("bob", "check-limits", "--explain")["explain"]
    assert value_and_source(bob["disk_limit"]) == {"value": "200M", "source": "user:bob"}
    assert value_and_source(bob["aggregate.disk_limit"]) == {"value": "50M", "source": "user:bob"}
    alice = d.cli_json("alice", "check-limits", "--explain")["explain"]
    assert value_and_source(alice["disk_limit"]) == {"value": "30M", "source": "defaults"}
    assert value_and_source(alice["aggregate.disk_limit"]) == {"value": None, "source": "builtin"}
    text = d.cli("alice", "check-limits")
    assert text.returncode == 0, describe(text)
    assert "disk_limit" in text.stdout and "30M" in text.stdout
    assert "Disk limits are measured" in text.stdout or "Disk limits are enforced" in text.stdout

    created = d.cli_json("alice", "container-create", "c", "--image", "busybox", "--disk", "20M")
    host = docker_client.api.inspect_container(created["docker_name"])["HostConfig"]
    labels = docker_client.api.inspect_container(created["docker_name"])["Config"]["Labels"]
    assert labels["ds01.disk_bytes"] == str(20 * MIB)
    if not can:
        assert not host.get("StorageOpt")
    # Its log rotates: printing without end cannot fill the host's disk either.
    if info.get("LoggingDriver") in ("json-file", "local"):
        assert host["LogConfig"]["Config"]["max-size"] == str(10 * MIB)


def test_the_storage_probe_on_this_host_agrees_with_docker() -> None:
    """ds01 and Docker agree on ``--storage-opt size=``: where the driver cannot cap a
    container (this machine kind) Docker refuses it, and ds01 measures; wherever, ds01's
    probe answers as Docker does."""
    info = json.loads(
        subprocess.run(
            ["docker", "info", "--format", "{{json .}}"], capture_output=True, check=True
        ).stdout
    )
    backing = dict(info.get("DriverStatus") or []).get("Backing Filesystem")
    can, why = driver_can_enforce(info["Driver"], backing)
    created = subprocess.run(
        ["docker", "create", "--storage-opt", "size=1G", "ds01-test/busybox:latest", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if created.returncode == 0:
        subprocess.run(["docker", "rm", "-f", created.stdout.strip()], check=False)
    # Where the driver may cap (``can``), only a probe tells: ds01's says what Docker said.
    probe = DockerRuntime.from_env().probe_storage_size("ds01-test/busybox:latest", 1024**3)
    assert (probe is None) == (created.returncode == 0), (probe, created.stderr)
    if not can:
        assert created.returncode != 0, f"{why}, yet Docker took --storage-opt size="
