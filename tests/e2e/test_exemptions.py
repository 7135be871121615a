"""Exemptions from idle and runtime limits: only admins grant, list and revoke them; each
change is an event; an unknown user or a bad name is refused."""

from __future__ import annotations

from typing import Any

from support import describe


def test_admins_grant_list_and_revoke_exemptions_and_others_cannot(ds01d: Any) -> None:
    d = ds01d()
    granted = d.cli_json(
        "erin", "admin", "exempt", "alice", "--container", "thesis", "--hours", "72",
        "--reason", "thesis deadline",
    )  # fmt: skip
    assert (granted["user"], granted["container"], granted["created_by"]) == (
        "alice", "thesis", "erin"
    )  # fmt: skip
    assert d.events_where(action="lifecycle.exempt", user="erin")

    denied = d.cli("alice", "admin", "exempt", "alice", "--hours", "1", "--reason", "mine")
    assert denied.returncode == 5, describe(denied)
    assert d.cli("alice", "admin", "exemptions").returncode == 5
    assert d.events_where(action="auth.denied", user="alice")

    assert [e["id"] for e in d.cli_json("erin", "admin", "exemptions")] == [granted["id"]]
    unknown = d.cli("erin", "admin", "exempt", "nobody-here", "--hours", "1", "--reason", "x")
    assert unknown.returncode == 4, describe(unknown)
    bad = d.cli("erin", "admin", "exempt", "bob", "--container", "../x", "--hours", "1",
                "--reason", "x")  # fmt: skip
    assert bad.returncode == 2, describe(bad)

    assert d.cli("alice", "admin", "unexempt", granted["id"]).returncode == 5
    revoked = d.cli("erin", "admin", "unexempt", granted["id"])
    assert revoked.returncode == 0, describe(revoked)
    assert d.cli_json("erin", "admin", "exemptions") == []
    assert d.events_where(action="lifecycle.unexempt", user="erin")
