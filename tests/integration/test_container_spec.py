"""What ds01d really asks Docker for when a user creates a container.

Each test lets alice (Unix group ``phd``) create containers through the real CLI, then reads
back with ``docker inspect`` what the daemon created: resource limits from her quota, the
identity the container runs as, the hardening options, the cgroup parent, the labels that
record which GPU devices it holds, the workspace mount, the GPU environment variables and the
device cgroup of the simulated GPU node it was given. Requests that break the quota or try
to mount a directory alice does not own must be refused with the documented exit codes.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from support import TEST_IMAGES_YAML, describe

CPU_LIMIT = 1
MEMORY_LIMIT_BYTES = 1024**3  # "1G"
SHM_SIZE_BYTES = 256 * 1024**2  # "256M"
PIDS_LIMIT = 200

# The defaults differ from phd's values, so a test passes only if the group's values apply.
LIMITS = """
    defaults:
      gpu_limit: 1
      cpu_limit: 2
      memory_limit: 2G
      shm_size: 64M
      pids_limit: 500
    groups:
      phd:
        cpu_limit: 1
        memory_limit: 1G
        shm_size: 256M
        pids_limit: 200
        gpu_limit: 2
        max_containers: 5
"""

ALICE_CGROUP_PARENT = "/ds01.slice/ds01-phd.slice/ds01-phd-alice.slice"
NVIDIA_MAJOR = 195


# --- helpers --------------------------------------------------------------------------------


def gpu_config(node_dir: Path) -> str:
    """The embedded default GPUs (4 A100, GPU 3 in MIG mode) with fake device nodes."""
    return f"""
        backend: simulated
        simulated:
          device_node_dir: {node_dir}
    """


def start_daemon(ds01d: Any, fake_gpu_nodes: Path) -> Any:
    return ds01d(
        resource_limits=LIMITS, gpu_config=gpu_config(fake_gpu_nodes), images=TEST_IMAGES_YAML
    )


def create(daemon: Any, user: str, name: str, *args: str) -> dict[str, Any]:
    """Create container ``name`` as ``user`` from the test image; return the CLI's JSON."""
    info: dict[str, Any] = daemon.cli_json(
        user, "container-create", name, "--image", "busybox", *args
    )
    return info


def inspect(docker_client: Any, user_uid: int, name: str) -> dict[str, Any]:
    """``docker inspect`` of a user's container, by its Docker name ``{name}._.{uid}``."""
    result: dict[str, Any] = docker_client.api.inspect_container(f"{name}._.{user_uid}")
    return result


def container_exists(docker_client: Any, user_uid: int, name: str) -> bool:
    """Whether Docker has the user's container ``name`` (``{name}._.{uid}``), in any state."""
    try:
        docker_client.containers.get(f"{name}._.{user_uid}")
    except docker.errors.NotFound:
        return False
    return True


def environment(attrs: dict[str, Any]) -> dict[str, str]:
    env = attrs["Config"]["Env"] or []
    return dict(item.split("=", 1) for item in env)


def device_cgroup_rules(docker_client: Any, attrs: dict[str, Any]) -> list[str]:
    """The ``devices.list`` of a running container's device cgroup (cgroup v1).

    Read on the host under the container's cgroup parent; falls back to the file as the
    container sees it.
    """
    parent = attrs["HostConfig"]["CgroupParent"].strip("/")
    host_file = Path("/sys/fs/cgroup/devices") / parent / attrs["Id"] / "devices.list"
    if host_file.exists():
        return host_file.read_text().splitlines()
    inside = exec_output(docker_client, attrs["Id"], "cat", "/sys/fs/cgroup/devices/devices.list")
    return inside.splitlines()


def exec_output(docker_client: Any, container_id: str, *command: str) -> str:
    """Run ``command`` in a running container (as its configured user); return stdout."""
    exec_id = docker_client.api.exec_create(container_id, list(command))["Id"]
    output = docker_client.api.exec_start(exec_id).decode()
    exit_code = docker_client.api.exec_inspect(exec_id)["ExitCode"]
    assert exit_code == 0, f"{command} exited {exit_code}: {output}"
    return str(output)


def nvidia_minors(rules: list[str]) -> set[int]:
    """The minor numbers of the NVIDIA character devices (major 195) a cgroup allows."""
    minors = set()
    for rule in rules:
        parts = rule.split()
        if len(parts) == 3 and parts[0] == "c" and parts[1].startswith(f"{NVIDIA_MAJOR}:"):
            minor = parts[1].split(":", 1)[1]
            assert minor != "*", f"the container may use every NVIDIA device: {rule!r}"
            minors.add(int(minor))
    return minors


def gpu_indices_held_by(daemon: Any, user: str, name: str) -> dict[str, int]:
    """UUID → physical GPU index of the devices ``gpu-status`` says ``user/name`` holds."""
    return {
        device["uuid"]: device["gpu_index"]
        for device in daemon.cli_json(user, "gpu-status")
        if device["holder"]
        and (device["holder"]["user"], device["holder"]["container"]) == (user, name)
    }


def reset_workspace(home: Path) -> Path:
    """Remove ``~/workspace`` so that a test sees ds01 create it."""
    workspace = home / "workspace"
    if workspace.is_symlink() or workspace.is_file():
        workspace.unlink()
    elif workspace.exists():
        shutil.rmtree(workspace)
    return workspace


# --- the container ds01 creates ---------------------------------------------------------------


def test_containers_have_quota_limits_identity_and_hardening(
    ds01d, fake_gpu_nodes, docker_client, unix_users
):
    alice = unix_users["alice"]
    d = start_daemon(ds01d, fake_gpu_nodes)
    create(d, "alice", "whole", "--gpus", "1")
    create(d, "alice", "slice", "--mig", "2g.10gb")

    for name in ("whole", "slice"):
        attrs = inspect(docker_client, alice.pw_uid, name)
        host = attrs["HostConfig"]

        assert host["NanoCpus"] == CPU_LIMIT * 10**9, name
        assert host["Memory"] == MEMORY_LIMIT_BYTES, name
        assert host["MemorySwap"] == host["Memory"], "swap beyond the memory limit is allowed"
        assert host["ShmSize"] == SHM_SIZE_BYTES, name
        assert host["PidsLimit"] == PIDS_LIMIT, name

        assert attrs["Config"]["User"] == f"{alice.pw_uid}:{alice.pw_gid}", name
        assert host["Init"] is True, name
        assert host["Privileged"] is False, name
        assert host["CapDrop"] == ["ALL"], name
        assert "no-new-privileges" in (host["SecurityOpt"] or []), name
        assert host["CgroupParent"] == ALICE_CGROUP_PARENT, name
        assert host["NetworkMode"] == f"ds01-u{alice.pw_uid}", name  # her own network


def test_labels_record_owner_and_the_devices_that_list_and_status_report(
    ds01d, fake_gpu_nodes, docker_client, unix_users
):
    alice = unix_users["alice"]
    d = start_daemon(ds01d, fake_gpu_nodes)

    created = create(d, "alice", "whole", "--gpus", "1")
    create(d, "alice", "slice", "--mig", "2g.10gb")
    listed = {c["name"]: c for c in d.cli_json("alice", "container-list")}

    expected_equivalents = {"whole": Fraction(1), "slice": Fraction(2, 7)}
    for name, equivalents in expected_equivalents.items():
        labels = inspect(docker_client, alice.pw_uid, name)["Config"]["Labels"]
        label_gpus = labels["ds01.gpus"].split(",")
        assert len(label_gpus) == 1 and label_gpus[0], labels
        assert label_gpus == listed[name]["gpus"]
        assert set(label_gpus) == set(gpu_indices_held_by(d, "alice", name))
        assert labels["ds01.managed"] == "true"
        assert labels["ds01.user"] == "alice"
        assert labels["ds01.uid"] == str(alice.pw_uid)
        assert labels["ds01.name"] == name
        assert labels["ds01.group"] == "phd"
        assert labels["ds01.image"] == "busybox"
        assert labels["ds01.interface"] == "cli"
        assert labels["ds01.created_at"], labels
        assert Fraction(labels["ds01.gpu_equivalents"]) == equivalents
        assert listed[name]["gpu_equivalents"] == pytest.approx(float(equivalents), abs=1e-4)
        aime = {k: v for k, v in labels.items() if k.startswith("aime.mlc")}
        assert aime.get("aime.mlc.NAME") == name, aime
        assert aime.get("aime.mlc.USER") == "alice", aime
        assert aime.get("aime.mlc.GPUS") == labels["ds01.gpus"], aime
    assert created["gpus"] == listed["whole"]["gpus"]


def test_workspace_is_created_owned_by_the_user_and_bound_at_workspace(
    ds01d, fake_gpu_nodes, docker_client, unix_users
):
    alice = unix_users["alice"]
    workspace = reset_workspace(Path(alice.pw_dir))
    d = start_daemon(ds01d, fake_gpu_nodes)

    create(d, "alice", "notes")

    assert workspace.is_dir() and not workspace.is_symlink()
    st = workspace.stat()
    assert (st.st_uid, st.st_gid) == (alice.pw_uid, alice.pw_gid)
    attrs = inspect(docker_client, alice.pw_uid, "notes")
    mounts = attrs["Mounts"]
    at_workspace = [m for m in mounts if m["Destination"] == "/workspace"]
    assert len(at_workspace) == 1, mounts
    assert at_workspace[0]["Type"] == "bind"
    assert at_workspace[0]["RW"] is True
    # Docker binds a staging path that ds01d mounts the workspace on at each start (opened
    # without following symlinks); the label keeps the user's directory.
    source = Path(at_workspace[0]["Source"])  # <state>/mounts/<staging key>/workspace
    assert (source.parent.parent, source.name) == (d.paths.state_dir / "mounts", "workspace")
    assert source.parent.name.startswith(f"notes._.{alice.pw_uid}."), source
    assert attrs["Config"]["Labels"]["aime.mlc.WORK_MOUNT"] == str(workspace)
    assert d.cli("alice", "container-start", "notes").returncode == 0
    box = docker_client.containers.get(f"notes._.{alice.pw_uid}")
    seen = box.exec_run(["stat", "-c", "%d %i", "/workspace"]).output.decode().strip()
    assert seen == f"{st.st_dev} {st.st_ino}"


def test_simulated_devices_are_named_in_ds01_gpus_and_never_to_the_nvidia_toolkit(
    ds01d, fake_gpu_nodes, docker_client, unix_users
):
    alice = unix_users["alice"]
    d = start_daemon(ds01d, fake_gpu_nodes)

    whole = create(d, "alice", "whole", "--gpus", "1")
    mig = create(d, "alice", "slice", "--mig", "2g.10gb")
    create(d, "alice", "cpu-only")

    for info in (whole, mig):
        attrs = inspect(docker_client, alice.pw_uid, info["name"])
        env = environment(attrs)
        assert env["DS01_GPUS"] == ",".join(info["gpus"])
        assert env["NVIDIA_VISIBLE_DEVICES"] == env["CUDA_VISIBLE_DEVICES"] == "void"
        assert not attrs["HostConfig"]["DeviceRequests"]
        assert info["gpus"][0].startswith("MIG-" if info["name"] == "slice" else "GPU-")
    env = environment(inspect(docker_client, alice.pw_uid, "cpu-only"))
    assert env["DS01_GPUS"] == ""
    assert env["NVIDIA_VISIBLE_DEVICES"] == env["CUDA_VISIBLE_DEVICES"] == "void"


def test_running_container_may_use_only_its_own_gpu_node_and_runs_as_the_user(
    ds01d, fake_gpu_nodes, docker_client, unix_users
):
    alice = unix_users["alice"]
    d = start_daemon(ds01d, fake_gpu_nodes)
    create(d, "alice", "whole", "--gpus", "1")
    create(d, "alice", "slice", "--mig", "2g.10gb")
    create(d, "alice", "cpu-only")

    for name in ("whole", "slice", "cpu-only"):
        started = d.cli("alice", "container-start", name)
        assert started.returncode == 0, describe(started)
        attrs = inspect(docker_client, alice.pw_uid, name)
        assert attrs["State"]["Running"], attrs["State"]

        expected = set(gpu_indices_held_by(d, "alice", name).values())
        rules = device_cgroup_rules(docker_client, attrs)
        assert nvidia_minors(rules) == expected, (name, rules)
        for index in expected:
            assert f"c {NVIDIA_MAJOR}:{index} rwm" in rules, (name, rules)

        assert exec_output(docker_client, attrs["Id"], "id", "-u").strip() == str(alice.pw_uid)
        status = Path(f"/proc/{attrs['State']['Pid']}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        assert fields["Uid"].split() == [str(alice.pw_uid)] * 4, fields["Uid"]
        assert fields["NoNewPrivs"].strip() == "1"
        assert int(fields["CapEff"].strip(), 16) == 0

    whole_index = set(gpu_indices_held_by(d, "alice", "whole").values())
    slice_index = set(gpu_indices_held_by(d, "alice", "slice").values())
    assert whole_index and slice_index and whole_index != slice_index


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "what"),
    [
        pytest.param(("--memory", "2G"), "memory above memory_limit 1G", id="memory-2G"),
        pytest.param(("--cpus", "1.5"), "CPUs above cpu_limit 1", id="cpus-1.5"),
        pytest.param(
            ("--cpus", "1000"),
            "CPUs above cpu_limit 1 (and above the host's CPU count)",
            id="cpus-1000",
        ),
        pytest.param(("--shm-size", "512M"), "shm above shm_size 256M", id="shm-512M"),
    ],
)
def test_request_above_the_quota_is_refused_with_exit_3(
    ds01d, fake_gpu_nodes, docker_client, unix_users, flags, what
):
    d = start_daemon(ds01d, fake_gpu_nodes)

    result = d.cli("alice", "container-create", "over-quota", "--image", "busybox", *flags)

    assert result.returncode == 3, f"{what}\n{describe(result)}"
    assert not container_exists(docker_client, unix_users["alice"].pw_uid, "over-quota")
    assert d.events_where(action="container.create", outcome="denied")


def test_request_within_the_quota_gets_what_it_asked_for(
    ds01d, fake_gpu_nodes, docker_client, unix_users
):
    alice = unix_users["alice"]
    d = start_daemon(ds01d, fake_gpu_nodes)

    create(d, "alice", "small", "--memory", "512M", "--cpus", "0.5", "--shm-size", "128M")

    host = inspect(docker_client, alice.pw_uid, "small")["HostConfig"]
    assert host["Memory"] == host["MemorySwap"] == 512 * 1024**2
    assert host["NanoCpus"] == 5 * 10**8
    assert host["ShmSize"] == 128 * 1024**2


def test_workspace_not_owned_by_the_user_is_refused_with_exit_5(
    ds01d, fake_gpu_nodes, docker_client, unix_users
):
    d = start_daemon(ds01d, fake_gpu_nodes)

    for foreign in ("/tmp", unix_users["bob"].pw_dir):
        result = d.cli(
            "alice", "container-create", "foreign-ws", "--image", "busybox", "--workspace", foreign
        )
        assert result.returncode == 5, describe(result)
    assert not container_exists(docker_client, unix_users["alice"].pw_uid, "foreign-ws")


def test_workspace_symlink_escaping_to_etc_is_refused_with_exit_5(
    ds01d, fake_gpu_nodes, docker_client, unix_users
):
    alice = unix_users["alice"]
    link = Path(alice.pw_dir) / "escape-to-etc"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to("/etc")
    os.lchown(link, alice.pw_uid, alice.pw_gid)
    d = start_daemon(ds01d, fake_gpu_nodes)
    try:
        result = d.cli(
            "alice", "container-create", "etc-ws", "--image", "busybox", "--workspace", str(link)
        )
    finally:
        link.unlink()

    assert result.returncode == 5, describe(result)
    assert not container_exists(docker_client, alice.pw_uid, "etc-ws")


def test_default_workspace_planted_as_symlink_to_etc_is_refused_with_exit_5(
    ds01d, fake_gpu_nodes, docker_client, unix_users
):
    alice = unix_users["alice"]
    workspace = reset_workspace(Path(alice.pw_dir))
    workspace.symlink_to("/etc")
    os.lchown(workspace, alice.pw_uid, alice.pw_gid)
    d = start_daemon(ds01d, fake_gpu_nodes)
    try:
        result = d.cli("alice", "container-create", "planted", "--image", "busybox")
    finally:
        workspace.unlink()

    assert result.returncode == 5, describe(result)
    assert not container_exists(docker_client, alice.pw_uid, "planted")
    assert Path("/etc").stat().st_uid == 0, "ds01 must not chown the symlink's target"


# --- published ports ---------------------------------------------------------------------------

FIXED_HOST_PORT = 18081


def http_get(host: str, port: int, timeout_seconds: float = 10.0) -> str:
    """``GET /`` on host:port, retried until something answers; the raw response."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            with socket.create_connection((host, port), timeout=2) as conn:
                conn.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
                answer = b"".join(iter(lambda: conn.recv(4096), b""))
            if answer:
                return answer.decode(errors="replace")
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing answered on {host}:{port}")
        time.sleep(0.2)


def test_published_ports_listen_on_127_0_0_1_only(ds01d, fake_gpu_nodes, docker_client, unix_users):
    alice = unix_users["alice"]
    workspace = reset_workspace(Path(alice.pw_dir))
    d = start_daemon(ds01d, fake_gpu_nodes)

    info = create(
        d, "alice", "web", "--port", "8080", "--port", f"{FIXED_HOST_PORT}:8081", "--start"
    )

    attrs = inspect(docker_client, alice.pw_uid, "web")
    assert attrs["HostConfig"]["PortBindings"] == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
        "8081/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(FIXED_HOST_PORT)}],
    }
    published = attrs["NetworkSettings"]["Ports"]
    assert {b["HostIp"] for bindings in published.values() for b in bindings} == {"127.0.0.1"}
    chosen = int(published["8080/tcp"][0]["HostPort"])
    expected = {8080: chosen, 8081: FIXED_HOST_PORT}
    listed = d.cli_json("alice", "container-list")[0]["ports"]
    assert {p["container_port"]: p["host_port"] for p in listed} == expected
    assert {p["container_port"]: p["host_port"] for p in info["ports"]} == expected
    assert {p["host_ip"] for p in listed} == {"127.0.0.1"}
    table = d.cli("alice", "container-list")
    assert f"127.0.0.1:{chosen}->8080" in table.stdout, describe(table)

    # A server in the container answers on 127.0.0.1 and on no other host address.
    (workspace / "index.html").write_text("hello from web\n")
    exec_id = docker_client.api.exec_create(
        attrs["Id"], ["httpd", "-f", "-p", "8080", "-h", "/workspace"]
    )["Id"]
    docker_client.api.exec_start(exec_id, detach=True)
    assert "hello from web" in http_get("127.0.0.1", chosen)
    # The host's address on her network's bridge.
    gateway = attrs["NetworkSettings"]["Networks"][f"ds01-u{alice.pw_uid}"]["Gateway"]
    with pytest.raises(OSError):
        socket.create_connection((gateway, chosen), timeout=2).close()


def test_a_host_port_of_another_container_is_refused_at_create(
    ds01d, fake_gpu_nodes, docker_client, unix_users
):
    d = start_daemon(ds01d, fake_gpu_nodes)
    create(d, "alice", "first", "--port", f"{FIXED_HOST_PORT}:8080", "--start")

    second = d.cli(
        "bob", "container-create", "second", "--image", "busybox",
        "--port", f"{FIXED_HOST_PORT}:8080", "--start",
    )  # fmt: skip

    assert second.returncode == 3, describe(second)
    assert f"Host port {FIXED_HOST_PORT} on 127.0.0.1 belongs to" in second.stderr, describe(second)
    assert not container_exists(docker_client, unix_users["bob"].pw_uid, "second")


@pytest.mark.parametrize(
    ("port", "why"),
    [("22:8080", "1024"), ("8080:0", "greater than or equal to 1"), ("x:80", "PORT")],
)
def test_a_bad_port_is_refused_with_exit_2(
    ds01d, fake_gpu_nodes, docker_client, unix_users, port, why
):
    d = start_daemon(ds01d, fake_gpu_nodes)

    result = d.cli("alice", "container-create", "web", "--image", "busybox", "--port", port)

    assert result.returncode == 2, describe(result)
    assert why in result.stderr, describe(result)
    assert not container_exists(docker_client, unix_users["alice"].pw_uid, "web")
