"""Pure pieces of ds01d: cgroup parents, resource decisions, records from Docker summaries."""

from __future__ import annotations

from fractions import Fraction

import pytest
from pydantic import ValidationError

from ds01.config.limits import ResourceLimitsConfig
from ds01.config.resolve import resolve_limits
from ds01.core.container_resources import stop_signal as _stop_signal
from ds01.daemon import schemas as api
from ds01.daemon.creation import container_resources as _resources
from ds01.daemon.limits_enforcement import cgroup_parent
from ds01.daemon.server import ROUTES, openapi_document
from ds01.errors import InvalidInput, NoCapacity, QuotaExceeded
from ds01.model import labels as L
from ds01.runtime.cgroups import slice_part
from ds01.runtime.docker import ContainerRecord

GIB = 1024**3


def test_slice_parts_never_contain_a_dash() -> None:
    assert slice_part("jane.researcher") == "jane:2eresearcher"
    assert slice_part("Ph-D") == "Ph:2dD"
    assert "-" not in slice_part("a-b-c-")


@pytest.mark.parametrize(
    ("driver", "expected"),
    [
        ("cgroupfs", "/ds01.slice/ds01-phd.slice/ds01-phd-jane:2dr.slice"),
        ("systemd", "ds01-phd-jane:2dr.slice"),
    ],
)
def test_cgroup_parent_per_driver(driver: str, expected: str) -> None:
    assert cgroup_parent("phd", "jane-r", driver) == expected  # type: ignore[arg-type]


def test_shell_images_stop_with_sighup_others_keep_their_signal() -> None:
    assert _stop_signal(("/bin/sh",)) == "SIGHUP"
    assert _stop_signal(("bash",)) == "SIGHUP"
    assert _stop_signal(("jupyter", "lab")) is None
    assert _stop_signal(("/bin/sh", "-c", "sleep 1")) is None
    assert _stop_signal(()) is None


def _limits(**defaults: object) -> object:
    config = ResourceLimitsConfig.model_validate({"defaults": defaults})
    return resolve_limits(config, "alice", ())


def _request(**fields: object) -> api.CreateContainerRequest:
    return api.CreateContainerRequest(name="t", image="busybox", **fields)  # type: ignore[arg-type]


def test_a_create_names_devices_by_id_alone() -> None:
    """Named devices (``docker run --gpus device=…``): ids of a device id's form, at most
    64, never with a count, a MIG profile or the queue (a named device is not waited for)."""
    assert _request(devices=["0", "GPU-ab-12", "MIG-GPU-ab/1/0"]).devices[2] == "MIG-GPU-ab/1/0"
    for fields in (
        {"devices": ["0\n"]},
        {"devices": ["gpu0"]},
        {"devices": [str(i) for i in range(65)]},
        {"devices": ["0"], "gpus": 1},
        {"devices": ["0"], "mig": ["1g.5gb"]},
        {"devices": ["0"], "queue": True},
    ):
        with pytest.raises(ValidationError):
            _request(**fields)


def test_resources_default_to_the_quota_capped_by_the_host() -> None:
    limits = _limits(cpu_limit=8, memory_limit="4G", shm_size="1G", pids_limit=100)
    resources = _resources(limits, _request(), host_cpus=2)  # type: ignore[arg-type]
    assert resources.cpus == 2.0
    assert resources.memory_bytes == 4 * GIB
    assert resources.shm_size_bytes == GIB
    assert resources.pids_limit == 100


def test_requests_above_the_quota_are_refused_not_trimmed() -> None:
    limits = _limits(cpu_limit=1, memory_limit="4G")
    with pytest.raises(QuotaExceeded, match="memory 8G is above your limit of 4G"):
        _resources(limits, _request(memory="8G"), host_cpus=4)  # type: ignore[arg-type]
    with pytest.raises(QuotaExceeded, match="CPUs"):
        _resources(limits, _request(cpus=1.5), host_cpus=4)  # type: ignore[arg-type]
    with pytest.raises(QuotaExceeded, match="limit of 1 CPUs"):
        _resources(limits, _request(cpus=5), host_cpus=4)  # type: ignore[arg-type]
    unlimited = _limits(cpu_limit=None)
    with pytest.raises(NoCapacity, match="has 4 CPUs"):
        _resources(unlimited, _request(cpus=5), host_cpus=4)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="Invalid --memory"):
        _resources(limits, _request(memory="lots"), host_cpus=4)  # type: ignore[arg-type]


def test_unlimited_memory_means_no_limit_but_a_request_is_honoured() -> None:
    limits = _limits(memory_limit=None)
    assert _resources(limits, _request(), host_cpus=2).memory_bytes is None  # type: ignore[arg-type]
    asked = _resources(limits, _request(memory="64G"), host_cpus=2)  # type: ignore[arg-type]
    assert asked.memory_bytes == 64 * GIB


def test_record_from_a_list_summary_reads_the_labels() -> None:
    summary = {
        "Id": "abc",
        "Names": ["/thesis._.1001"],
        "State": "exited",
        "Image": "sha256:1",
        "Labels": {
            L.NAME: "thesis",
            L.USER: "alice",
            L.UID: "1001",
            L.GPUS: "MIG-1,MIG-2",
            L.GPU_EQUIVALENTS: "3/7",
            L.IMAGE: "busybox",
        },
    }
    record = ContainerRecord.from_summary(summary)
    assert record.docker_name == "thesis._.1001"
    assert (record.name, record.user, record.uid) == ("thesis", "alice", 1001)
    assert record.status == "stopped"
    assert record.gpus == ("MIG-1", "MIG-2")
    assert record.gpu_equivalents == Fraction(3, 7)
    assert record.image == "busybox"


def test_openapi_documents_every_route_with_resolvable_schemas() -> None:
    doc = openapi_document()
    for route in ROUTES:
        assert route.method.lower() in doc["paths"][route.path]
    schemas = doc["components"]["schemas"]
    text = repr(doc)
    for ref in {part.split("'")[0] for part in text.split("#/components/schemas/")[1:]}:
        assert ref in schemas, ref
    assert "CreateContainerRequest" in schemas


def test_a_declared_runtime_carries_when_it_ends_from_the_lifecycle_pass() -> None:
    from ds01.daemon.views import with_lifecycle

    info = api.ContainerInfo(
        name="train", docker_name="train._.1001", user="alice", status="running",
        image="busybox", gpus=[], gpu_equivalents=0.0, created_at="", runtime_hours=4.0,
    )  # fmt: skip
    status = api.LifecycleStatus(
        container_id="c", name="train", user="alice", status="running", idle_minutes=0.0,
        stop_at="2026-12-07T12:00:00+00:00", stop_kind="idle",
        runtime_stop_at="2026-12-07T14:00:00+00:00", reason="",
    )  # fmt: skip
    assert with_lifecycle(info, status).runtime_ends_at == "2026-12-07T14:00:00+00:00"
    # Without a declared runtime the limit is max_runtime_hours: shown as the stop, not here.
    undeclared = info.model_copy(update={"runtime_hours": None})
    assert with_lifecycle(undeclared, status).runtime_ends_at is None
