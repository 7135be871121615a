"""Known overviews (the JSON of ``GET /v1/overview``) for the dashboard's tests and
benchmark (no tests here).

Every overview is built through the API's pydantic models (``ds01.daemon.schemas``) and
dumped to JSON, so data that the daemon could not send fails here, not in the dashboard.
"""

from __future__ import annotations

from typing import Any

from ds01.daemon import schemas as api

AT = "2026-11-28T12:00:00+00:00"
MODEL = "NVIDIA A100-SXM4-40GB"
GIB = 1024**3


def _device(index: int, holder: tuple[str, str | None] | None, util: float | None) -> Any:
    return api.OverviewDevice(
        uuid=f"GPU-{index:08d}-0000-0000-0000-000000000000",
        label=str(index),
        kind="gpu",
        profile=None,
        gpu_index=index,
        model=MODEL,
        memory_mib=40960,
        gpu_equivalents=1.0,
        reserved=False,
        held_for_queue=False,
        holder=api.Holder(user=holder[0], container=holder[1]) if holder else None,
        utilization_percent=util,
        memory_used_mib=1024 * index if holder else 0,
        process_count=1 if holder else 0,
    )


def _mig(position: int, holder: tuple[str, str | None] | None) -> Any:
    return api.OverviewDevice(
        uuid=f"MIG-{position:08d}-1111-1111-1111-111111111111",
        label=f"3:1g.5gb#{position + 1}",
        kind="mig",
        profile="1g.5gb",
        gpu_index=3,
        model=MODEL,
        memory_mib=4864,
        gpu_equivalents=round(1 / 7, 6),
        reserved=False,
        held_for_queue=False,
        holder=api.Holder(user=holder[0], container=holder[1]) if holder else None,
        utilization_percent=None,
        memory_used_mib=0,
        process_count=0,
    )


def container(
    user: str,
    name: str,
    *,
    status: str = "running",
    gpus: tuple[str, ...] = (),
    gpu_equivalents: float = 0.0,
    idle_minutes: float | None = None,
    stop_at: str | None = None,
    util: float | None = None,
    uid: int = 1000,
) -> Any:
    return api.OverviewContainer(
        name=name,
        docker_name=f"{name}._.{uid}",
        user=user,
        status=status,
        image="busybox",
        gpus=list(gpus),
        gpu_equivalents=gpu_equivalents,
        created_at="2026-11-28T10:00:00+00:00",
        idle_minutes=idle_minutes,
        stop_at=stop_at,
        stop_reason=f"idle for {idle_minutes} min; stops at {stop_at}" if stop_at else None,
        gpu_utilization_percent=util,
        gpu_memory_used_mib=512 if gpus and status == "running" else None,
    )


def _user(name: str, containers: list[Any], limit: float | None = 2.0) -> Any:
    return api.OverviewUser(
        user=name,
        gpu_equivalents=round(sum(c.gpu_equivalents for c in containers), 4),
        gpu_limit=limit,
        containers=len(containers),
        max_containers=5,
        running=sum(1 for c in containers if c.status == "running"),
        queued=0,
        memory_bytes=GIB * len(containers),
        memory_committed_bytes=None,
        memory_limit_bytes=32 * GIB,
    )


def _overview(
    user: str, scope: str, containers: list[Any], users: list[Any], devices: list[Any], **kw: Any
) -> dict[str, Any]:
    held = [d for d in devices if d.holder is not None]
    queue = kw.pop("queue", [])
    overview = api.Overview(
        at=AT,
        user=user,
        is_admin=scope == "all",
        scope=scope,  # type: ignore[arg-type]
        backend="simulated",
        message=None,
        totals=api.OverviewTotals(
            devices=len(devices),
            devices_allocated=len(held),
            gpu_equivalents=round(sum(d.gpu_equivalents for d in devices), 4),
            gpu_equivalents_allocated=round(sum(d.gpu_equivalents for d in held), 4),
            containers=kw.pop("machine_containers", len(containers)),
            containers_running=kw.pop(
                "machine_running", sum(1 for c in containers if c.status == "running")
            ),
            queued_requests=len(queue),
            queued_gpu_equivalents=float(len(queue)),
        ),
        devices=devices,
        unusable=[],
        containers=containers,
        queue=queue,
        users=users,
    )
    return overview.model_dump(mode="json")


def _queue_entry(user: str, name: str, position: int) -> Any:
    return api.QueueEntryInfo(
        id=f"q{position:011d}",
        user=user,
        container=name,
        kind="create",
        request="1 whole GPU",
        state="waiting",
        submitted_at="2026-11-28T11:50:00+00:00",
        position=position,
        queue_length=1,
        status="capacity",
        reason="No device free.",
        estimated_start="2026-11-28T13:00",
        waited_seconds=600.0,
    )


def admin_overview() -> dict[str, Any]:
    """erin's view of a small machine: alice holds GPUs 0 and 1 (thesis is busy, scratch
    idle for 42 min and stopped in 18), bob a MIG slice (notebook, idle, exempt), carol
    waits in the queue; GPU 2 and the other slices are free."""
    alice_thesis = container(
        "alice", "thesis", gpus=(_device(0, None, None).uuid,), gpu_equivalents=1.0,
        idle_minutes=0.0, stop_at="2026-11-29T12:00:00+00:00", util=87.0, uid=1001,
    )  # fmt: skip
    alice_scratch = container(
        "alice", "scratch", gpus=(_device(1, None, None).uuid,), gpu_equivalents=1.0,
        idle_minutes=42.0, stop_at="2026-11-28T12:18:00+00:00", util=0.0, uid=1001,
    )  # fmt: skip
    alice_old = container("alice", "old", status="stopped", uid=1001)
    bob_notebook = container(
        "bob", "notebook", gpus=(_mig(0, None).uuid,), gpu_equivalents=round(1 / 7, 6),
        idle_minutes=5.0, uid=1002,
    ).model_copy(update={"exempt_until": "2026-12-01T00:00:00+00:00"})  # fmt: skip
    devices = [
        _device(0, ("alice", "thesis"), 87.0),
        _device(1, ("alice", "scratch"), 0.0),
        _device(2, None, 0.0),
        _mig(0, ("bob", "notebook")),
        _mig(1, None),
    ]
    containers = [alice_old, alice_scratch, alice_thesis, bob_notebook]
    users = [
        _user("alice", [alice_old, alice_scratch, alice_thesis]),
        _user("bob", [bob_notebook], limit=None),
        _user("carol", []).model_copy(update={"queued": 1}),
    ]
    return _overview(
        "erin", "all", containers, users, devices, queue=[_queue_entry("carol", "big", 1)]
    )


def user_overview() -> dict[str, Any]:
    """bob's view of the same machine: every device, alice's by her name only; his own
    container, usage and (no) queue entries; the machine's totals."""
    admin = admin_overview()
    devices = [api.OverviewDevice.model_validate(d) for d in admin["devices"]]
    for device in devices:
        if device.holder is not None and device.holder.user != "bob":
            device.holder.container = None
    bob = [api.OverviewContainer.model_validate(c) for c in admin["containers"]]
    bob = [c for c in bob if c.user == "bob"]
    users = [api.OverviewUser.model_validate(u) for u in admin["users"] if u["user"] == "bob"]
    return _overview("bob", "own", bob, users, devices) | {"totals": admin["totals"]}


def large_overview(count: int = 300, users: int = 30, gpus: int = 8) -> dict[str, Any]:
    """An admin's view of ``count`` containers of ``users`` users on ``gpus`` GPUs: the
    first ``gpus`` containers hold one GPU each, a third of the rest are stopped, idle
    times and stop times vary."""
    devices = [_device(i, None, None) for i in range(gpus)]
    containers = []
    for n in range(count):
        owner = f"user{n % users:02d}"
        holds = n < gpus
        if holds:
            devices[n] = _device(n, (owner, f"job{n:03d}"), float(n * 7 % 100))
        status = "stopped" if not holds and n % 3 == 0 else "running"
        containers.append(
            container(
                owner, f"job{n:03d}", status=status,
                gpus=(devices[n].uuid,) if holds else (), gpu_equivalents=1.0 if holds else 0.0,
                idle_minutes=float(n % 90) if status == "running" else None,
                stop_at=f"2026-11-28T{13 + n % 10:02d}:{n % 60:02d}:00+00:00"
                if status == "running" else None,
                util=float(n * 7 % 100) if holds else None, uid=2000 + n % users,
            )
        )  # fmt: skip
    by_user: dict[str, list[Any]] = {}
    for c in containers:
        by_user.setdefault(c.user, []).append(c)
    rows = [_user(name, mine) for name, mine in sorted(by_user.items())]
    containers.sort(key=lambda c: (c.user, c.name))
    return _overview("erin", "all", containers, rows, devices)


def cluster_overview() -> dict[str, Any]:
    """A login node's overview of the Slurm test cluster (``ds01.core.slurm_view``), from
    the answers recorded in ``slurm_data``, as ``ds01-dashboard`` fetches it there."""
    from ds01.core import slurm_view
    from slurm_data import NODES, SQUEUE, SQUEUE_AT

    return slurm_view.cluster_overview(
        slurm_view.parse_nodes(NODES), slurm_view.parse_containers(SQUEUE, SQUEUE_AT), "alice", AT
    )
