"""``ds01 admin doctor``: set-up risks an admin should know about.

Each check returns a ``Finding``; none changes anything. The checks read the host as root
does (NSS, the Docker socket's mode, the daemon's own state), so they run inside ds01d and
are served to admins only.

Levels: ``ok``; ``warning`` (ds01 works, but something weakens it); ``critical`` (a user can
bypass ds01, or ds01 cannot do its job). The command exits 0 when every finding is ok,
1 with warnings, 2 with anything critical.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ds01.config.loader import load_config
from ds01.daemon.schemas import DoctorFinding, DoctorReport
from ds01.errors import Ds01Error, PermissionDenied

if TYPE_CHECKING:
    from ds01.daemon.identity import Caller
    from ds01.daemon.service import Ds01Service

Level = Literal["ok", "warning", "critical"]
DOCKER_SOCKET = Path("/var/run/docker.sock")
DOCKER_GROUP = "docker"


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    message: str
    hint: str = ""


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


def exit_code(findings: Iterable[Finding]) -> int:
    levels = {f.level for f in findings}
    return 2 if "critical" in levels else 1 if "warning" in levels else 0


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

    findings = run_checks(
        [
            check_root,
            lambda: check_docker_group(docker_group_members()),
            check_docker_socket,
            lambda: check_admin_group(config.limits.admin_group),
            lambda: check_config(service.paths.config_dir),
            audit_log,
            gpus,
        ]
    )
    return DoctorReport(
        findings=[DoctorFinding(**vars(f)) for f in findings], exit_code=exit_code(findings)
    )
