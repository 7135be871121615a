"""The ``hub:`` section of resource-limits.yaml (who may act on behalf of a user) and the
client's header that names that user."""

from __future__ import annotations

import pytest

from ds01.cli.client import _request_bytes
from ds01.model.hub import ON_BEHALF_HEADER
from support import limits_from, limits_refusal


def test_nobody_is_a_hub_by_default() -> None:
    hub = limits_from("defaults: {}\n").hub
    assert hub.users == () and hub.unix_groups == ()
    assert not hub.admits("jupyterhub", 990, ("jupyterhub",))


def test_a_hub_is_named_by_user_or_unix_group() -> None:
    hub = limits_from(
        """
        hub:
          users: [jupyterhub]
          unix_groups: [ds01-hub]
        """
    ).hub
    assert hub.admits("jupyterhub", 990, ())
    assert hub.admits("other", 991, ("staff", "ds01-hub"))
    assert not hub.admits("alice", 1001, ("phd",))


def test_a_hub_has_caps_of_its_own_with_defaults() -> None:
    default = limits_from("hub:\n  users: [jupyterhub]\n").hub
    assert (default.connections, default.user_requests, default.workers, default.waiting) == (
        512, 16, 16, 64
    )  # fmt: skip
    tuned = limits_from("hub:\n  users: [jupyterhub]\n  connections: 900\n  user_requests: 4\n").hub
    assert (tuned.connections, tuned.user_requests) == (900, 4)


def test_root_is_never_a_hub() -> None:
    hub = limits_from("hub:\n  unix_groups: [root]\n").hub
    assert not hub.admits("root", 0, ("root",))
    error = limits_refusal("hub:\n  users: [jupyterhub, root]\n")
    assert "limits.yaml:2" in str(error) and "root may not be a hub identity" in str(error)


@pytest.mark.parametrize(
    "text",
    [
        "hub:\n  users: [bad name]\n",
        "hub:\n  groups: [x]\n",  # unknown key
        "hub:\n  users: jupyterhub\n",  # not a list
        "hub:\n  workers: 0\n",  # a cap of nothing
        "hub:\n  connections: many\n",
    ],
)
def test_invalid_hub_sections_are_refused(text: str) -> None:
    assert "hub" in str(limits_refusal(text))


def test_the_client_names_the_user_only_when_asked() -> None:
    plain = _request_bytes("GET", "/v1/whoami", None, None)
    assert ON_BEHALF_HEADER.encode() not in plain
    behalf = _request_bytes("GET", "/v1/whoami", None, None, "alice")
    assert f"\r\n{ON_BEHALF_HEADER}: alice\r\n".encode() in behalf
