"""``ds01 admin setup``: what a machine needs before ``ds01d`` can run, made idempotently.

Run as root, without ds01d. Under ``--root`` (default ``/``; tests and image builds use a
temporary directory) it makes:

- ``/etc/ds01`` (0755) with a skeleton of each configuration file that is missing, from the
  packaged defaults (``ds01/config/defaults/*.yaml``). An existing file is never touched;
- ``/var/lib/ds01`` (0700, root), ``/var/log/ds01`` (0750, group: the admin group of the
  configuration, ``ds01-admin`` by default, root while that group does not exist) and
  ``/run/ds01`` (0755, where the socket goes);
- the systemd unit ``/etc/systemd/system/ds01d.service`` (``SYSTEMD_UNIT``; the same text
  as ``deploy/systemd/ds01d.service``), rewritten when it differs;
- a link in ``/usr/local/bin`` (``--bin-dir``) to each of ds01's commands, where pip
  installed them (next to the running Python);
- where an NVIDIA driver is installed (``/proc/driver/nvidia`` or ``/sys/module/nvidia``
  under the root), or with ``gpu_door=True`` (``--close-gpu-door``): the group
  ``ds01-gpu`` (no members; ``groupadd --system``) and ``/etc/modprobe.d/ds01-nvidia.conf``,
  the driver option that makes ``/dev/nvidia*`` mode 0660 owned by root and that group, so
  that no user runs CUDA outside ds01 (``ds01.core.gpu_check``). It takes effect when the
  nvidia modules are loaded again (the notes say how); the file is rewritten when it
  differs.

A directory with the wrong mode or owner is corrected. Nothing is deleted, and nothing
that is not ds01's is replaced: a regular file where a link should go is left alone and
reported (the run then exits 1). A second run changes nothing. ``plan`` decides every step
without changing anything (``--dry-run`` shows it); ``apply`` carries the steps out.
"""

from __future__ import annotations

import grp
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Literal

from ds01.core.gpu_check import (
    GPU_DEVICE_GROUP,
    MODPROBE_FILE,
    RELOAD_HINT,
    modprobe_options,
    open_to_everyone,
)
from ds01.files import replace_file
from ds01.paths import (
    DEFAULT_CONFIG_DIR,
    DEFAULT_LOG_DIR,
    DEFAULT_SOCKET,
    DEFAULT_STATE_DIR,
    GPU_CONFIG_FILE,
    IMAGES_FILE,
    RESOURCE_LIMITS_FILE,
)

DEFAULT_BIN_DIR = "/usr/local/bin"
UNIT_PATH = "/etc/systemd/system/ds01d.service"
CONFIG_FILES = (RESOURCE_LIMITS_FILE, GPU_CONFIG_FILE, IMAGES_FILE)

#: The systemd unit of ds01d; ``{ds01d}`` is the ``ds01d`` command it runs. The file
#: deploy/systemd/ds01d.service is this text for ds01 installed in /opt/ds01/venv
#: (``make setup``); a unit test keeps the two equal.
SYSTEMD_UNIT = """\
# ds01d as a systemd service (see deploy/README.md; `ds01 admin setup` installs it).
#
#   install -m 0644 deploy/systemd/ds01d.service /etc/systemd/system/ds01d.service
#   systemctl daemon-reload && systemctl enable --now ds01d
#
# Paths are ds01d's defaults (/etc/ds01, /var/lib/ds01, /var/log/ds01, /run/ds01/ds01.sock);
# to change them, or the log level, put DS01_* variables (DS01_CONFIG_DIR, DS01_STATE_DIR,
# DS01_LOG_DIR, DS01_SOCKET, DS01_CGROUP_ROOT) in /etc/default/ds01d.

[Unit]
Description=ds01d, the ds01 GPU-sharing daemon (the only process that talks to Docker)
# Docker must answer when ds01d starts (it reconciles every container then). Wants, not
# Requires: a restart of dockerd does not take ds01d down with it.
Wants=docker.service network-online.target
After=docker.service network-online.target

[Service]
Type=simple
ExecStart={ds01d}
# SIGHUP re-reads the configuration; an invalid file is refused and the last good one kept.
ExecReload=/bin/kill -HUP $MAINPID
EnvironmentFile=-/etc/default/ds01d
Environment=PYTHONUNBUFFERED=1
Restart=on-failure
RestartSec=5s
# ds01d closes its socket, stops its loops and writes waiting events on SIGTERM.
KillSignal=SIGTERM
TimeoutStopSec=30s
# Only ds01d's own processes (e.g. `tar` packing a build context as a user) are stopped
# with it; containers belong to dockerd and keep running.
KillMode=control-group

# Directories systemd creates with these modes (ds01d sets the same itself).
RuntimeDirectory=ds01
RuntimeDirectoryMode=0755
StateDirectory=ds01
StateDirectoryMode=0700
LogsDirectory=ds01
LogsDirectoryMode=0750
ConfigurationDirectory=ds01
ConfigurationDirectoryMode=0755
UMask=0022
LimitNOFILE=65536

# Hardening. ds01d runs as root and must still: talk to /run/docker.sock; write cgroup
# files under /sys/fs/cgroup and run systemctl (aggregate limits); create and chown
# directories in users' homes (/workspace) and write notices there; run `tar` as a user
# (setuid/setgid to drop privileges); read /proc of containers' processes; open
# /dev/nvidia* through NVML. So no ProtectHome, ProtectControlGroups,
# ProtectKernelTunables (/sys read-only), PrivateDevices, ProtectClock or DeviceAllow (they
# restrict device access), and no CapabilityBoundingSet.
# ds01d bind-mounts users' directories onto staging paths in /var/lib/ds01/mounts that
# dockerd must see, so it shares the host's mount namespace: no option that gives it a
# namespace of its own (ProtectSystem, ProtectKernelModules, ProtectKernelLogs,
# ProtectHostname, PrivateTmp, PrivateMounts, ReadWritePaths, ReadOnlyPaths,
# InaccessiblePaths, TemporaryFileSystem, BindPaths, MountFlags).
NoNewPrivileges=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK

[Install]
WantedBy=multi-user.target
"""

StepKind = Literal["directory", "file", "unit", "link", "group", "driver-option"]
#: create/update: changed (or would be, in a dry run); ok: already as wanted; blocked:
#: something else is in the way and is left alone.
StepAction = Literal["create", "update", "ok", "blocked"]


@dataclass(frozen=True)
class Step:
    """One thing setup makes sure of.

    Attributes:
        kind: a directory, a configuration file, the systemd unit, a command link, the
            GPU device group or the NVIDIA driver option.
        path: where (under the root).
        action: see ``StepAction``.
        detail: what it is, or why it is blocked, for people.
        mode, uid, gid: of a directory or file made.
        content: of a file written.
        target: of a link.
    """

    kind: StepKind
    path: Path
    action: StepAction
    detail: str
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    content: str | None = None
    target: str | None = None

    @property
    def changes(self) -> bool:
        return self.action in ("create", "update")

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "path": str(self.path),
            "action": self.action,
            "detail": self.detail,
            "mode": None if self.mode is None else f"{self.mode:04o}",
            "target": self.target,
            "content": self.content if self.kind == "driver-option" else None,
        }


def render_unit(scripts_dir: Path) -> str:
    """The systemd unit of ds01d for ds01 installed with its commands in ``scripts_dir``."""
    return SYSTEMD_UNIT.replace("{ds01d}", str(scripts_dir / "ds01d"))


def _under(root: Path, absolute: str) -> Path:
    return root / absolute.lstrip("/")


def _admin_gid(config_dir: Path) -> tuple[int, list[str]]:
    """The gid of the configured admin group (root's when it does not exist), and notes."""
    from ds01.config.limits import DEFAULT_ADMIN_GROUP
    from ds01.config.loader import load_file
    from ds01.errors import Ds01Error

    name, notes = DEFAULT_ADMIN_GROUP, []
    path = config_dir / RESOURCE_LIMITS_FILE
    if path.exists():
        try:
            name = load_file(path, "resource-limits").admin_group
        except Ds01Error as exc:
            notes.append(f"{exc.message}\n(`ds01 config check` shows it; {name} assumed.)")
    try:
        return grp.getgrnam(name).gr_gid, notes
    except KeyError:
        notes.append(
            f"The admin group {name!r} does not exist, so the log directory is root's only. "
            f"Create it (`groupadd {name}`), then run setup again."
        )
        return 0, notes


def _directory(path: Path, mode: int, gid: int, what: str) -> Step:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return Step("directory", path, "create", f"{what}, {mode:04o}", mode=mode, gid=gid)
    if not stat.S_ISDIR(st.st_mode):
        return Step("directory", path, "blocked", f"{what}: something else is there")
    if stat.S_IMODE(st.st_mode) != mode or (st.st_uid, st.st_gid) != (0, gid):
        return Step(
            "directory",
            path,
            "update",
            f"{what}: mode {stat.S_IMODE(st.st_mode):04o} → {mode:04o}, owner "
            f"{st.st_uid}:{st.st_gid} → 0:{gid}",
            mode=mode,
            gid=gid,
        )
    return Step("directory", path, "ok", what, mode=mode, gid=gid)


def _skeleton(path: Path, name: str) -> Step:
    if path.exists() or path.is_symlink():
        return Step("file", path, "ok", "exists (never overwritten)")
    text = resources.files("ds01.config").joinpath(f"defaults/{name}").read_text("utf-8")
    return Step("file", path, "create", "skeleton from ds01's defaults", mode=0o644, content=text)


def _unit(path: Path, text: str) -> Step:
    try:
        current = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Step("unit", path, "create", "systemd unit of ds01d", mode=0o644, content=text)
    if current == text:
        return Step("unit", path, "ok", "systemd unit of ds01d")
    return Step(
        "unit",
        path,
        "update",
        "systemd unit of ds01d, rewritten (local changes belong in `systemctl edit ds01d`)",
        mode=0o644,
        content=text,
    )


def console_scripts() -> list[str]:
    """The names of ds01's commands (its console scripts)."""
    return sorted(
        ep.name
        for ep in metadata.distribution("ds01").entry_points
        if ep.group == "console_scripts"
    )


def _link(path: Path, target: Path) -> Step:
    if not target.exists():
        return Step("link", path, "blocked", f"{target} is not installed", target=str(target))
    if path.is_symlink():
        if os.readlink(path) == str(target):
            return Step("link", path, "ok", "command", target=str(target))
        return Step("link", path, "update", f"pointed to {os.readlink(path)}", target=str(target))
    if path.exists():
        return Step("link", path, "blocked", "a file that is not a link: left alone")
    return Step("link", path, "create", "command", target=str(target))


def plan(
    root: Path = Path("/"),
    bin_dir: str = DEFAULT_BIN_DIR,
    scripts_dir: Path | None = None,
    gpu_door: bool = False,
) -> tuple[list[Step], list[str]]:
    """Every step for ``root``, and notes for the admin; changes nothing.

    ``scripts_dir``: where ds01's commands are installed (default: next to this Python).
    ``gpu_door``: write the NVIDIA driver option even where no driver is found.
    """
    scripts = scripts_dir or Path(sys.executable).parent
    config_dir = _under(root, DEFAULT_CONFIG_DIR)
    gid, notes = _admin_gid(config_dir)
    steps = [
        _directory(config_dir, 0o755, 0, "configuration"),
        *(_skeleton(config_dir / name, name) for name in CONFIG_FILES),
        _directory(_under(root, DEFAULT_STATE_DIR), 0o700, 0, "state (SQLite)"),
        _directory(_under(root, DEFAULT_LOG_DIR), 0o750, gid, "event log"),
        _directory(_under(root, str(Path(DEFAULT_SOCKET).parent)), 0o755, 0, "socket"),
        _directory(_under(root, str(Path(UNIT_PATH).parent)), 0o755, 0, "systemd units"),
        _unit(_under(root, UNIT_PATH), render_unit(scripts)),
        _directory(_under(root, bin_dir), 0o755, 0, "commands"),
    ]
    steps += [_link(_under(root, bin_dir) / name, scripts / name) for name in console_scripts()]
    if gpu_door or nvidia_driver_present(root):
        steps += _gpu_door(root)
    return steps, notes


def nvidia_driver_present(root: Path) -> bool:
    """Whether an NVIDIA kernel module is loaded under ``root``."""
    return any(_under(root, p).exists() for p in ("/proc/driver/nvidia", "/sys/module/nvidia"))


def group_gid(root: Path, name: str) -> int | None:
    """The gid of group ``name`` (NSS on ``/``, else ``<root>/etc/group``); ``None``: none."""
    if root == Path("/"):
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            return None
    try:
        lines = _under(root, "/etc/group").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    return None


def _gpu_door(root: Path) -> list[Step]:
    """The device group and the driver option (see the module docstring)."""
    group_file = _under(root, "/etc/group")
    gid = group_gid(root, GPU_DEVICE_GROUP)
    steps: list[Step] = []
    if gid is None and root != Path("/") and not group_file.exists():
        steps.append(Step("group", group_file, "blocked", f"no {group_file} to add a group to"))
    elif gid is None:
        steps.append(
            Step("group", group_file, "create", f"group {GPU_DEVICE_GROUP}: no members, ever")
        )
    else:
        steps.append(Step("group", group_file, "ok", f"group {GPU_DEVICE_GROUP} (gid {gid})"))
    path = _under(root, MODPROBE_FILE)
    text = modprobe_options(gid if gid is not None else f"<gid of {GPU_DEVICE_GROUP}>")
    what = "NVIDIA driver option: /dev/nvidia* 0660, root and the device group only"
    try:
        current: str | None = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    if current is None:
        action: StepAction = "create"
    else:
        action = "ok" if current == text else "update"
    steps.append(Step("driver-option", path, action, what, mode=0o644, content=text))
    return steps


def apply(steps: list[Step], root: Path = Path("/")) -> list[str]:
    """Carry out the steps that change something; return notes. On the real root, with
    systemd running, a new or changed unit is loaded (``systemctl daemon-reload``)."""
    notes: list[str] = []
    for step in steps:
        if not step.changes:
            continue
        if step.kind == "directory":
            step.path.mkdir(parents=True, exist_ok=True)
            os.chown(step.path, step.uid, step.gid)
            step.path.chmod(step.mode or 0o755)
        elif step.kind == "group":
            prefix = [] if root == Path("/") else ["--prefix", str(root)]
            subprocess.run(["groupadd", "--system", *prefix, GPU_DEVICE_GROUP], check=True)
        elif step.kind == "driver-option":
            step.path.parent.mkdir(parents=True, exist_ok=True)
            gid = group_gid(root, GPU_DEVICE_GROUP)  # known now: the group step ran first
            if gid is None:
                raise RuntimeError(f"group {GPU_DEVICE_GROUP} was not created")
            replace_file(step.path, modprobe_options(gid), mode=0o644, owner=(0, 0))
        elif step.kind in ("file", "unit"):
            step.path.parent.mkdir(parents=True, exist_ok=True)
            replace_file(
                step.path, step.content or "", mode=step.mode or 0o644, owner=(step.uid, step.gid)
            )
        else:
            temporary = step.path.with_name(f".{step.path.name}.ds01-new")
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(step.target or "")
            temporary.replace(step.path)
    unit_changed = any(s.kind == "unit" and s.changes for s in steps)
    if unit_changed and root == Path("/") and Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "daemon-reload"], check=False)
        notes.append("systemd reloaded its units.")
    return notes


def gpu_door_notes(steps: list[Step], root: Path, open_nodes: list[str]) -> list[str]:
    """What the admin must still do about the driver option: reload the modules when it
    changed, or when ``open_nodes`` (device nodes still open to every user) show that the
    loaded driver runs without it."""
    option = [s for s in steps if s.kind == "driver-option"]
    if not option:
        return []
    if option[0].changes:
        return [f"{option[0].path} takes effect when the nvidia modules load. {RELOAD_HINT}"]
    if open_nodes and option[0].action == "ok":
        return [
            f"{', '.join(open_nodes)} still open to every user: the loaded driver predates "
            f"{option[0].path}. {RELOAD_HINT}"
        ]
    return []


def open_device_nodes(root: Path) -> list[str]:
    """``nvidiactl`` and ``nvidia<N>`` under ``<root>/dev`` that every user may open."""
    from ds01.runtime.host_gpu import device_nodes

    return [n.path for n in open_to_everyone(device_nodes(_under(root, "/dev")))]


__all__ = [
    "SYSTEMD_UNIT",
    "Step",
    "apply",
    "console_scripts",
    "gpu_door_notes",
    "group_gid",
    "nvidia_driver_present",
    "open_device_nodes",
    "plan",
    "render_unit",
]
