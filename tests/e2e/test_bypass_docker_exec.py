"""End to end: an exec through the Docker API door runs as its owner's uid and gid, whatever
the container's own ``/etc/passwd`` and ``/etc/group`` say.

A user may write those files (a copy into her container is extracted by dockerd as root,
and her own images hold what she put there). dockerd reads an exec's ``User`` in them: a
name is looked up there (``alice:x:0:0`` makes her root), and a uid alone takes its group
from there (group 0 where the uid has no entry). Root, or group 0, in a container that
mounts her directories could plant set-uid or set-gid files there. The door sends every
exec as ``uid:gid`` in numbers, so whatever she asks (her name, her uid, both) she gets her
own uid and group and no other.
"""

from __future__ import annotations

import pwd
import shutil
from pathlib import Path
from typing import Any

from support import TEST_IMAGES_YAML, describe

LIMITS = """
    defaults:
      max_containers: 2
      cpu_limit: 1
      memory_limit: 256M
"""
#: Her files for the container: her name as root's uid, and her in root's group.
PLANTED = {
    "passwd": "root:x:0:0:root:/root:/bin/sh\nalice:x:0:0:alice:/:/bin/sh\n",
    "group": "root:x:0:alice\nwheel:x:10:alice\n",
}


def test_an_exec_runs_as_her_numbers_whatever_the_containers_passwd_says(ds01d: Any) -> None:
    d = ds01d(resource_limits=LIMITS, images=TEST_IMAGES_YAML)
    made = d.cli("alice", "container-create", "mine", "--image", "busybox", "--start")
    assert made.returncode == 0, describe(made)
    alice = pwd.getpwnam("alice")
    source = Path(alice.pw_dir) / "planted-etc"
    source.mkdir()
    try:
        for name, text in PLANTED.items():
            (source / name).write_text(text)
            shutil.chown(source / name, alice.pw_uid, alice.pw_gid)
            copied = d.docker("alice", "cp", str(source / name), f"mine:/etc/{name}")
            assert copied.returncode == 0, describe(copied)
    finally:
        shutil.rmtree(source)
    shown = d.docker("alice", "exec", "mine", "cat", "/etc/passwd")
    assert "alice:x:0:0" in shown.stdout, describe(shown)  # her plant is in place
    own = f"{alice.pw_uid} {alice.pw_gid} {alice.pw_gid}"
    for asked in ((), ("-u", "alice"), ("-u", str(alice.pw_uid)), ("-u", f"alice:{alice.pw_gid}")):
        ran = d.docker(
            "alice", "exec", *asked, "mine", "sh", "-c", 'echo "$(id -u) $(id -g) $(id -G)"'
        )
        assert ran.returncode == 0, describe(ran)
        assert ran.stdout.strip() == own, (asked, describe(ran))
