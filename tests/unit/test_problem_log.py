"""``ProblemLog``: a recurring problem is logged when it appears or changes, not at every
repeat; a success forgets it."""

from __future__ import annotations

import logging

import pytest

from ds01.problem_log import ProblemLog

LOGGER = "ds01.test.problem_log"


def test_a_problem_is_logged_when_it_appears_or_changes_and_forgotten_on_success(
    caplog: pytest.LogCaptureFixture,
) -> None:
    problems = ProblemLog(logging.getLogger(LOGGER), logging.WARNING, "file %s ignored: %s; idle")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert problems.cleared() is False  # nothing was wrong
        problems.failed("OSError: gone", "/x.json")
        problems.failed("OSError: gone", "/x.json")
        problems.failed("ValueError: bad", "/x.json")
        assert problems.cleared() is True
        assert problems.cleared() is False
        problems.failed("ValueError: bad", "/y.json")  # after a success: a new problem again

    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "file /x.json ignored: OSError: gone; idle"),
        (logging.WARNING, "file /x.json ignored: ValueError: bad; idle"),
        (logging.WARNING, "file /y.json ignored: ValueError: bad; idle"),
    ]
