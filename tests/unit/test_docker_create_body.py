"""A Docker create body read as a ds01 create, or refused (``ds01.core.docker_create``).

The body the docker CLI 20.10 sends for ``docker run -d busybox sleep 1`` (recorded) is
the baseline: every field at the CLI's default reads as "not set"; each hardening field
set to what the CLI sends for its flag is refused by name."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from ds01.core.docker_create import (
    HARDENING,
    CreateRefused,
    DockerCreate,
    RunOptions,
    read_create,
)

#: ``docker run -d --name foo busybox sleep 1`` from Debian's docker.io 20.10 CLI.
CLI_BODY = json.loads(
    '{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,'
    '"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,'
    '"Cmd":["sleep","1"],"Image":"busybox","Volumes":{},"WorkingDir":"","Entrypoint":null,'
    '"OnBuild":null,"Labels":{},"HostConfig":{"Binds":null,"ContainerIDFile":"",'
    '"LogConfig":{"Type":"","Config":{}},"NetworkMode":"default","PortBindings":{},'
    '"RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":false,'
    '"VolumeDriver":"","VolumesFrom":null,"CapAdd":null,"CapDrop":null,"CgroupnsMode":"",'
    '"Dns":[],"DnsOptions":[],"DnsSearch":[],"ExtraHosts":null,"GroupAdd":null,'
    '"IpcMode":"","Cgroup":"","Links":null,"OomScoreAdj":0,"PidMode":"","Privileged":false,'
    '"PublishAllPorts":false,"ReadonlyRootfs":false,"SecurityOpt":null,"UTSMode":"",'
    '"UsernsMode":"","ShmSize":0,"ConsoleSize":[0,0],"Isolation":"","CpuShares":0,'
    '"Memory":0,"NanoCpus":0,"CgroupParent":"","BlkioWeight":0,"BlkioWeightDevice":[],'
    '"BlkioDeviceReadBps":null,"BlkioDeviceWriteBps":null,"BlkioDeviceReadIOps":null,'
    '"BlkioDeviceWriteIOps":null,"CpuPeriod":0,"CpuQuota":0,"CpuRealtimePeriod":0,'
    '"CpuRealtimeRuntime":0,"CpusetCpus":"","CpusetMems":"","Devices":[],'
    '"DeviceCgroupRules":null,"DeviceRequests":null,"KernelMemory":0,"KernelMemoryTCP":0,'
    '"MemoryReservation":0,"MemorySwap":0,"MemorySwappiness":-1,"OomKillDisable":false,'
    '"PidsLimit":0,"Ulimits":null,"CpuCount":0,"CpuPercent":0,"IOMaximumIOps":0,'
    '"IOMaximumBandwidth":0,"MaskedPaths":null,"ReadonlyPaths":null},'
    '"NetworkingConfig":{"EndpointsConfig":{}}}'
)
ALICE = {"uid": 1001, "gid": 1001, "user": "alice"}


def body(**host: Any) -> dict[str, Any]:
    """The CLI's body with HostConfig fields set (``Top_X`` sets top-level field X)."""
    made = copy.deepcopy(CLI_BODY)
    for key, value in host.items():
        if key.startswith("Top_"):
            made[key[4:]] = value
        else:
            made["HostConfig"][key] = value
    return made


def test_the_clis_defaults_read_as_a_plain_create() -> None:
    wanted = DockerCreate(image="busybox", run=RunOptions(command=("sleep", "1")))
    assert read_create(CLI_BODY, **ALICE) == wanted


@pytest.mark.parametrize(
    "ids",
    [["1"], ["0", "2"], ["GPU-6a1f0e2c-64f2-5b4c-8d1e-0f2b3c4d5e6f"],
     ["MIG-0b1c2d3e-4f50-5a6b-8c7d-9e0f1a2b3c4d"], ["MIG-GPU-6a1f0e2c/1/0"]],
)  # fmt: skip
def test_gpus_named_by_id_are_read_as_the_cli_sends_them(ids: list[str]) -> None:
    """``--gpus device=0,2`` (``"device=0,2"`` quoted), ``device=GPU-…``, ``device=MIG-…``:
    the ids, for ds01's inventory to resolve; no count."""
    requests = [{"Driver": "", "Count": 0, "DeviceIDs": ids, "Capabilities": [["gpu"]]}]
    wanted = read_create(body(DeviceRequests=requests), **ALICE)
    assert (wanted.gpus, wanted.gpu_ids) == (0, tuple(ids))


def test_what_ds01_honours_is_read() -> None:
    wanted = read_create(
        body(
            Memory=128 * 2**20,
            MemorySwap=128 * 2**20,
            NanoCpus=500_000_000,
            ShmSize=64 * 2**20,
            PortBindings={"8888/tcp": [{"HostIp": "", "HostPort": ""}]},
            Binds=["/home/alice/p:/workspace", "/home/alice/d:/data:rw"],
            DeviceRequests=[{"Driver": "", "Count": 2, "DeviceIDs": None,
                             "Capabilities": [["gpu"]], "Options": {}}],
            AutoRemove=True,
            Top_Env=["A=1", "B=x=y"],
            Top_Tty=True,
            Top_OpenStdin=True,
            Top_User="1001:1001",
            Top_Labels={"com.docker.compose.project": "p"},
        ),
        **ALICE,
    )  # fmt: skip
    assert wanted.memory_bytes == 128 * 2**20 and wanted.cpus == 0.5
    assert wanted.shm_size_bytes == 64 * 2**20 and wanted.ports == ((8888, None),)
    assert (wanted.workspace, wanted.data) == ("/home/alice/p", "/home/alice/d")
    assert wanted.gpus == 2 and wanted.run.auto_remove and wanted.run.tty and wanted.run.stdin_open
    assert wanted.run.env == (("A", "1"), ("B", "x=y"))
    assert wanted.run.labels == (("com.docker.compose.project", "p"),)


#: Each hardening field as the CLI sends its flag.
HARDENING_FLAGS = {
    "Privileged": True,
    "CapAdd": ["SYS_ADMIN"],
    "PidMode": "host",
    "IpcMode": "host",
    "UTSMode": "host",
    "UsernsMode": "host",
    "CgroupnsMode": "host",
    "NetworkMode": "host",
    "Devices": [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda",
                 "CgroupPermissions": "rwm"}],
    "DeviceCgroupRules": ["c 1:3 rwm"],
    "SecurityOpt": ["seccomp=unconfined"],
    "Sysctls": {"net.ipv4.ip_forward": "1"},
    "VolumeDriver": "local",
    "VolumesFrom": ["other"],
    "CgroupParent": "/",
    "Cgroup": "host",
    "Runtime": "runc",
    "GroupAdd": ["docker"],
    "OomKillDisable": True,
    "OomScoreAdj": -1000,
    "Ulimits": [{"Name": "nofile", "Soft": 1, "Hard": 1}],
    "Links": ["other:o"],
    "MaskedPaths": [],  # not "unset": unmasks /proc/kcore and the rest
    "ReadonlyPaths": ["/x"],
}  # fmt: skip


def test_every_hardening_field_has_a_flag_here() -> None:
    assert set(HARDENING_FLAGS) == set(HARDENING)


@pytest.mark.parametrize("field", sorted(HARDENING_FLAGS))
def test_hardening_refusals_name_the_field(field: str) -> None:
    value = HARDENING_FLAGS[field]
    with pytest.raises(CreateRefused) as refused:
        read_create(body(**{field: value}), **ALICE)
    assert field in refused.value.message and refused.value.status == 403


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"Binds": ["/var/run/docker.sock:/var/run/docker.sock"]}, "/workspace and /data"),
        ({"Binds": ["/:/workspace:ro"]}, "options"),
        ({"Binds": ["vol:/workspace"]}, "cannot be mounted at '/workspace'"),
        ({"Binds": ["v._.1002:/x"]}, "not a volume name"),
        ({"Binds": ["../v:/x"]}, "not a volume name"),
        ({"Binds": ["v:relative"]}, "cannot be mounted"),
        ({"Binds": ["v:/x", "w:/x"]}, "Two mounts"),
        ({"Mounts": [{"Type": "volume", "Source": "v", "Target": "/workspace"}]}, "/workspace"),
        ({"Mounts": [{"Type": "volume", "Source": "v", "Target": "/x",
                      "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {
                          "type": "none", "o": "bind", "device": "/etc"}}}}]},
         "VolumeOptions"),
        ({"Mounts": [{"Type": "tmpfs", "Target": "/x"}]}, "named volumes"),
        ({"Binds": [f"v{i}:/x{i}" for i in range(9)]}, "At most 8"),
        ({"Mounts": [{"Type": "bind", "Source": "/", "Target": "/etc"}]}, "/workspace"),
        ({"PortBindings": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "80"}]}}, "127.0.0.1"),
        ({"PortBindings": {"53/udp": [{"HostIp": "", "HostPort": ""}]}}, "TCP"),
        ({"DeviceRequests": [{"Count": -1, "Capabilities": [["gpu"]]}]}, "--gpus all"),
        ({"DeviceRequests": [{"Count": 0, "DeviceIDs": ["0; rm"]}]}, "not a device id"),
        ({"DeviceRequests": [{"Count": 0, "DeviceIDs": [f"{i}" for i in range(65)]}]},
         "at most 64"),
        ({"DeviceRequests": [{"Count": 0, "DeviceIDs": [1]}]}, "list of strings"),
        ({"DeviceRequests": [{"Count": 2, "DeviceIDs": ["0"]}]}, "not both"),
        ({"RestartPolicy": {"Name": "always"}}, "Restart"),
        ({"LogConfig": {"Type": "syslog", "Config": {}}}, "logging"),
        ({"MemorySwap": -1, "Memory": 0}, None),
        ({"MemorySwap": 2**30, "Memory": 2**20}, "swap"),
        ({"Init": False}, "init"),
        ({"PidsLimit": 10}, "PidsLimit"),
        ({"Top_User": "root"}, "run as you"),
        ({"Top_User": "0:0"}, "run as you"),
        ({"Top_Labels": {"ds01.uid": "0"}}, "ds01's own"),
        ({"Top_Labels": {"aime.mlc.USER": "bob"}}, "ds01's own"),
        ({"Top_Env": ["NVIDIA_VISIBLE_DEVICES=all"]}, "sets NVIDIA_VISIBLE_DEVICES"),
        ({"Top_Env": ["CUDA_VISIBLE_DEVICES=0"]}, "sets CUDA_VISIBLE_DEVICES"),
        ({"Top_Volumes": {"/data": {}}}, "Anonymous volumes"),
        ({"Top_Hostname": "other"}, "Hostname"),
        ({"Top_Healthcheck": {"Test": ["CMD", "true"]}}, "Healthcheck"),
        ({"Top_NetworkingConfig": {"EndpointsConfig": {"host": {}}}}, "network"),
        ({"Top_NetworkingConfig": {"EndpointsConfig": {"a": {}, "b": {}}}}, "one network"),
        ({"Top_NetworkingConfig": {"EndpointsConfig": {"p_back": {"IPAMConfig": {
            "IPv4Address": "172.17.0.2"}}}}}, "IPAMConfig"),
        ({"Top_NetworkingConfig": {"EndpointsConfig": {"p_back": {"Aliases": ["a b"]}}}},
         "Aliases"),
        ({"Top_Volumes": {"/other": {}}, "Binds": ["v:/data"]}, "Anonymous volumes"),
        ({"NetworkMode": "container:abc"}, "NetworkMode"),
        ({"NetworkMode": "none"}, "NetworkMode"),
    ],
)
def test_what_ds01_cannot_honour_is_refused_by_name(change: dict[str, Any], words: str) -> None:
    if words is None:  # not a refusal: Docker's own "unlimited swap" default of --memory
        read_create(body(**change), **ALICE)
        return
    with pytest.raises(CreateRefused) as refused:
        read_create(body(**change), **ALICE)
    assert words in refused.value.message


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {},
        [],
        "x",
        {"Image": ""},
        {"Image": "b", "Cmd": [1]},
        {"Image": "b", "HostConfig": []},
    ],
)
def test_an_empty_or_malformed_body_is_refused(bad: Any) -> None:
    """The CVE-2024-41110 shape: a create with no body must not pass as an empty one."""
    with pytest.raises(CreateRefused) as refused:
        read_create(bad, **ALICE)
    assert refused.value.status == 400


def test_a_compose_service_reads_as_its_aliases_and_named_volumes() -> None:
    compose = body(
        NetworkMode="p_back", Binds=["p_data:/data:rw"], Links=[], Top_Volumes={"/data": {}},
        Top_NetworkingConfig={"EndpointsConfig": {"p_back": {"Aliases": ["web"],
                                                             "IPAMConfig": {}}}},
    )  # fmt: skip
    wanted = read_create(compose, **ALICE)
    assert wanted.run.aliases == ("web",)
    assert wanted.run.volumes == (("p_data", "/data"),)
    assert (wanted.workspace, wanted.data) == (None, None)
    mounted = {"Type": "volume", "Source": "cache", "Target": "/cache/", "ReadOnly": False}
    by_mount = read_create(body(Mounts=[mounted]), **ALICE)
    assert by_mount.run.volumes == (("cache", "/cache"),)
