"""``ds01.core.slurm_sync`` (resource-limits.yaml into Slurm's accounting) and
``ds01.core.slurm_gres`` (a node's GRES lines): pure, no Slurm here (tests/e2e/test_slurm_sync.py
runs them against a real cluster)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.config.limits import ResourceLimitsConfig
from ds01.core import slurm_gres
from ds01.core.slurm_sync import (
    DEFAULT_ACCOUNT,
    DEFAULT_QOS,
    Accounting,
    Change,
    QosLimits,
    apply,
    candidate_users,
    current_accounting,
    desired_accounting,
    diff,
    limit_sources,
)
from ds01.errors import InvalidInput
from ds01.model.device import Device, Inventory

USERS = ("alice", "bob", "carol", "dave")
GROUPS = ("phd", "msc", "staff")


def _config(data: dict[str, Any]) -> ResourceLimitsConfig:
    return ResourceLimitsConfig.model_validate(data)


# -- the mapping ---------------------------------------------------------------------------------


def test_limits_become_qos_fields_and_groups_accounts() -> None:
    config = _config(
        {
            "defaults": {"priority": 10, "gpu_limit": 1, "max_containers": 2},
            "groups": {
                "phd": {"members": ["alice"], "priority": 40, "gpu_limit": 2.5},
                "msc": {"max_runtime_hours": 1.5, "gpu_limit": None},
            },
            "users": {"carol": {"max_containers": None}},
        }
    )
    state = desired_accounting(config, {"alice": [], "bob": ["msc"], "carol": [], "erin": []})
    assert state.qos["ds01-group-phd"] == QosLimits(40, 3, 2, 48 * 60)
    assert state.qos["ds01-group-msc"] == QosLimits(10, None, 2, 90)
    assert state.qos[DEFAULT_QOS] == QosLimits(10, 1, 2, 48 * 60)
    # carol's own entry differs from the defaults: a QOS of her own.
    assert state.qos["ds01-user-carol"] == QosLimits(10, 1, None, 48 * 60)
    assert state.accounts == {"phd", "msc", DEFAULT_ACCOUNT}
    assert state.associations == {
        ("alice", "phd"): "ds01-group-phd",
        ("bob", "msc"): "ds01-group-msc",
        ("carol", DEFAULT_ACCOUNT): "ds01-user-carol",
        ("erin", DEFAULT_ACCOUNT): DEFAULT_QOS,
    }
    assert state.default_accounts == {
        "alice": "phd",
        "bob": "msc",
        "carol": DEFAULT_ACCOUNT,
        "erin": DEFAULT_ACCOUNT,
    }
    # priority is also each association's shares for fair share.
    assert state.fairshares == {
        ("alice", "phd"): 40,
        ("bob", "msc"): 10,
        ("carol", DEFAULT_ACCOUNT): 10,
        ("erin", DEFAULT_ACCOUNT): 10,
    }


def test_a_user_in_two_groups_gets_the_merged_limits_on_both_associations() -> None:
    config = _config(
        {
            "groups": {
                "phd": {"members": ["alice"], "gpu_limit": 2},
                "staff": {"members": ["alice"], "priority": 90},
            }
        }
    )
    state = desired_accounting(config, {"alice": []})
    merged = state.qos["ds01-user-alice"]
    assert (merged.priority, merged.max_gpus_per_user) == (90, 2)
    assert state.associations == {
        ("alice", "phd"): "ds01-user-alice",
        ("alice", "staff"): "ds01-user-alice",
    }
    assert state.default_accounts == {"alice": "phd"}


def test_candidate_users_are_named_members_and_unix_group_members() -> None:
    config = _config(
        {
            "groups": {"phd": {"members": ["alice"]}, "msc": {"unix_group": "students"}},
            "users": {"dave": {}},
        }
    )
    found = candidate_users(config, {"students": ["bob"], "phd": ["carol"], "other": ["x"]})
    assert found == {"alice", "bob", "carol", "dave"}


@pytest.mark.parametrize("group", ["Has Space", "ds01-default", "x,y"])
def test_group_names_slurm_cannot_take_are_refused(group: str) -> None:
    config = ResourceLimitsConfig.model_construct(groups={group: _config({}).defaults})
    with pytest.raises(InvalidInput, match="Slurm account"):
        desired_accounting(config, {})


def test_user_names_sacctmgr_would_split_are_refused() -> None:
    with pytest.raises(InvalidInput, match="Slurm user name"):
        desired_accounting(_config({}), {"a=b": []})


def test_two_users_whose_qos_names_fold_together_are_refused() -> None:
    config = _config({"users": {"Bob": {"gpu_limit": 2}, "bob": {"gpu_limit": 3}}})
    with pytest.raises(InvalidInput, match="QOS of their own"):
        desired_accounting(config, {"Bob": [], "bob": []})


# -- reading sacctmgr ----------------------------------------------------------------------------

# As Slurm 22.05's `sacctmgr --parsable2 --noheader show ...` prints them.
QOS_TEXT = """normal|0|||
ds01-default|10|gres/gpu=1|2|1-00:00:00
ds01-group-phd|40|cpu=8,gres/gpu=3||01:30:00
ds01-user-erin|10|||
"""
ACCOUNT_TEXT = """phd|ds01
ds01-default|ds01
root|root
theirs|physics
"""
ASSOC_TEXT = """root||normal||1
root|root|normal||1
phd||normal||1
phd|alice|ds01-group-phd|ds01-group-phd|40
phd|bob|ds01-group-phd,normal|ds01-group-phd|1
ds01-default|erin|ds01-user-erin|normal|parent
theirs|alice|normal|normal|1
"""
USER_TEXT = """alice|phd
bob|phd
erin|ds01-default
root|root
"""


def test_listings_parse_to_what_ds01_owns() -> None:
    state = current_accounting(QOS_TEXT, ACCOUNT_TEXT, ASSOC_TEXT, USER_TEXT)
    assert state.qos == {
        "ds01-default": QosLimits(10, 1, 2, 24 * 60),
        "ds01-group-phd": QosLimits(40, 3, None, 90),
        "ds01-user-erin": QosLimits(10, None, None, None),
    }
    assert state.accounts == {"phd", "ds01-default"}
    # bob allows two QOS and erin's default is another: both read as "to be set".
    assert state.associations == {
        ("alice", "phd"): "ds01-group-phd",
        ("bob", "phd"): None,
        ("erin", "ds01-default"): None,
    }
    assert state.default_accounts == {"alice": "phd", "bob": "phd", "erin": "ds01-default"}
    assert state.fairshares == {
        ("alice", "phd"): 40,
        ("bob", "phd"): 1,
        ("erin", "ds01-default"): None,  # "parent": to be set
    }


def test_change_argv_is_sacctmgr_words() -> None:
    assert Change("add", "user", "bob", "msc", ("QOS=q", "DefaultQOS=q")).argv() == [
        "add",
        "user",
        "bob",
        "Account=msc",
        "QOS=q",
        "DefaultQOS=q",
    ]
    assert Change("delete", "user", "bob", "msc").argv() == [
        "delete",
        "user",
        "where",
        "name=bob",
        "account=msc",
    ]
    assert Change("modify", "qos", "ds01-x", settings=("Priority=3",)).argv() == [
        "modify",
        "qos",
        "where",
        "name=ds01-x",
        "set",
        "Priority=3",
    ]


# -- the diff: one sync makes the state, a second finds nothing ----------------------------------

_limit_values = st.fixed_dictionaries(
    {},
    optional={
        "priority": st.integers(0, 1000),
        "gpu_limit": st.none() | st.sampled_from([0, 0.5, 1, 2, 3.5]),
        "max_containers": st.none() | st.integers(0, 5),
        "max_runtime_hours": st.none() | st.sampled_from([0.5, 1, 24, 48.25]),
    },
)


@st.composite
def _configs(draw: st.DrawFn) -> tuple[ResourceLimitsConfig, dict[str, list[str]]]:
    groups = {
        name: {**draw(_limit_values), "members": draw(st.lists(st.sampled_from(USERS)))}
        for name in draw(st.lists(st.sampled_from(GROUPS), unique=True))
    }
    users = {name: draw(_limit_values) for name in draw(st.lists(st.sampled_from(USERS)))}
    config = _config({"defaults": draw(_limit_values), "groups": groups, "users": users})
    unix = {user: draw(st.lists(st.sampled_from(GROUPS))) for user in USERS}
    return config, unix


@st.composite
def _states(draw: st.DrawFn) -> Accounting:
    """Any state ds01 could find: its objects as a sync, an admin or an older config left
    them (associations naming a QOS or not, default accounts among the user's)."""
    qos_names = draw(
        st.lists(st.sampled_from(["ds01-default", "ds01-group-phd", "ds01-user-bob", "ds01-old"]))
    )
    qos = {
        name: QosLimits(
            draw(st.integers(0, 1000)),
            draw(st.none() | st.integers(0, 4)),
            draw(st.none() | st.integers(0, 5)),
            draw(st.none() | st.integers(1, 3000)),
        )
        for name in qos_names
    }
    accounts = frozenset(draw(st.lists(st.sampled_from([*GROUPS, DEFAULT_ACCOUNT, "gone"]))))
    if not accounts:
        return Accounting(qos=qos)
    pairs = draw(st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from(sorted(accounts)))))
    associations = {
        pair: draw(st.none() | st.sampled_from(sorted(qos))) if qos else None for pair in pairs
    }
    defaults = {
        user: draw(st.sampled_from(sorted(a for u, a in associations if u == user)))
        for user, _ in associations
    }
    # Shares as a sync, an admin (any number) or Slurm's default ("parent": None) left them.
    fairshares = {pair: draw(st.none() | st.integers(1, 1000)) for pair in associations}
    return Accounting(qos, accounts, associations, defaults, fairshares)


@settings(max_examples=300, deadline=None)
@given(_configs(), _states())
def test_applying_the_diff_reaches_the_desired_state_and_a_second_diff_is_empty(
    configured: tuple[ResourceLimitsConfig, dict[str, list[str]]], current: Accounting
) -> None:
    config, unix = configured
    users = candidate_users(config, {g: [u for u, gs in unix.items() if g in gs] for g in GROUPS})
    desired = desired_accounting(config, {user: unix[user] for user in users})
    after = apply(current, diff(desired, current))
    assert after.to_dict() == desired.to_dict()
    assert diff(desired, after) == []


def test_a_changed_priority_modifies_the_shares_of_the_association_only() -> None:
    config = _config({"groups": {"phd": {"members": ["alice"], "priority": 5}}})
    synced = desired_accounting(config, {"alice": []})
    config = _config({"groups": {"phd": {"members": ["alice"], "priority": 70}}})
    changes = diff(desired_accounting(config, {"alice": []}), synced)
    assert [c.describe() for c in changes] == [
        "sacctmgr modify qos where name=ds01-group-phd set Priority=70 "
        "MaxTRESPerUser=gres/gpu=1 MaxJobsPerUser=3 MaxWall=2880",
        "sacctmgr modify user where name=alice account=phd set QOS=ds01-group-phd "
        "DefaultQOS=ds01-group-phd Fairshare=70",
    ]


def test_nothing_is_added_before_what_it_uses_or_removed_while_used() -> None:
    config = _config({"groups": {"phd": {"members": ["alice"], "priority": 5}}})
    current = Accounting(
        qos={"ds01-old": QosLimits(1, None, None, None)},
        accounts=frozenset({"gone"}),
        associations={("alice", "gone"): "ds01-old"},
        default_accounts={"alice": "gone"},
    )
    changes = diff(desired_accounting(config, {"alice": []}), current)
    order = [(c.action, c.entity, c.name, c.account) for c in changes]
    assert order == [
        ("add", "qos", DEFAULT_QOS, None),
        ("add", "qos", "ds01-group-phd", None),
        ("add", "account", "phd", None),
        ("add", "user", "alice", "phd"),
        ("modify", "user", "alice", None),  # default account moves before "gone" goes
        ("delete", "user", "alice", "gone"),
        ("delete", "account", "gone", None),
        ("delete", "qos", "ds01-old", None),
    ]


# -- gres ----------------------------------------------------------------------------------------


def _gpu(index: int, node: str | None = None) -> Device:
    return Device(f"GPU-{index}", "gpu", index, f"GPU-{index}", "A100", 40960, device_node=node)


def _mig(index: int, profile: str, instance: int, start: int) -> Device:
    return Device(
        f"MIG-{index}-{instance}",
        "mig",
        index,
        f"GPU-{index}",
        "A100",
        5120,
        profile=profile,
        slices=int(profile[0]),
        instance_id=instance,
        start=start,
    )


MIG_MINORS = """config 1
monitor 2
gpu2/gi1/access 30
gpu2/gi1/ci0/access 31
gpu2/gi9/access 120
gpu2/gi9/ci0/access 121
gpu3/gi2/access 40
"""


def test_gres_lines_one_per_device_in_inventory_order_reserved_left_out() -> None:
    devices = (
        _mig(2, "1g.5gb", 9, 6),
        _gpu(1),
        _gpu(0, "/x/nvidia0"),
        _mig(2, "3g.20gb", 1, 0),
        _gpu(3),
    )
    inventory = Inventory("nvml", devices=devices, reserved=frozenset({"GPU-3"}))
    caps = slurm_gres.mig_cap_files(devices, slurm_gres.parse_mig_minors(MIG_MINORS))
    assert caps["MIG-2-9"] == ["/dev/nvidia-caps/nvidia-cap120", "/dev/nvidia-caps/nvidia-cap121"]
    lines = slurm_gres.gres_lines(inventory, caps)
    # Slurm numbers a device by its file: GPU-0's node is /x/nvidia0, the slices share GPU 2's.
    assert [(g.index, g.uuid) for g in lines] == [
        (0, "GPU-0"),
        (1, "GPU-1"),
        (2, "MIG-2-1"),
        (2, "MIG-2-9"),
    ]
    text = slurm_gres.gres_conf("n1", lines)
    # With MIG slices on the node, whole GPUs are typed too (Slurm refuses a mix).
    assert "# index 0: GPU-0\nNodeName=n1 Name=gpu Type=full File=/x/nvidia0\n" in text
    assert "NodeName=n1 Name=gpu Type=full File=/dev/nvidia1\n" in text
    assert (
        "# index 2: MIG-2-9\nNodeName=n1 Name=gpu Type=1g.5gb MultipleFiles=/dev/nvidia2,"
        "/dev/nvidia-caps/nvidia-cap120,/dev/nvidia-caps/nvidia-cap121\n"
    ) in text
    assert slurm_gres.slurm_index("/dev/nvidia-x") is None
    assert (
        slurm_gres.node_line("n1", lines)
        == "NodeName=n1 Gres=gpu:1g.5gb:1,gpu:3g.20gb:1,gpu:full:2"
    )
    assert slurm_gres.node_line("n1", []) == "NodeName=n1"


def test_a_mig_slice_without_cap_files_is_refused() -> None:
    # gpu3/gi2 lists no compute instance: Slurm could not be given the slice's files.
    devices = (_mig(3, "1g.5gb", 2, 0),)
    caps = slurm_gres.mig_cap_files(devices, slurm_gres.parse_mig_minors(MIG_MINORS))
    with pytest.raises(InvalidInput, match=r"3:1g\.5gb#2"):
        slurm_gres.gres_lines(Inventory("simulated", devices=devices), caps)


def test_whole_gpus_alone_are_untyped() -> None:
    lines = slurm_gres.gres_lines(Inventory("simulated", devices=(_gpu(1), _gpu(0))))
    assert [line.text("n") for line in lines] == [
        "NodeName=n Name=gpu File=/dev/nvidia0",
        "NodeName=n Name=gpu File=/dev/nvidia1",
    ]
    assert slurm_gres.node_line("n", lines) == "NodeName=n Gres=gpu:2"


# -- check-limits --explain: where Slurm holds each limit -----------------------------------------


def test_limit_sources_name_the_qos_field_and_association_slurm_holds() -> None:
    config = _config({"groups": {"phd": {"members": ["alice"], "priority": 40, "gpu_limit": 2}}})
    synced = desired_accounting(config, {"alice": []})
    sources = limit_sources(config, "alice", [], synced)
    assert sources == {
        "priority": "QOS ds01-group-phd Priority=40; association phd/alice Fairshare=40",
        "gpu_limit": "QOS ds01-group-phd MaxTRESPerUser=gres/gpu=2",
        "max_containers": "QOS ds01-group-phd MaxJobsPerUser=3",
        "max_runtime_hours": "QOS ds01-group-phd MaxWall=2880",
    }


def test_limit_sources_say_what_a_sync_would_change() -> None:
    config = _config({"groups": {"phd": {"members": ["alice"], "gpu_limit": None}}})
    stale = Accounting(
        qos={"ds01-group-phd": QosLimits(50, 1, 3, 2880)},
        accounts=frozenset({"phd"}),
        associations={("alice", "phd"): "ds01-group-phd"},
        default_accounts={"alice": "phd"},
        fairshares={("alice", "phd"): None},
    )
    sources = limit_sources(config, "alice", [], stale)
    assert sources["gpu_limit"] == (
        "QOS ds01-group-phd MaxTRESPerUser=gres/gpu=1; a sync would set MaxTRESPerUser none"
    )
    assert sources["priority"].endswith("Fairshare=parent; a sync would set Fairshare=50")
    nothing = limit_sources(config, "alice", [], Accounting())
    assert nothing["max_containers"] == (
        "QOS ds01-group-phd (not in Slurm); a sync would set MaxJobsPerUser=3"
    )
    assert nothing["priority"].endswith("; association phd/alice (not in Slurm)")
