"""user-setup's pure decisions: the starter's device, public keys, settings, the guide."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from ds01.core.starter import (
    Guide,
    first_steps,
    merged_settings,
    public_key_problem,
    ssh_config_block,
    starter_device,
    tunnel_command,
)


def device(uuid: str, kind: str, eq: float, profile: str | None = None, holder: Any = None):
    return {
        "uuid": uuid,
        "kind": kind,
        "profile": profile,
        "gpu_equivalents": eq,
        "reserved": False,
        "holder": holder,
    }


MACHINE = {
    "devices": [
        device("GPU-0", "gpu", 1.0),
        device("GPU-1", "gpu", 1.0),
        device("MIG-a", "mig", 3 / 7, "3g.20gb"),
        device("MIG-b", "mig", 1 / 7, "1g.10gb"),
    ]
}


def limits(used: float = 0, **quota: Any) -> dict[str, Any]:
    base = {
        "gpu_limit": 1,
        "max_gpus_per_container": 1,
        "allow_full_gpu": True,
        "allow_mig": True,
    }
    return {"limits": {**base, **quota}, "usage": {"gpu_equivalents": used}}


def test_the_smallest_free_device_is_chosen_a_mig_slice_over_a_gpu() -> None:
    chosen = starter_device(limits(), MACHINE)
    assert (chosen.mig, chosen.gpus) == ("1g.10gb", 0)
    assert chosen.description.startswith("a MIG slice 1g.10gb")


def test_a_whole_gpu_when_mig_is_not_allowed() -> None:
    chosen = starter_device(limits(allow_mig=False), MACHINE)
    assert (chosen.gpus, chosen.mig) == (1, None)


def test_only_mig_when_whole_gpus_are_not_allowed_and_the_slice_is_taken() -> None:
    machine = {
        "devices": [
            device("GPU-0", "gpu", 1.0),
            device("MIG-a", "mig", 3 / 7, "3g.20gb"),
            device("MIG-b", "mig", 1 / 7, "1g.10gb", holder={"user": "bob", "container": "x"}),
        ]
    }
    chosen = starter_device(limits(allow_full_gpu=False), machine)
    assert chosen.mig == "3g.20gb"


def test_quota_left_bounds_the_choice() -> None:
    # 0.8 of 1 GPU-equivalent used: 0.2 left, so only the 1/7 slice fits.
    assert starter_device(limits(used=0.8), MACHINE).mig == "1g.10gb"
    none_left = starter_device(limits(used=1.0), MACHINE)
    assert not none_left.gpus and not none_left.mig
    assert "quota is used up" in none_left.reason


def test_nothing_free_gives_no_gpu_and_says_why() -> None:
    busy = {"devices": [{**d, "holder": {"user": "bob"}} for d in MACHINE["devices"]]}
    chosen = starter_device(limits(), busy)
    assert (chosen.gpus, chosen.mig) == (0, None)
    assert "in use" in chosen.reason
    assert starter_device(limits(), {"devices": []}).reason == "this machine has no GPU devices"
    assert (
        "allows no GPU"
        in starter_device(limits(allow_full_gpu=False, allow_mig=False), MACHINE).reason
    )


def test_reserved_devices_are_never_chosen() -> None:
    machine = {"devices": [{**device("MIG-b", "mig", 1 / 7, "1g.10gb"), "reserved": True}]}
    assert starter_device(limits(), machine).reason


def test_unlimited_quota_is_none() -> None:
    chosen = starter_device(limits(gpu_limit=None, max_gpus_per_container=None), MACHINE)
    assert chosen.mig == "1g.10gb"


def _key(kind: str = "ssh-ed25519") -> str:
    blob = len(kind).to_bytes(4, "big") + kind.encode() + b"\x00" * 36
    return f"{kind} {base64.b64encode(blob).decode()} me@laptop"


def test_public_keys_are_checked() -> None:
    assert public_key_problem(_key()) is None
    assert public_key_problem(_key("ssh-rsa")) is None
    assert "PRIVATE" in str(public_key_problem("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn"))
    assert "expected one line" in str(public_key_problem("hello world"))
    assert "not base64" in str(public_key_problem("ssh-ed25519 !!!notbase64"))
    # The type in the data must match the type in front.
    mismatched = "ssh-rsa " + _key().split()[1]
    assert "does not belong" in str(public_key_problem(mismatched))


def test_settings_merge_keeps_the_users_values() -> None:
    mine = {"files.watcherExclude": {"**/data/**": False}, "editor.fontSize": 15}
    wanted = {"files.watcherExclude": {"**/data/**": True, "**/outputs/**": True}, "x": 1}
    merged = merged_settings(mine, wanted)
    assert merged == {
        "files.watcherExclude": {"**/data/**": False, "**/outputs/**": True},
        "editor.fontSize": 15,
        "x": 1,
    }
    assert merged_settings(merged, wanted) == merged  # idempotent


def test_ssh_texts() -> None:
    block = ssh_config_block("ds01", "gpu1.lab", "alice", 8888, 20001)
    assert block.splitlines()[0] == "Host ds01"
    assert "    HostName gpu1.lab" in block and "    User alice" in block
    assert "    LocalForward 8888 127.0.0.1:20001" in block
    assert "LocalForward" not in ssh_config_block("ds01", "gpu1.lab", "alice", 8888, None)
    assert tunnel_command("gpu1.lab", "alice", 8888, 20001) == (
        "ssh -N -L 8888:127.0.0.1:20001 alice@gpu1.lab"
    )


@pytest.mark.parametrize("keys", [0, 2])
def test_first_steps_guide(keys: int) -> None:
    url = "http://127.0.0.1:20001/lab?token=abc"
    text = first_steps(
        Guide(
            user="alice",
            host="gpu1.lab",
            alias="ds01",
            workspace="/home/alice/workspace",
            container="notebook",
            device="a MIG slice 1g.10gb (0.142857 GPU-eq)",
            jupyter_url=url,
            host_port=20001,
            local_port=8888,
            ssh_keys=keys,
            files=("/home/alice/.ds01/ssh-config", "/home/alice/.ds01/first-steps.txt"),
        )
    )
    assert url in text
    assert "http://localhost:8888/lab?token=abc" in text
    assert "ssh -N -L 8888:127.0.0.1:20001 alice@gpu1.lab" in text
    assert "container-open notebook" in text
    assert ("ssh-keygen" in text) == (keys == 0)  # only when no key is authorised
    assert "--help, --info, --concepts and --guided" in text
