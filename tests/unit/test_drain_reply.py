"""``Reply``: the worker of a request and ds01d's drain never both answer it."""

from __future__ import annotations

from ds01.daemon.connections import Reply


def test_the_drain_answers_a_request_no_worker_has_begun_and_the_worker_then_skips_it() -> None:
    reply = Reply()
    assert reply.take() == "queued"  # the drain says: nothing was done
    assert not reply.run()
    assert not reply.claim()


def test_the_drain_answers_a_running_request_and_the_worker_then_writes_nothing() -> None:
    reply = Reply()
    assert reply.run()
    assert reply.take() == "running"  # the drain says: outcome unknown
    assert not reply.claim()
    assert reply.take() is None  # and it answers only once


def test_an_answer_being_written_is_left_to_its_worker() -> None:
    reply = Reply()
    assert reply.run()
    assert reply.claim()
    assert reply.take() is None
    assert reply.claim()  # the rest of its answer
    assert reply.state == "answering"
