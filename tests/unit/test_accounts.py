"""The owner's lines in a container's /etc/passwd and /etc/group (core.accounts)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.core.accounts import BASH, SH, Account, group_with, login_shell, passwd_with

ALICE = Account(name="alice", uid=1001, gid=1001, group="alice", home="/workspace")
UBUNTU_PASSWD = (
    "root:x:0:0:root:/root:/bin/bash\n"
    "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
    "ubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash\n"
)


def entries(text: str) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":") for line in text.splitlines()}


def test_the_owner_is_added_with_the_workspace_as_home_and_the_image_users_kept():
    result = entries(passwd_with(UBUNTU_PASSWD, ALICE))
    assert result["alice"] == ["alice", "x", "1001", "1001", "alice", "/workspace", BASH]
    assert set(result) == {"root", "daemon", "ubuntu", "alice"}


def test_an_image_user_with_the_owners_uid_or_name_gives_way():
    same_uid = replace_uid = Account(name="bob", uid=1000, gid=1000, group="bob", home="/w")
    result = entries(passwd_with(UBUNTU_PASSWD + "bob:x:4242:4242::/home/bob:/bin/sh\n", same_uid))
    assert "ubuntu" not in result
    assert result["bob"][2] == str(replace_uid.uid)
    assert [line for line in result.values() if line[2] == "4242"] == []


def test_the_shell_is_sh_unless_the_images_root_uses_bash():
    assert login_shell("root:x:0:0:root:/root:/bin/ash\n") == SH
    assert login_shell("") == SH
    assert login_shell(UBUNTU_PASSWD) == BASH


def test_the_owners_group_replaces_one_with_its_name_or_gid():
    groups = "root:x:0:\nusers:x:100:\nubuntu:x:1000:\nalice:x:77:\n"
    result = entries(group_with(groups, Account("al", 1001, 1000, "alice", "/w")))
    assert result["alice"] == ["alice", "x", "1000", ""]
    assert set(result) == {"root", "users", "alice"}


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "a:b"},
        {"name": "a\nroot::0:0::/:/bin/sh"},
        {"group": ""},
        {"home": "/w\n"},
        {"uid": 0},
        {"gid": 0},
    ],
)
def test_values_that_would_forge_another_line_are_refused(bad):
    fields = {"name": "alice", "uid": 1001, "gid": 1001, "group": "alice", "home": "/workspace"}
    with pytest.raises(ValueError):
        Account(**{**fields, **bad})


@given(
    st.text()
    | st.lists(st.sampled_from(["alice", "alice:x", "x:x:1001", "root:x:0:0"])).map("\n".join)
)
def test_whatever_the_image_holds_the_owner_has_exactly_one_line_and_the_rest_is_kept(passwd):
    result = passwd_with(passwd, ALICE).split("\n")
    assert result[-1] == ""
    assert [line for line in result if line.split(":")[0] == "alice"] == [
        f"alice:x:1001:1001:alice:/workspace:{login_shell(passwd)}"
    ]
    others = [
        line
        for line in passwd.split("\n")
        if line and line.split(":")[0] != "alice" and line.split(":")[2:3] != ["1001"]
    ]
    assert result[:-2] == others
