"""``PeriodicPass``: a daemon thread that runs one pass, waits, and runs the next.

The lifecycle loop, the energy meter, the disk meter and the queue dispatcher are such
threads; the dispatcher is also woken early, by a condition others notify (``wake``). A
pass that fails is reported to the loop's ``PassTracker`` (logged once per fault, its recovery once:
``ds01.daemon.health``) and the next one tries again: observation and enforcement fail
soft, ds01d goes on.
"""

from __future__ import annotations

import abc
import logging
import threading

from ds01.daemon.health import PassTracker
from ds01.errors import StateDamaged


class PeriodicPass(abc.ABC):
    """Runs :meth:`run_pass` every :meth:`interval_seconds` in a thread of its own.

    Contract: :meth:`start` once (again only after :meth:`stop`); :meth:`stop` returns once
    the thread has ended or ``timeout_seconds`` passed. ``run_pass`` may raise: the
    exception goes to :attr:`tracker`, which logs each fault once and the recovery once;
    ``StateDamaged`` is not logged at all (the store logs it once).
    The interval is asked after every pass (:meth:`wait_seconds`, which may shorten it), so
    a configuration change takes effect at the next wait. With ``wake``, a notify of that
    condition ends the wait at once (the next pass starts); :meth:`request_stop` notifies it
    too. The loop never holds ``wake`` while it runs a pass.
    """

    #: The thread's name, e.g. "ds01-lifecycle"; subclasses set it.
    thread_name = "ds01-periodic"
    #: What one pass is called in the log, e.g. "lifecycle pass".
    work_name = "pass"
    #: The doctor's name for the loop, e.g. "lifecycle".
    check_name = "periodic"
    #: What goes undone while the passes fail, e.g. "idle containers are not reclaimed".
    consequence = "its work is not done"

    def __init__(self, wake: threading.Condition | None = None) -> None:
        self._wake = wake
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.tracker = PassTracker(
            self.check_name,
            self.work_name,
            self.consequence,
            interval=self.interval_seconds,
            logger=logging.getLogger(type(self).__module__),
        )

    @abc.abstractmethod
    def run_pass(self) -> object:
        """One pass; its result is the subclass's business."""

    @abc.abstractmethod
    def interval_seconds(self) -> float:
        """Seconds to wait after a pass."""

    def wait_seconds(self) -> float:
        """Seconds to wait after this pass: :meth:`interval_seconds`, unless a subclass
        knows of work due sooner."""
        return self.interval_seconds()

    def start(self) -> None:
        """Run passes in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            raise RuntimeError(f"the {self.work_name} thread is already running")
        self._stop.clear()
        self.tracker.started()
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Begin no new pass (the one under way finishes)."""
        self._stop.set()
        if self._wake is not None:
            with self._wake:
                self._wake.notify_all()

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked: a long pass ends early at its next step."""
        return self._stop.is_set()

    def stop(self, timeout_seconds: float = 5.0) -> bool:
        """``request_stop``, then wait up to ``timeout_seconds`` for the pass under way;
        return whether the thread has ended."""
        self.request_stop()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout_seconds)
        return not thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_pass()
            except StateDamaged:
                pass  # the store logged it once; each pass would repeat it
            except Exception as exc:  # the next pass tries again; the daemon goes on
                self.tracker.failed(exc)
            else:
                self.tracker.succeeded()
            try:
                seconds = self.wait_seconds()
            except Exception:  # a wait of the usual length, never a loop that ends
                seconds = self.interval_seconds()
            self._wait(seconds)

    def _wait(self, seconds: float) -> None:
        """Until ``seconds`` have passed, a stop is asked, or ``wake`` is notified."""
        if self._wake is None:
            self._stop.wait(seconds)
            return
        with self._wake:
            if not self._stop.is_set():
                self._wake.wait(seconds)


__all__ = ["PeriodicPass"]
