"""``ProblemLog``: a problem that recurs at every try is logged when it appears or changes,
not at every repeat."""

from __future__ import annotations

import logging


class ProblemLog:
    """Logs a recurring problem once while it stays the same.

    Contract: :meth:`failed` is called after every try that failed, with the problem in
    words and the values ``message`` names before it; it logs ``message % (*args, problem)``
    at ``level`` (the problem fills the last ``%s``) when no problem was logged since the
    last success, or another one. :meth:`cleared` is called after a try that worked and
    tells whether a problem was pending (the caller may say once that things work again).
    One thread at a time.
    """

    def __init__(self, logger: logging.Logger, level: int, message: str) -> None:
        self._logger = logger
        self._level = level
        self._message = message
        self._last: str | None = None

    def failed(self, problem: str, *args: object) -> None:
        """A try failed with ``problem``: logged unless it is the one logged last."""
        if problem != self._last:
            self._logger.log(self._level, self._message, *args, problem)
        self._last = problem

    def cleared(self) -> bool:
        """A try worked: ``True`` if a problem was pending until now (it is forgotten)."""
        pending, self._last = self._last is not None, None
        return pending
