"""The login node's exporter (``ds01 admin slurm exporter``): Slurm's pending queue under
ds01's queue metric names, for Prometheus (``ds01.core.slurm_queue`` says what counts).

One ``squeue`` per scrape at most (``ds01.runtime.slurm.cluster_containers``): its answer is
kept for ``CACHE_SECONDS``, so several Prometheus servers (or a scrape and a person's curl)
share one call, and slurmctld sees one small RPC every few seconds whoever asks. When
``squeue`` fails, ``ds01_slurm_up`` is 0 and the queue's families are left out (unknown, not
empty). It reads Slurm as the user it runs as: with ``PrivateData=jobs`` in ``slurm.conf``,
run it as a Slurm operator or it sees its own jobs only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ds01 import __version__
from ds01.core.slurm_queue import parse_pending, queue_metrics
from ds01.core.slurm_squeue import SqueueAnswer
from ds01.errors import SlurmError

log = logging.getLogger(__name__)

#: Seconds one ``squeue`` answer serves scrapes for.
CACHE_SECONDS = 5.0
#: Where the login node's exporter listens unless told (ds01d's is 9101 on a node).
DEFAULT_LISTEN = "127.0.0.1:9102"


def families(squeue_answer: SqueueAnswer | None, now: float) -> Iterator[Metric]:
    """The families of one scrape: ``squeue_answer`` (``None``: ``squeue`` failed) at
    ``now`` (seconds since the epoch). An answer that cannot be read counts as no answer."""
    waiting = None
    if squeue_answer is not None:
        try:
            waiting = parse_pending(squeue_answer)
        except SlurmError as exc:
            log.warning("%s", exc.message)
    build = GaugeMetricFamily("ds01_build_info", "ds01 version running the exporter (always 1).",
                              labels=["version"])  # fmt: skip
    build.add_metric([__version__], 1)
    yield build
    up = GaugeMetricFamily("ds01_slurm_up", "1 when the last squeue answered, else 0.")
    up.add_metric([], 0 if waiting is None else 1)
    yield up
    if waiting is None:
        return
    queue = queue_metrics(waiting, now)
    length = GaugeMetricFamily(
        "ds01_queue_length",
        "Containers' Slurm jobs pending, per user and Slurm's reason (the login node's "
        "exporter; a node's ds01d exports its own queue without labels).",
        labels=["user", "reason"],
    )
    for (user, reason), count in queue.lengths.items():
        length.add_metric([user, reason], count)
    yield length
    oldest = GaugeMetricFamily(
        "ds01_queue_oldest_wait_seconds",
        "How long the oldest waiting request has waited, in seconds (0 when none waits).",
    )
    oldest.add_metric([], queue.oldest_wait_seconds)
    yield oldest


class SlurmQueueCollector(Collector):
    """A prometheus-client collector of Slurm's queue (see the module docstring).

    Args:
        read: ``ds01.runtime.slurm.cluster_containers`` (raises ``SlurmError``).
        clock: seconds since the epoch, for the waits.
        monotonic: seconds, for the cache's age.
        cache_seconds: how long one answer serves.
    """

    def __init__(
        self,
        read: Callable[[], SqueueAnswer],
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        self._read = read
        self._clock = clock
        self._monotonic = monotonic
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._answer: tuple[float, SqueueAnswer | None] | None = None

    def describe(self) -> Iterator[Metric]:
        """Nothing: the registry must not run ``squeue`` just to learn the names."""
        return iter(())

    def squeue_answer(self) -> SqueueAnswer | None:
        """``squeue``'s answer, at most ``cache_seconds`` old; ``None`` when it failed."""
        with self._lock:  # concurrent scrapes wait for one call rather than make several
            now = self._monotonic()
            if self._answer is None or now - self._answer[0] >= self._cache_seconds:
                try:
                    answer: SqueueAnswer | None = self._read()
                except SlurmError as exc:
                    log.warning("squeue failed: %s", exc.message)
                    answer = None
                self._answer = (now, answer)
            return self._answer[1]

    def collect(self) -> Iterator[Metric]:
        yield from families(self.squeue_answer(), self._clock())


__all__ = ["CACHE_SECONDS", "DEFAULT_LISTEN", "SlurmQueueCollector", "families"]
