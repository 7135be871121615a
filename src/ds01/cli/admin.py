"""The admin commands: ``ds01 admin add-user``, ``remove-user``, ``setup``, ``doctor``,
``gpu-check``, ``mig plan|apply`` and ``state status|restore``.

``setup`` and ``state`` work on the machine itself (as root, no daemon needed: ``setup``
prepares what ds01d needs, ``state`` repairs its database while it is stopped); the
others are clients of ds01d, which alone changes users' directories, cgroups, containers,
GPUs and the configuration, and serves admins only (root or the admin group).

Imported at every start of the CLI (the command table), so standard library only at module
level; what a command needs beyond that is imported when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys

from ds01.cli import render
from ds01.cli.client import Ds01Client
from ds01.cli.command import Command
from ds01.cli.parsing import add_json_flag
from ds01.errors import DaemonUnavailable, InvalidInput, PermissionDenied
from ds01.exitcodes import ExitCode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

#: Seconds remove-user may take in ds01d: archiving a large workspace takes a while.
REMOVE_USER_TIMEOUT_SECONDS = 6 * 3600
#: Seconds gpu-check may take in ds01d: its test container runs for up to a minute.
GPU_CHECK_TIMEOUT_SECONDS = 120


def _dry_run_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="change nothing; show what would")


def _steps(result: dict[str, Any]) -> None:
    """The actions of an add-user or remove-user answer, then its notes."""
    verb = "Would" if result["dry_run"] else "Done"
    for action in result["actions"]:
        render.echo(f"  {verb}: {action}")
    for note in result["notes"]:
        render.echo(f"  Note: {note}")


# -- add-user -------------------------------------------------------------------------------------


def _configure_add_user(p: argparse.ArgumentParser) -> None:
    p.add_argument("user", metavar="USER", help="a Unix user of this machine")
    p.add_argument(
        "--group",
        "-g",
        metavar="GROUP",
        help="a group of resource-limits.yaml to add them to (default: an entry of their own)",
    )
    _dry_run_flag(p)
    add_json_flag(p)


def _run_add_user(args: argparse.Namespace) -> None:
    body = {"user": args.user, "group": args.group, "dry_run": args.dry_run}
    result = Ds01Client().request("POST", "/v1/admin/users", body=body)
    if render.emitted_json(args.json, result):
        return
    groups = ", ".join(result["groups"]) or "none: defaults apply"
    if result["dry_run"]:
        render.echo(f"Dry run: nothing changed. Adding {result['user']} would do this.")
    else:
        render.ok(f"{result['user']} (uid {result['uid']}) can use ds01; groups: {groups}.")
    _steps(result)
    if not result["dry_run"]:
        render.echo(f"  Their limits: check-limits --explain --user {result['user']}")


# -- remove-user ---------------------------------------------------------------------------------


def _configure_remove_user(p: argparse.ArgumentParser) -> None:
    p.add_argument("user", metavar="USER", help="whose containers, requests and entries go")
    data = p.add_mutually_exclusive_group()
    data.add_argument(
        "--keep-data",
        action="store_true",
        help="keep their files as they are (the default: nothing is deleted)",
    )
    data.add_argument(
        "--archive",
        metavar="DIR",
        help="first pack ~USER/workspace into DIR/ds01-USER-workspace-TIME.tar.gz (root only)",
    )
    _dry_run_flag(p)
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    add_json_flag(p)


def _remove_user_call(client: Ds01Client, args: argparse.Namespace, dry_run: bool) -> Any:
    from urllib.parse import quote  # not at import: --help needs none of it

    archive = os.path.abspath(args.archive) if args.archive else None
    return client.request(
        "DELETE",
        f"/v1/admin/users/{quote(args.user, safe='')}",
        query={"archive": archive, "dry_run": dry_run},
    )


def _run_remove_user(args: argparse.Namespace) -> None:
    client = Ds01Client(timeout=REMOVE_USER_TIMEOUT_SECONDS)
    if not args.dry_run and not args.yes:
        if args.json or not sys.stdin.isatty():
            raise InvalidInput("remove-user changes a lot: confirm with --yes (or --dry-run).")
        plan = _remove_user_call(client, args, dry_run=True)
        render.echo(f"Removing {plan['user']} from ds01 will do this:")
        _steps(plan)
        answer = input(f"Remove {plan['user']} from ds01 now? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            render.echo("Nothing changed.")
            return
    result = _remove_user_call(client, args, dry_run=args.dry_run)
    if render.emitted_json(args.json, result):
        return
    if result["dry_run"]:
        render.echo(f"Dry run: nothing changed. Removing {result['user']} would do this.")
    else:
        freed = render.number(result["freed_gpu_equivalents"])
        render.ok(
            f"Removed {result['user']} from ds01: {len(result['containers'])} container(s) "
            f"removed ({freed} GPU-equivalents freed), {len(result['cancelled_requests'])} "
            "queued request(s) cancelled."
        )
    _steps(result)
    if result["archive"]:
        render.echo(f"  Archive: {result['archive']} (owner root, mode 0600)")


# -- setup ----------------------------------------------------------------------------------------


def _configure_setup(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--root",
        metavar="DIR",
        default="/",
        help="make everything under DIR instead of / (an image being built, tests)",
    )
    p.add_argument(
        "--bin-dir",
        metavar="DIR",
        default="/usr/local/bin",
        help="where the commands are linked (on PATH) [/usr/local/bin]",
    )
    p.add_argument(
        "--close-gpu-door",
        action="store_true",
        help="write the NVIDIA driver option (/dev/nvidia* 0660, group ds01-gpu) even where "
        "no NVIDIA driver is found (it is written anyway where one is)",
    )
    _dry_run_flag(p)
    add_json_flag(p)


def _run_setup(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ds01 import host_setup

    root = Path(os.path.abspath(args.root))
    if os.geteuid() != 0 and not args.dry_run:
        raise PermissionDenied("ds01 admin setup must run as root (or with --dry-run).")
    steps, notes = host_setup.plan(root, args.bin_dir, gpu_door=args.close_gpu_door)
    if not args.dry_run:
        notes += host_setup.apply(steps, root)
    notes += host_setup.gpu_door_notes(steps, root, host_setup.open_device_nodes(root))
    blocked = [s for s in steps if s.action == "blocked"]
    changed = [s for s in steps if s.changes]
    if args.json:
        render.emit_json(
            {
                "root": str(root),
                "dry_run": args.dry_run,
                "steps": [s.to_dict() for s in steps],
                "changed": len(changed),
                "notes": notes,
            }
        )
    else:
        words = {"create": "create", "update": "update", "ok": "ok", "blocked": "BLOCKED"}
        for step in steps:
            target = f" -> {step.target}" if step.kind == "link" and step.target else ""
            render.echo(f"{words[step.action]:<8} {step.path}{target}  ({step.detail})")
            if step.kind == "driver-option" and step.changes and step.content:
                for line in step.content.splitlines():
                    render.echo(f"           {line}")
        for note in notes:
            render.echo(f"Note: {note}")
        if args.dry_run:
            render.echo(f"Dry run: {len(changed)} change(s) would be made; nothing changed.")
        elif changed:
            render.ok(f"Set up: {len(changed)} change(s), {len(steps) - len(changed)} in place.")
        else:
            render.ok("Everything is in place already; nothing changed.")
        if root == Path("/") and not args.dry_run:
            render.echo(
                "Next: `systemctl enable --now ds01d` (without systemd: run `ds01d`), "
                "then `ds01 admin doctor`."
            )
    if blocked:
        raise SystemExit(int(ExitCode.ERROR))


# -- doctor ---------------------------------------------------------------------------------------


def _run_doctor(args: argparse.Namespace) -> None:
    try:
        report = Ds01Client().request("GET", "/v1/admin/doctor")
    except DaemonUnavailable as exc:
        report = _doctor_without_daemon(exc.message)
    if args.json:
        render.emit_json(report)
    else:
        _print_findings(report["findings"])
    raise SystemExit(report["exit_code"])


def _print_findings(findings: list[dict[str, Any]]) -> None:
    marks = {"ok": render.style("ok", "green"), "warning": render.style("WARN", "yellow")}
    for f in findings:
        mark = marks.get(f["level"]) or render.style("CRIT", "red", "bold")
        render.echo(f"{mark:>4}  {f['check']}: {f['message']}")
        if f["hint"] and f["level"] != "ok":
            render.echo(f"      → {f['hint']}")


def _ds01d_down(reason: str) -> Any:
    from ds01.core.findings import Finding

    return Finding(
        "ds01d",
        "critical",
        reason,
        "Start it: `systemctl start ds01d` (without systemd: `ds01d`); its log says why "
        "it stopped (`journalctl -u ds01d`).",
    )


def _doctor_without_daemon(reason: str) -> dict[str, Any]:
    """The report when ds01d does not answer: that, and what can be checked without it."""
    from pathlib import Path

    from ds01.core.findings import exit_code
    from ds01.daemon.doctor import local_findings
    from ds01.paths import config_dir

    findings = [_ds01d_down(reason), *local_findings(Path(config_dir()))]
    return {"findings": [vars(f) for f in findings], "exit_code": exit_code(findings)}


# -- gpu-check ------------------------------------------------------------------------------------


def _configure_gpu_check(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--image",
        metavar="REF",
        help="image of the test container, on this machine, with a C library [the starter "
        "image of images.yaml]",
    )
    add_json_flag(p)


def _run_gpu_check(args: argparse.Namespace) -> None:
    try:
        report = Ds01Client(timeout=GPU_CHECK_TIMEOUT_SECONDS).request(
            "GET", "/v1/admin/gpu-check", query={"image": args.image}
        )
    except DaemonUnavailable as exc:
        report = _gpu_check_without_daemon(exc.message)
    if args.json:
        render.emit_json(report)
        raise SystemExit(report["exit_code"])
    driver = report.get("driver") or {}
    versions = [f"{k} {v}" for k, v in driver.items() if v and k != "kernel"]
    render.echo(f"Driver: {', '.join(versions) or driver.get('kernel') or 'none'}")
    render.echo(f"Backend: {report.get('backend', '?')}")
    if report.get("devices"):
        render.table(
            ["GPU", "KIND", "PROFILE", "GPU-EQ", "UUID", "UTIL %", "MEM MiB", "PROCS"],
            [
                [
                    d["gpu_index"],
                    d["kind"],
                    d["profile"],
                    d["gpu_equivalents"],
                    d["uuid"],
                    d["telemetry"].get("gpu_util_percent"),
                    _used_of(d["telemetry"]),
                    d["telemetry"].get("process_count"),
                ]
                for d in report["devices"]
            ],
        )
    for node in report.get("device_nodes") or ():
        render.echo(f"{node['path']}  {node['mode']}  group {node['group'] or node['gid']}")
    test = report.get("container_test")
    if test and test.get("output"):
        render.echo(f"Test container on {test['device_uuid']}: nvidia-smi -L said:")
        for line in test["output"].strip().splitlines():
            render.echo(f"  {line}")
    _print_findings(report["findings"])
    raise SystemExit(report["exit_code"])


def _used_of(telemetry: dict[str, Any]) -> str:
    used, total = telemetry.get("memory_used_mib"), telemetry.get("memory_total_mib")
    return "-" if used is None else f"{used}/{total if total is not None else '?'}"


def _gpu_check_without_daemon(reason: str) -> dict[str, Any]:
    """The check when ds01d does not answer: that, and the device nodes (read here)."""
    from ds01.core.findings import exit_code
    from ds01.core.gpu_check import check_device_nodes
    from ds01.runtime.host_gpu import device_nodes

    findings = [_ds01d_down(reason), check_device_nodes(device_nodes())]
    return {"findings": [vars(f) for f in findings], "exit_code": exit_code(findings)}


# -- mig ------------------------------------------------------------------------------------------


def _configure_mig(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        choices=("plan", "apply"),
        help="plan: show what would change; apply: change the GPUs no container holds",
    )
    p.add_argument(
        "--gpu",
        type=int,
        action="append",
        default=[],
        metavar="INDEX",
        help="apply to this GPU only (repeatable)",
    )
    add_json_flag(p)


def _layout(layout: dict[str, Any] | None) -> str:
    return layout["description"] if layout else "-"


def _plan_table(plan: dict[str, Any]) -> None:
    render.table(
        ["GPU", "NOW", "DESIRED", "STATUS"],
        [
            [
                g["gpu_index"] if g["gpu_index"] is not None else g["key"],
                _layout(g["current"]),
                _layout(g["desired"]),
                g["status"],
            ]
            for g in plan["gpus"]
        ],
    )
    for g in plan["gpus"]:
        if g["status"] in ("unmanaged", "unchanged"):
            continue
        name = g["gpu_index"] if g["gpu_index"] is not None else g["key"]
        render.echo(f"GPU {name}: {g['reason']}")
        for step in g["steps"]:
            render.echo(f"    {step}")


def _run_mig(args: argparse.Namespace) -> None:
    client = Ds01Client()
    if args.action == "plan":
        if args.gpu:
            raise InvalidInput("--gpu goes with `apply`; `plan` shows every GPU.")
        plan = client.request("GET", "/v1/admin/mig")
        if render.emitted_json(args.json, plan):
            return
        _plan_table(plan)
        ready = sum(1 for g in plan["gpus"] if g["status"] == "apply")
        render.echo(
            f"{ready} GPU(s) can be changed now: `ds01 admin mig apply` ({plan['backend']} "
            "backend)."
            if ready
            else f"Nothing to apply now ({plan['backend']} backend)."
        )
        return
    result = client.request("POST", "/v1/admin/mig", body={"gpus": args.gpu})
    if args.json:
        render.emit_json(result)
    else:
        for gpu in result["gpus"]:
            if gpu["outcome"] == "applied":
                render.ok(gpu["message"])
            else:
                render.echo(f"{gpu['outcome'].upper()}: {gpu['message']}")
            for step in gpu["done"]:
                render.echo(f"    done: {step}")
        if not result["gpus"]:
            render.echo("No GPU has a desired layout in gpu-config.yaml (mig_layout).")
    if not result["complete"]:
        raise SystemExit(int(ExitCode.ERROR))


# -- state ----------------------------------------------------------------------------------------


def _configure_state(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        choices=("status", "restore"),
        help="status: the database's health and its backup's age; restore: put the last "
        "backup in place (ds01d stopped)",
    )
    p.add_argument(
        "--empty",
        action="store_true",
        help="restore: start anew instead, accepting the loss (ds01d lists it in an event)",
    )
    p.add_argument(
        "--force", action="store_true", help="restore: also over a database that is healthy"
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="ds01d's state directory [$DS01_STATE_DIR, /var/lib/ds01]",
    )
    add_json_flag(p)


def _run_state(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ds01 import paths

    if os.geteuid() != 0:
        raise PermissionDenied(
            f"ds01 admin state {args.action} must run as root: it reads ds01d's files directly."
        )
    if args.action == "status" and (args.empty or args.force):
        raise InvalidInput("--empty and --force go with `restore`.")
    state_dir = Path(paths.pick(args.state_dir, paths.ENV_STATE_DIR, paths.DEFAULT_STATE_DIR))
    db_path = state_dir / paths.STATE_DB_FILE
    if args.action == "status":
        _state_status(db_path, args.json)
    else:
        _state_restore(db_path, args)


def _state_status(db_path: Path, as_json: bool) -> None:
    from ds01.model.units import format_bytes, format_duration
    from ds01.runtime.store_files import backup_info, examine, state_dir_in_use

    condition = examine(db_path)
    backup = backup_info(db_path)
    running = state_dir_in_use(db_path.parent)
    size = db_path.stat().st_size if condition.kind not in ("missing", "unreadable") else 0
    report = {
        "database": str(db_path),
        "condition": condition.kind,
        "detail": condition.detail,
        "bytes": size,
        "backup": None if backup is None else backup.path,
        "backup_age_seconds": None if backup is None else round(backup.age_seconds),
        "ds01d_running": running,
    }
    if as_json:
        render.emit_json(report)
    else:
        shown = f" ({format_bytes(size)})" if size else ""
        render.echo(f"Database: {condition.describe(str(db_path))}{shown}")
        render.echo(
            "Backup:   none yet"
            if backup is None
            else f"Backup:   {backup.path}, {format_duration(backup.age_seconds)} old"
        )
        render.echo(f"ds01d:    {'running' if running else 'not running'} on {db_path.parent}")
        if condition.kind in ("damaged", "unreadable"):
            render.echo(
                "Repair:   stop ds01d, then `ds01 admin state restore` (the backup) or "
                "`ds01 admin state restore --empty` (start anew)."
            )
    if condition.kind in ("damaged", "unreadable"):
        raise SystemExit(int(ExitCode.ERROR))


def _state_restore(db_path: Path, args: argparse.Namespace) -> None:
    from datetime import datetime, timezone

    from ds01.model.units import format_duration
    from ds01.runtime.store_files import restore

    record = restore(
        db_path, empty=args.empty, force=args.force, by="root", now=datetime.now(timezone.utc)
    )
    if render.emitted_json(args.json, record.to_dict()):
        return
    if record.source == "empty":
        render.ok(f"ds01d will start anew on a new {db_path} ({record.condition} before).")
        render.echo(
            "  Lost: the GPU queue, lifecycle clocks, the usage ledger, released-device "
            "records, exemptions; ds01d lists them in a state.reset event when it starts."
        )
    else:
        age = format_duration(record.backup_age_seconds or 0)
        render.ok(f"Restored {db_path} from its backup, taken {age} before ({record.condition}).")
        render.echo("  Changes after the backup are lost; ds01d records the restore at its start.")
    for kept in record.kept_as:
        render.echo(f"  Kept: {kept}")
    if record.dropped_intents:
        render.echo(
            "  Creates in flight at the backup, their containers kept: "
            + ", ".join(record.dropped_intents)
        )
    render.echo("  Next: start ds01d (`systemctl start ds01d`).")


ADMIN_COMMANDS: tuple[Command, ...] = (
    Command(
        ("admin", "add-user"),
        None,
        "Let a Unix user use ds01: config entry, ~/workspace, cgroup parent.",
        "Add Unix user USER to ds01 (admins): write them into resource-limits.yaml (into\n"
        "GROUP's members with --group, else an entry of their own under users:), checked as\n"
        "ds01d checks the file, keeping its comments; create ~USER/workspace owned by them;\n"
        "write their totals (aggregate:) on their cgroup parent. ds01d applies it at once.\n"
        "Adding someone already there changes nothing.\n\n"
        "examples:\n"
        "  ds01 admin add-user alice --group phd_students\n"
        "  ds01 admin add-user bob --dry-run",
        _configure_add_user,
        _run_add_user,
    ),
    Command(
        ("admin", "remove-user"),
        None,
        "Take a user out of ds01: containers, queued requests, config entries.",
        "Remove USER from ds01 (admins): cancel their queued GPU requests, stop and remove\n"
        "their containers (their GPUs are freed), remove their entries from\n"
        "resource-limits.yaml and their exemptions. Their files stay: --keep-data (the\n"
        "default) deletes nothing; --archive DIR also packs ~USER/workspace into a tar.gz\n"
        "in DIR that only root can read. A home directory is never deleted: `userdel -r`\n"
        "does that when you are sure. Asks first, unless --yes.\n\n"
        "examples:\n"
        "  ds01 admin remove-user alice --dry-run\n"
        "  ds01 admin remove-user alice --archive /srv/ds01-archive --yes",
        _configure_remove_user,
        _run_remove_user,
    ),
    Command(
        ("admin", "setup"),
        None,
        "Prepare this machine for ds01d: directories, config skeleton, unit, commands.",
        "Prepare this machine for ds01d (as root; ds01d need not run): /etc/ds01 with a\n"
        "skeleton of each missing configuration file (never overwriting one), /var/lib/ds01\n"
        "(0700), /var/log/ds01 (0750, the admin group), /run/ds01, the systemd unit\n"
        "ds01d.service, and ds01's commands linked into --bin-dir. Where an NVIDIA driver\n"
        "is installed (or with --close-gpu-door): the group ds01-gpu (no members) and\n"
        "/etc/modprobe.d/ds01-nvidia.conf, which makes /dev/nvidia* 0660 so that no user\n"
        "runs CUDA outside ds01 (once the nvidia modules load again; it says how). Running\n"
        "it again changes nothing; --dry-run shows what it would do. Exit 1 when something\n"
        "is in the way.\n\n"
        "examples:\n"
        "  ds01 admin setup --dry-run\n"
        "  ds01 admin setup && systemctl enable --now ds01d",
        _configure_setup,
        _run_setup,
    ),
    Command(
        ("admin", "doctor"),
        None,
        "Health and set-up risks: Docker, toolkit, cgroups, config, socket, log, loop.",
        "Check ds01's health and set-up risks (admins): the Docker engine, users in the\n"
        "docker group, the NVIDIA Container Toolkit (NVML backend), cgroups, the admin\n"
        "group, the configuration, the socket, the audit log, the GPUs, the lifecycle loop.\n"
        "Exit 0 healthy, 1 degraded (warnings), 2 broken (critical), also when ds01d itself\n"
        "does not answer.\n\n"
        "examples:\n"
        "  ds01 admin doctor\n"
        "  ds01 admin doctor --json",
        add_json_flag,
        _run_doctor,
    ),
    Command(
        ("admin", "gpu-check"),
        None,
        "Can this machine serve real GPUs, only through ds01? Read-only check.",
        "Check a GPU server (admins; read-only, MIG modes are never changed): the NVIDIA\n"
        "driver and NVML versions; every GPU and MIG device with its UUID, profile,\n"
        "GPU-equivalents and telemetry (- where the driver has none); the /dev/nvidia*\n"
        "modes (open to every user, anyone runs CUDA outside ds01: `ds01 admin setup`\n"
        "closes that); whether Docker can give a container a GPU (the NVIDIA toolkit's hook\n"
        "on dockerd's PATH, or CDI); and then a container made by ds01d on one free device\n"
        "that runs `nvidia-smi -L` and must list exactly that device (--image, else the\n"
        "starter image; it is not pulled).\n"
        "Exit 0 ready, 1 warnings, 2 cannot serve GPUs. Simulated GPUs exit 2: they are\n"
        "stand-ins, so this machine serves no real GPU, and a script that gates on this\n"
        "check must not pass on a misconfigured server.\n\n"
        "examples:\n"
        "  ds01 admin gpu-check\n"
        "  ds01 admin gpu-check --json --image registry.local/cuda-base:12.4",
        _configure_gpu_check,
        _run_gpu_check,
    ),
    Command(
        ("admin", "mig"),
        None,
        "MIG layouts: plan from gpu-config.yaml's mig_layout, apply to free GPUs.",
        "`plan` shows for every GPU its MIG layout now, the one mig_layout in gpu-config.yaml\n"
        "wants, and whether it can be changed: only when no container holds any of its\n"
        "devices. `apply` changes those GPUs (through NVML, or the simulated inventory) and\n"
        "refuses the others, saying who holds them; exit 1 unless every GPU is as desired.\n\n"
        "examples:\n"
        "  ds01 admin mig plan\n"
        "  ds01 admin mig apply --gpu 3",
        _configure_mig,
        _run_mig,
    ),
    Command(
        ("admin", "state"),
        None,
        "The state database: its health and backup; restore it after damage.",
        "`status` shows whether ds01d's state database (queue, lifecycle clocks, usage\n"
        "ledger) is healthy, and how old its backup is (ds01d copies it minutes apart and\n"
        "seconds after each queue change). `restore` (as root, ds01d stopped) checks the\n"
        "backup with integrity_check, keeps the old database as ds01.db.damaged-TIME and\n"
        "puts the backup in its place; --empty starts anew instead, accepting the loss.\n"
        "ds01d records either in the audit log when it starts. Exit 1 when damaged.\n\n"
        "examples:\n"
        "  ds01 admin state status\n"
        "  systemctl stop ds01d && ds01 admin state restore && systemctl start ds01d",
        _configure_state,
        _run_state,
    ),
)

__all__ = ["ADMIN_COMMANDS"]
