"""``ds01 admin doctor``: set-up risks an admin should know about.

Each check returns a ``Finding``; none changes anything. The checks read the host as root
does (NSS, the Docker socket's mode, the daemon's own state), so they run inside ds01d and
are served to admins only. They cover: ds01d's user, users in the docker group, the Docker
socket's mode, whether the Docker engine answers (asked with a short timeout, so a stopped
or hung engine is reported in seconds), the cgroup version and Docker's cgroup driver, the
NVIDIA Container Toolkit (with the NVML backend only: ``nvidia-container-runtime-hook`` on
dockerd's PATH, or CDI specs), the modes of the ``/dev/nvidia*`` nodes (open to every user,
they let anyone run CUDA outside every quota), the admin group, the configuration
on disk, the API socket, the audit log, the state database and its backup, the GPUs,
whether disk limits are enforced by Docker's storage driver or measured by the lifecycle
loop, the free space for ds01d's own files, and each background loop (lifecycle, GPU queue,
OOM scan, energy, disk measurement): failing since when and why, or stalled
(``ds01.daemon.health``), and which images of ``images.yaml`` (the starter first)
are not on the machine yet.

Levels: ``ok``; ``warning`` (ds01 works, but something weakens it); ``critical`` (a user can
bypass ds01, or ds01 cannot do its job). The command exits 0 when every finding is ok,
1 with warnings, 2 with anything critical. When ds01d itself does not answer, the CLI says
so (critical) and runs the checks it can without it (``local_findings``).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ds01.config.loader import load_config
from ds01.core.disk import human_bytes
from ds01.core.findings import Finding, exit_code
from ds01.core.gpu_check import DockerGpuAccess, check_device_nodes, check_docker_gpu_access
from ds01.core.image_presence import missing_images
from ds01.core.state_recovery import BackupInfo
from ds01.daemon.health import LoopHealth
from ds01.daemon.schemas import DoctorFinding, DoctorReport
from ds01.daemon.state_backup import DEFAULT_INTERVAL_SECONDS as BACKUP_INTERVAL_SECONDS
from ds01.errors import Ds01Error, PermissionDenied
from ds01.model.units import format_duration
from ds01.runtime.host_gpu import DOCKER_PID_FILE, device_nodes, docker_gpu_access
from ds01.runtime.storage_fault import mount_point
from ds01.runtime.store_files import backup_info

if TYPE_CHECKING:
    from ds01.daemon.identity import Caller
    from ds01.daemon.networks import UserNetworks
    from ds01.daemon.service import Ds01Service
    from ds01.runtime.cgroups import CgroupManager

DOCKER_SOCKET = Path("/var/run/docker.sock")
DOCKER_GROUP = "docker"
#: Seconds the doctor waits for the Docker engine before calling it down.
DOCKER_TIMEOUT_SECONDS = 3.0
#: A loop is stalled when no pass succeeded for this many intervals plus the margin.
STALL_INTERVALS = 3
STALL_MARGIN_SECONDS = 60.0
#: The file system of ds01d's files counts as full below this many free bytes…
FULL_BELOW_BYTES = 256 * 1024
#: …and as low on space below this share of its size.
LOW_SPACE_FRACTION = 0.05


def docker_group_members(group_name: str = DOCKER_GROUP) -> list[str]:
    """Users who can use the Docker socket directly: listed members and primary members."""
    try:
        group = grp.getgrnam(group_name)
    except KeyError:
        return []
    members = set(group.gr_mem)
    members.update(p.pw_name for p in pwd.getpwall() if p.pw_gid == group.gr_gid)
    return sorted(members)


def check_docker_group(members: Iterable[str]) -> Finding:
    users = [m for m in members if m != "root"]
    if not users:
        return Finding("docker-group", "ok", "No user is in the docker group.")
    return Finding(
        "docker-group",
        "critical",
        f"Users in the docker group can bypass every quota (it is root-equivalent): "
        f"{', '.join(users)}.",
        f"Remove them: gpasswd -d USER {DOCKER_GROUP}. They use ds01 instead.",
    )


def check_docker_socket(path: Path = DOCKER_SOCKET) -> Finding:
    try:
        st = path.stat()
    except FileNotFoundError:
        return Finding("docker-socket", "critical", f"{path} does not exist: is dockerd running?")
    if st.st_mode & stat.S_IWOTH:
        return Finding(
            "docker-socket",
            "critical",
            f"{path} is writable by everyone (mode {stat.filemode(st.st_mode)}): any user is root.",
            f"chmod 660 {path}",
        )
    return Finding(
        "docker-socket", "ok", f"{path} is not world-writable ({stat.filemode(st.st_mode)})."
    )


def check_mount_namespace(pid_file: Path = DOCKER_PID_FILE, own_pid: int | None = None) -> Finding:
    """ds01d and dockerd must share a mount namespace: dockerd mounts the staging paths
    where ds01d mounts users' directories (``ds01.runtime.staging``)."""
    try:
        docker_pid = int(pid_file.read_text(encoding="ascii").strip())
        theirs = os.readlink(f"/proc/{docker_pid}/ns/mnt")
        ours = os.readlink(f"/proc/{own_pid or os.getpid()}/ns/mnt")
    except (OSError, ValueError) as exc:
        return Finding(
            "mount-namespace", "warning", f"Cannot compare ds01d's mount namespace with "
            f"dockerd's ({pid_file}: {exc}).",
        )  # fmt: skip
    if theirs == ours:
        return Finding("mount-namespace", "ok", "ds01d and dockerd share a mount namespace.")
    return Finding(
        "mount-namespace",
        "critical",
        f"ds01d runs in another mount namespace ({ours}) than dockerd ({theirs}): dockerd "
        "does not see the staging mounts of users' directories, so containers get an empty "
        "/workspace and /data.",
        "Remove ProtectSystem, PrivateTmp, ReadWritePaths and other namespacing options from "
        "ds01d's unit (`systemctl edit ds01d`), then restart it.",
    )


def check_docker_engine(
    probe: Callable[[], Mapping[str, Any]],
) -> tuple[Finding, Mapping[str, Any]]:
    """Whether the engine answers ``probe`` (its ``/info``, asked with a short timeout);
    the info, or ``{}`` when it does not answer."""
    try:
        info = probe()
    except Exception as exc:
        message = getattr(exc, "message", None) or str(exc)
        return (
            Finding(
                "docker",
                "critical",
                f"The Docker engine does not answer: {message}. ds01 can create, start or "
                "stop no container until it does.",
                "Start it (`systemctl start docker`, or `scripts/ensure-docker.sh`), then run "
                "the doctor again.",
            ),
            {},
        )
    version = info.get("ServerVersion") or "?"
    running = info.get("ContainersRunning")
    return (
        Finding("docker", "ok", f"The Docker engine {version} answers ({running} running)."),
        info,
    )


def check_cgroups(info: Mapping[str, Any], cgroups: CgroupManager) -> Finding:
    """The cgroup version ds01 writes totals in, and whether Docker's cgroup driver is the one
    ds01d started with (``info``: Docker's, ``{}`` when it did not answer)."""
    if cgroups.version is None:
        return Finding(
            "cgroups",
            "warning",
            f"No cgroup v1 memory hierarchy or cgroup v2 under {cgroups.root}: the totals of "
            "aggregate: cannot be enforced.",
            "Mount the cgroup file system, or start ds01d with --cgroup-root.",
        )
    driver = info.get("CgroupDriver")
    engine_version = info.get("CgroupVersion")
    if driver and driver != cgroups.driver:
        return Finding(
            "cgroups",
            "critical",
            f"Docker now uses the {driver} cgroup driver, but ds01d started with "
            f"{cgroups.driver}: containers land under the wrong cgroup parents.",
            "Restart ds01d (`systemctl restart ds01d`).",
        )
    ours = cgroups.version.removeprefix("v")
    if engine_version and str(engine_version) != ours:
        return Finding(
            "cgroups",
            "warning",
            f"Docker reports cgroup v{engine_version}, ds01 found cgroup {cgroups.version} "
            f"under {cgroups.root}.",
            "Check --cgroup-root (or DS01_CGROUP_ROOT) of ds01d.",
        )
    return Finding(
        "cgroups", "ok", f"cgroup {cgroups.version}, Docker's cgroup driver {cgroups.driver}."
    )


def check_nvidia_toolkit(backend: str, access: Callable[[], DockerGpuAccess]) -> Finding:
    """With the NVML backend: whether Docker can hand GPUs to containers
    (``ds01.core.gpu_check``: the hook on dockerd's PATH, or CDI). Simulated GPUs need no
    toolkit."""
    if backend != "nvml":
        return Finding(
            "nvidia-toolkit",
            "ok",
            f"GPUs are {backend}: the NVIDIA Container Toolkit is not needed (containers get "
            "stand-in device nodes).",
        )
    return check_docker_gpu_access(access())


def check_loop(health: LoopHealth) -> Finding:
    """Whether one background loop's passes succeed (``ds01.daemon.health``).

    ``warning`` at once when the latest pass failed (naming the fault), and when no pass
    has succeeded for ``STALL_INTERVALS`` intervals plus ``STALL_MARGIN_SECONDS`` (stalled:
    failing, or hung in a pass)."""
    interval = health.interval_seconds
    every = f"every {format_duration(interval)}"
    stall_after = STALL_INTERVALS * interval + STALL_MARGIN_SECONDS
    work = health.work
    if health.since_success_seconds is None:
        age, last = health.running_seconds, "none yet"
    else:
        age = health.since_success_seconds
        last = f"{format_duration(age)} ago"
    failing = ""
    if health.fault is not None:
        since = health.fault_since.strftime("%H:%M:%S UTC") if health.fault_since else "?"
        failing = f"{health.failures} failed in a row since {since}: {health.fault}"
    hint = "ds01d logs each fault once when it begins and once when it ends; it retries by itself."
    if age > stall_after:
        what = failing or "none finished: a pass may be hung"
        return Finding(
            health.check,
            "warning",
            f"The {work} is stalled: no pass succeeded for {format_duration(age)} ({every}); "
            f"{health.consequence}. {what[:1].upper()}{what[1:]}",
            hint,
        )
    if failing:
        return Finding(
            health.check,
            "warning",
            f"The {work} fails ({every}; last success: {last}); {health.consequence}. "
            f"{failing[:1].upper()}{failing[1:]}",
            hint,
        )
    if health.since_success_seconds is None:
        return Finding(
            health.check,
            "ok",
            f"No {work} has finished yet; it started {format_duration(age)} ago ({every}).",
        )
    return Finding(health.check, "ok", f"The last {work} succeeded {last} ({every}).")


def check_storage(directories: Iterable[Path]) -> Finding:
    """Free space on the file systems of ds01d's state and log directories."""
    by_device: dict[int, tuple[list[Path], int, int]] = {}
    for directory in directories:
        device = directory.stat().st_dev
        if device in by_device:
            by_device[device][0].append(directory)
            continue
        st = os.statvfs(directory)  # free: what root may still use
        by_device[device] = ([directory], st.f_bfree * st.f_frsize, st.f_blocks * st.f_frsize)
    disks = list(by_device.values())
    full = [d for d in disks if d[1] < FULL_BELOW_BYTES]
    low = [d for d in disks if d not in full and d[1] < LOW_SPACE_FRACTION * d[2]]

    def said(entries: list[tuple[list[Path], int, int]]) -> str:
        return "; ".join(
            f"{', '.join(map(str, paths))}: {human_bytes(free)} of {human_bytes(total)} free "
            f"on {mount_point(paths[0])}"
            for paths, free, total in entries
        )

    if full:
        return Finding(
            "storage",
            "critical",
            f"The disk of ds01d's files is full ({said(full)}): creates and every change "
            "ds01d records are refused until there is room.",
            "Free space there (`df -h`, `du -xsh`); ds01d retries by itself.",
        )
    if low:
        return Finding(
            "storage",
            "warning",
            f"Little space left for ds01d's files ({said(low)}).",
            "Free space there before it fills up (`df -h`, `du -xsh`).",
        )
    return Finding("storage", "ok", f"Space for ds01d's files: {said(disks)}.")


def lifecycle_not_running() -> Finding:
    return Finding(
        "lifecycle",
        "warning",
        "The lifecycle loop does not run in this ds01d: idle and over-long containers are not "
        "reclaimed.",
    )


def check_disk_limits(mode: str, reason: str, lifecycle_running: bool) -> Finding:
    """Which mode disk limits are in (``ds01.daemon.disk.StorageMode``) and why."""
    if mode == "enforced":
        return Finding(
            "disk",
            "ok",
            f"Disk limits are enforced by Docker's storage driver ({reason}); the lifecycle "
            "loop measures anonymous volumes and the per-user totals.",
        )
    if not lifecycle_running:
        return Finding(
            "disk",
            "warning",
            f"Disk limits are measured by the lifecycle loop ({reason}), but the loop does "
            "not run in this ds01d: disk limits are not enforced.",
        )
    return Finding(
        "disk",
        "ok",
        f"Disk limits are measured by the lifecycle loop (warned, then stopped): {reason}. "
        "For a hard cap, put /var/lib/docker on xfs mounted with pquota (overlay2), then "
        "restart Docker and ds01d.",
    )


def check_firewall(networks: UserNetworks) -> Finding:
    """Whether ds01's firewall rules guard every user network (``ds01.daemon.networks``)."""
    hint = (
        "Install iptables (apt-get install iptables) and restart ds01d; until then ds01 "
        "creates and starts no container."
    )
    try:
        missing = networks.unguarded()
    except Ds01Error as exc:
        return Finding(
            "firewall", "critical", f"ds01's firewall rules cannot be read: {exc.message}.", hint
        )
    if missing or networks.firewall_error:
        why = networks.firewall_error or "rules missing for " + ", ".join(missing)
        return Finding(
            "firewall",
            "critical",
            f"Other users may reach containers' addresses from the host: {why}.",
            hint if networks.firewall_error else "Restart ds01d: it installs them again.",
        )
    return Finding(
        "firewall",
        "ok",
        "Only each network's owner and root reach containers from the host (iptables DS01).",
    )


def check_api_socket(path: Path) -> Finding:
    """ds01d's socket: there, and open to every user (who they are comes from the kernel)."""
    try:
        st = path.stat()
    except OSError as exc:
        return Finding(
            "api-socket", "critical", f"ds01d's socket {path} cannot be used: {exc.strerror}."
        )
    if not stat.S_ISSOCK(st.st_mode):
        return Finding("api-socket", "critical", f"{path} is not a socket.")
    directory = path.parent.stat().st_mode
    if not st.st_mode & stat.S_IWOTH or not directory & stat.S_IXOTH:
        return Finding(
            "api-socket",
            "warning",
            f"Users cannot reach ds01d's socket {path} (mode {stat.filemode(st.st_mode)}, "
            f"directory {stat.filemode(directory)}).",
            f"chmod 666 {path}; chmod 755 {path.parent} (restarting ds01d sets both).",
        )
    return Finding("api-socket", "ok", f"ds01d listens on {path}, open to every user.")


def local_findings(config_dir: Path) -> list[Finding]:
    """What the CLI can check itself when ds01d does not answer (as root: everything it
    reads is readable then)."""
    return run_checks([lambda: check_config(config_dir), check_docker_socket])


def check_admin_group(name: str) -> Finding:
    try:
        members = grp.getgrnam(name).gr_mem
    except KeyError:
        return Finding(
            "admin-group",
            "warning",
            f"The admin group {name!r} does not exist: only root can administer ds01.",
            f"groupadd {name}, or set admin_group in resource-limits.yaml.",
        )
    who = ", ".join(members) or "no members"
    return Finding("admin-group", "ok", f"Admin group {name!r}: {who}.")


def check_config(config_dir: Path) -> Finding:
    try:
        load_config(config_dir)
    except Ds01Error as exc:
        return Finding(
            "config",
            "critical",
            f"The configuration on disk is invalid; ds01d runs on the last good one: {exc.message}",
            "Fix the file, then check it with `ds01 config check`.",
        )
    return Finding("config", "ok", f"The configuration in {config_dir} is valid.")


def check_state(
    damage: str | None, backup: BackupInfo | None, backup_interval_seconds: float
) -> Finding:
    """The state database: damage found while running, and the age of its backup (overdue
    after three intervals, plus a minute of slack)."""
    if damage is not None:
        return Finding("state", "critical", damage)
    if backup is None:
        return Finding(
            "state",
            "warning",
            "The state database has no backup yet.",
            "ds01d writes one at start and after changes; its log says why it cannot.",
        )
    age = format_duration(backup.age_seconds)
    if backup.age_seconds > 3 * backup_interval_seconds + 60:
        return Finding(
            "state",
            "warning",
            f"The state database's backup is {age} old ({backup.path}).",
            "ds01d's log says why it cannot write a new one.",
        )
    return Finding("state", "ok", f"The state database is in use; its backup is {age} old.")


def check_registry_images(
    entries: Iterable[tuple[str, str]], starter: str | None, is_present: Callable[[str], bool]
) -> list[Finding]:
    """A warning for each registry entry (of ``images.yaml``, not the AIME imports) whose
    image is not on this machine, the starter first; one ok finding when all are here."""
    listed = list(entries)
    missing = missing_images(listed, starter, is_present)
    if not missing:
        return [
            Finding(
                "registry-images",
                "ok",
                f"Every image of images.yaml is on this machine ({len(listed)}).",
            )
        ]
    return [
        Finding("starter-image" if m.starter else "registry-image", "warning", m.message, m.hint)
        for m in missing
    ]


def check_root() -> Finding:
    if os.geteuid() == 0:
        return Finding("daemon-user", "ok", "ds01d runs as root.")
    return Finding("daemon-user", "critical", "ds01d does not run as root.")


def run_checks(checks: Iterable[Callable[[], Finding]]) -> list[Finding]:
    """Run every check; a check that crashes is itself a finding, never a crash."""
    findings = []
    for check in checks:
        try:
            findings.append(check())
        except Exception as exc:  # a doctor reports, it never fails
            name = getattr(check, "__name__", "check")
            findings.append(Finding(name, "warning", f"could not run: {exc}"))
    return findings


def diagnose(service: Ds01Service, caller: Caller) -> DoctorReport:
    """Every check, for admins only (the answer names users and files)."""
    if not caller.is_admin:
        refusal = PermissionDenied("Only admins may run the doctor.")
        service.log_refusal(caller, "auth.denied", "admin/doctor", refusal)
        raise refusal
    config = service.config()
    health = service.events.health()

    def audit_log() -> Finding:
        if health.get("writable", True):
            return Finding("audit-log", "ok", f"The event log {health.get('path')} is writable.")
        return Finding(
            "audit-log",
            "critical",
            f"The event log cannot be written: {health.get('last_error')}; "
            f"{health.get('buffered')} event(s) wait in memory.",
            "Free space or fix the log directory; the events are written once it works.",
        )

    def gpus() -> Finding:
        inventory = service.backend.inventory()
        if inventory.devices:
            return Finding(
                "gpus", "ok", f"{len(inventory.devices)} device(s) ({inventory.backend})."
            )
        return Finding("gpus", "warning", inventory.message or "No GPU device to allocate.")

    def registry_images() -> list[Finding]:
        if docker.level == "critical":
            return []  # the engine does not answer: nothing to ask it
        try:
            return check_registry_images(
                ((e.name, e.image) for e in config.images.images),
                config.images.starter,
                lambda image: service.runtime.local_image(image) is not None,
            )
        except Ds01Error as exc:
            return [Finding("registry-images", "warning", f"could not run: {exc.message}")]

    docker, info = check_docker_engine(
        lambda: service.runtime.probe(timeout_seconds=DOCKER_TIMEOUT_SECONDS)
    )
    checks: list[Callable[[], Finding]] = [
        check_root,
        lambda: check_docker_group(docker_group_members()),
        check_docker_socket,
        check_mount_namespace,
        lambda: check_cgroups(info, service.cgroups),
        lambda: check_nvidia_toolkit(
            config.gpus.backend, lambda: docker_gpu_access(info.get("Runtimes") or {})
        ),
        lambda: check_device_nodes(device_nodes()),
        lambda: check_admin_group(config.limits.admin_group),
        lambda: check_config(service.paths.config_dir),
        lambda: check_api_socket(service.paths.socket),
        lambda: check_firewall(service.networks),
        audit_log,
        lambda: check_state(
            service.store.damage, backup_info(service.store.path), BACKUP_INTERVAL_SECONDS
        ),
        gpus,
        lambda: check_disk_limits(
            service.status.storage.mode,
            service.status.storage.reason,
            service.status.lifecycle_pass is not None,
        ),
        lambda: check_storage((service.paths.state_dir, service.paths.log_dir)),
    ]
    if "lifecycle" not in service.status.loops.checks():
        checks.append(lifecycle_not_running)
    checks.extend(partial(check_loop, health) for health in service.status.loops.health())
    findings = [docker, *run_checks(checks), *registry_images()]
    return DoctorReport(
        findings=[DoctorFinding(**vars(f)) for f in findings], exit_code=exit_code(findings)
    )
