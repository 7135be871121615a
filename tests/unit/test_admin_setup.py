"""``ds01 admin setup`` into a temporary root: directories with their modes, the config
skeleton (never overwriting), the systemd unit, the command links; a second run changes
nothing; ``--dry-run`` changes nothing at all. The unit is the one deploy/ ships."""

from __future__ import annotations

import grp
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import skip_or_fail
from ds01.cli.main import main
from ds01.config.gpu_config import GpuConfig
from ds01.config.limits import ResourceLimitsConfig
from ds01.config.loader import load_config
from ds01.host_setup import console_scripts, render_unit

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(sys.executable).parent



@pytest.fixture(autouse=True)
def _as_root() -> None:
    """Setup makes root-owned files: without root these tests skip, and fail under make test."""
    if os.geteuid() != 0:
        skip_or_fail("ds01 admin setup makes root-owned files: run the tests as root")


def setup(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> tuple[int, Any]:
    """Run ``ds01 admin setup --root ROOT --json ARGS``: (exit code, its JSON)."""
    try:
        main(["admin", "setup", "--root", str(root), "--json", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, json.loads(capsys.readouterr().out)


def admin_gid() -> int:
    """The gid the log directory gets: ds01-admin's, root's while that group is missing."""
    try:
        return grp.getgrnam("ds01-admin").gr_gid
    except KeyError:
        return 0


def tree(root: Path) -> dict[str, tuple[int, int, int, float, str]]:
    """Every path under ``root``: mode, uid, gid, mtime and a link's target."""
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        target = os.readlink(path) if path.is_symlink() else ""
        found[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime, target)
    return found


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_setup_makes_everything_once_and_a_second_run_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    (root / "etc/ds01").mkdir(parents=True)
    own = "defaults:\n  gpu_limit: 2  # ours\n"
    (root / "etc/ds01/resource-limits.yaml").write_text(own)

    code, first = setup(capsys, root)

    assert code == 0
    assert first["changed"] > 0
    assert (root / "etc/ds01/resource-limits.yaml").read_text() == own  # never overwritten
    config = load_config(root / "etc/ds01")
    assert config.gpus == GpuConfig()  # the skeletons mean the embedded defaults
    assert config.limits == ResourceLimitsConfig.model_validate({"defaults": {"gpu_limit": 2}})
    assert mode(root / "etc/ds01") == 0o755
    assert mode(root / "var/lib/ds01") == 0o700
    assert mode(root / "var/log/ds01") == 0o750
    assert (root / "var/log/ds01").stat().st_gid == admin_gid()
    assert mode(root / "run/ds01") == 0o755
    unit = root / "etc/systemd/system/ds01d.service"
    assert unit.read_text() == render_unit(SCRIPTS)
    assert mode(unit) == 0o644
    assert f"ExecStart={SCRIPTS}/ds01d" in unit.read_text()
    for name in ("ds01", "ds01d", "container-create", "gpu-status"):
        link = root / "usr/local/bin" / name
        assert os.readlink(link) == str(SCRIPTS / name)
    assert {p.name for p in (root / "usr/local/bin").iterdir()} == set(console_scripts())
    skeleton = (root / "etc/ds01/gpu-config.yaml").read_text()
    assert "mig_layout" in skeleton and "backend: simulated" in skeleton

    before = tree(root)
    code, second = setup(capsys, root)

    assert code == 0
    assert second["changed"] == 0
    assert {s["action"] for s in second["steps"]} == {"ok"}
    assert tree(root) == before


def test_dry_run_shows_the_plan_and_makes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    code, plan = setup(capsys, root, "--dry-run")
    assert code == 0
    assert plan["dry_run"] and plan["changed"] > 0
    assert {s["action"] for s in plan["steps"]} == {"create"}
    assert list(root.iterdir()) == []


def test_wrong_modes_are_corrected_and_foreign_files_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    (root / "var/lib/ds01").mkdir(parents=True, mode=0o755)
    (root / "var/lib/ds01").chmod(0o755)
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/ds01").write_text("#!/bin/sh\necho not ours\n")

    code, result = setup(capsys, root)

    assert code == 1  # something is in the way
    assert mode(root / "var/lib/ds01") == 0o700
    steps = {s["path"]: s for s in result["steps"]}
    assert steps[str(root / "var/lib/ds01")]["action"] == "update"
    assert steps[str(root / "usr/local/bin/ds01")]["action"] == "blocked"
    assert (root / "usr/local/bin/ds01").read_text().endswith("not ours\n")
    assert os.readlink(root / "usr/local/bin/ds01d") == str(SCRIPTS / "ds01d")


def test_the_unit_is_the_one_deploy_ships() -> None:
    shipped = (REPO / "deploy/systemd/ds01d.service").read_text()
    assert render_unit(Path("/opt/ds01/venv/bin")) == shipped
    # ds01d's staging mounts must be dockerd's: no mount namespace of its own.
    for option in ("ProtectSystem=", "PrivateTmp=", "ReadWritePaths=", "PrivateMounts="):
        assert f"\n{option}" not in shipped, option


def test_with_an_nvidia_driver_setup_closes_the_gpu_door_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    (root / "proc/driver/nvidia").mkdir(parents=True)  # a loaded driver, as /proc shows it
    (root / "etc").mkdir()
    (root / "etc/group").write_text("root:x:0:\nvideo:x:44:\n")
    (root / "dev").mkdir()
    os.mknod(root / "dev/nvidiactl", 0o666 | stat.S_IFCHR, os.makedev(195, 255))
    (root / "dev/nvidiactl").chmod(0o666)
    option = root / "etc/modprobe.d/ds01-nvidia.conf"

    code, dry = setup(capsys, root, "--dry-run")
    assert code == 0 and not option.exists()
    planned = {s["kind"]: s for s in dry["steps"]}
    assert planned["group"]["action"] == "create"
    assert "NVreg_DeviceFileMode=0660" in planned["driver-option"]["content"]
    assert "ds01-gpu" not in (root / "etc/group").read_text()

    code, first = setup(capsys, root)
    assert code == 0
    gid = next(
        int(line.split(":")[2])
        for line in (root / "etc/group").read_text().splitlines()
        if line.startswith("ds01-gpu:")
    )
    assert (
        f"options nvidia NVreg_DeviceFileUID=0 NVreg_DeviceFileGID={gid} "
        "NVreg_DeviceFileMode=0660\n" in option.read_text()
    )
    assert mode(option) == 0o644
    assert any("modprobe -r" in note for note in first["notes"])  # how to reload

    code, second = setup(capsys, root)
    assert code == 0 and second["changed"] == 0
    # The loaded driver still has its old modes: the admin is told to reload it.
    assert any("/dev/nvidiactl" in n and "modprobe -r" in n for n in second["notes"])


def test_without_a_driver_no_gpu_door_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    code, plan = setup(capsys, root, "--dry-run")
    assert code == 0 and "driver-option" not in {s["kind"] for s in plan["steps"]}
    code, plan = setup(capsys, root, "--dry-run", "--close-gpu-door")
    assert code == 1
    kinds = {s["kind"]: s["action"] for s in plan["steps"]}
    assert kinds["driver-option"] == "create"
    assert kinds["group"] == "blocked"  # no etc/group under this root to add it to
