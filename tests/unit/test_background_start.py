"""ds01d's background work (its loops, backups and exporter) begins after the first answer;
a stop asked before then means it never begins; a failure to begin stops ds01d."""

from __future__ import annotations

import threading

from ds01.daemon.run import _BackgroundStart

WAIT_S = 10.0


def test_the_work_begins_once_the_first_request_is_answered() -> None:
    answered, begun, failed = threading.Event(), threading.Event(), threading.Event()
    background = _BackgroundStart(answered, begun.set, fail=failed.set)
    background.begin()
    answered.set()
    assert begun.wait(WAIT_S)
    assert background.error is None and not failed.is_set()


def test_a_stop_asked_before_the_first_answer_means_the_work_never_begins() -> None:
    answered, calls = threading.Event(), []
    background = _BackgroundStart(answered, lambda: calls.append("start"), fail=lambda: None)
    background.begin()
    background.request_stop()
    answered.set()
    background._thread.join(WAIT_S)
    assert calls == []


def test_a_failure_to_begin_is_kept_and_stops_ds01d() -> None:
    answered, failed = threading.Event(), threading.Event()

    def start() -> None:
        raise OSError("no thread left")

    background = _BackgroundStart(answered, start, fail=failed.set)
    background.begin()
    answered.set()
    assert failed.wait(WAIT_S)
    assert isinstance(background.error, OSError)
