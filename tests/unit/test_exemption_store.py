"""The state store's exemptions as a rename moves them: a container's own follow it, the
user's others and other users' stay."""

from __future__ import annotations

from pathlib import Path

from ds01.runtime.store import ExemptionRecord, StateStore


def exemption(id_: str, user: str, container: str | None) -> ExemptionRecord:
    return ExemptionRecord(id_, user, container, "2030-01-01T00:00:00+00:00", "r", "erin", "t")


def test_a_rename_moves_the_containers_exemptions_and_only_those(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "ds01.db")
    for record in (
        exemption("e1", "alice", "train"),
        exemption("e2", "alice", "train"),
        exemption("e3", "alice", None),  # all of alice's containers
        exemption("e4", "alice", "other"),
        exemption("e5", "bob", "train"),
    ):
        store.add_exemption(record)
    assert store.move_exemptions("alice", "train", "train-old") == ["e1", "e2"]
    assert {(r.id, r.user, r.container) for r in store.exemptions()} == {
        ("e1", "alice", "train-old"),
        ("e2", "alice", "train-old"),
        ("e3", "alice", None),
        ("e4", "alice", "other"),
        ("e5", "bob", "train"),
    }
    assert store.move_exemptions("alice", "train", "x") == []  # nothing left under it
