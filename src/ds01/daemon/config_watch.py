"""``ConfigWatcher``: the current configuration, reloaded when a file changes.

State: the last good configuration, the stamp (name, mtime, size) of each file it was read
from, and the GPU backend built from it. ``config()`` compares the stamps on every call
(three ``stat`` calls) and reloads only when one changed and the files have been still for
``CONFIG_SETTLE_SECONDS``: a file being rewritten in place is read once its writer is done.
An invalid new configuration is logged (``config.reload`` failure) and the last good one
kept. Thread-safe: reloads are serialised by the watcher's own lock; callers hold no lock
(the allocation lock may be held: a reload never takes it).

After a reload it calls ``on_admin_group_changed()`` when the admin group changed and
``on_limits_changed(new)`` when the limits changed (both set by the owner before the first
call); it calls nothing else of ds01d.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ds01.config.loader import Ds01Config, load_config
from ds01.errors import Ds01Error
from ds01.events.log import EventLog
from ds01.gpu.backend import GpuBackend
from ds01.paths import GPU_CONFIG_FILE, IMAGES_FILE, RESOURCE_LIMITS_FILE

log = logging.getLogger(__name__)

#: A configuration file changed less than this long ago (seconds) may still be being written:
#: it is read once it has been still that long, waiting at most the second value.
CONFIG_SETTLE_SECONDS = 0.5
CONFIG_SETTLE_MAX_SECONDS = 3.0
#: Each configuration file's (name, mtime, size): a change of any means a reload.
ConfigStamp = tuple[tuple[str, float, int], ...]


def _nothing() -> None:
    return None


def _ignore(config: Ds01Config) -> None:
    return None


class ConfigWatcher:
    """The configuration of ``config_dir`` and the GPU backend built from it (see the
    module docstring for the contract).

    Args:
        config_dir: where ``resource-limits.yaml``, ``gpu-config.yaml`` and ``images.yaml`` are.
        events: where ``config.reload`` events go.
        backend_factory: builds the GPU backend from a configuration.

    Raises (at construction):
        Ds01Error: the configuration is invalid: ds01d does not start on it.
    """

    def __init__(
        self,
        config_dir: Path,
        events: EventLog,
        backend_factory: Callable[[Ds01Config], GpuBackend],
    ) -> None:
        self.config_dir = config_dir
        self._events = events
        self._backend_factory = backend_factory
        self._lock = threading.Lock()
        self._stamp = self.stamp()
        self._config = load_config(config_dir)  # an invalid file stops the start here
        self._backend = backend_factory(self._config)
        self.on_admin_group_changed: Callable[[], None] = _nothing
        self.on_limits_changed: Callable[[Ds01Config], None] = _ignore

    @property
    def loaded(self) -> Ds01Config:
        """The configuration as last loaded, without looking for a change."""
        return self._config

    def stamp(self) -> ConfigStamp:
        stamps = []
        for name in (RESOURCE_LIMITS_FILE, GPU_CONFIG_FILE, IMAGES_FILE):
            try:
                st = (self.config_dir / name).stat()
                stamps.append((name, st.st_mtime, st.st_size))
            except FileNotFoundError:
                stamps.append((name, 0.0, -1))
        return tuple(stamps)

    def settled(self, stamp: ConfigStamp) -> ConfigStamp:
        """``stamp`` once no configuration file has changed for ``CONFIG_SETTLE_SECONDS``
        (waiting at most ``CONFIG_SETTLE_MAX_SECONDS``): a file being rewritten in place is
        read when its writer is done, not half-way."""
        deadline = time.monotonic() + CONFIG_SETTLE_MAX_SECONDS
        while True:
            newest = max(mtime for _, mtime, _ in stamp)
            wait = newest + CONFIG_SETTLE_SECONDS - time.time()
            left = deadline - time.monotonic()
            if wait <= 0 or left <= 0:
                return stamp
            time.sleep(min(wait, left))
            stamp = self.stamp()

    def config(self) -> Ds01Config:
        """The current configuration; reloaded when a file changed and has settled (see
        ``settled``), the last good one kept when the new one is invalid."""
        stamp = self.stamp()
        if stamp == self._stamp:
            return self._config
        with self._lock:
            stamp = self.settled(stamp)
            if stamp == self._stamp:
                return self._config
            self._stamp = stamp
            return self._reload()

    def _reload(self) -> Ds01Config:
        old = self._config
        try:
            new = load_config(self.config_dir)
        except Ds01Error as exc:
            log.error("configuration rejected, keeping the last good one: %s", exc.message)
            self._events.emit(
                "config.reload",
                user="ds01d",
                resource=f"config/{self.config_dir}",
                details={"error": exc.message},
                outcome="failure",
            )
            return old
        if new.gpus != old.gpus:
            self._backend.close()
            self._backend = self._backend_factory(new)
        self._config = new
        if new.limits.admin_group != old.limits.admin_group:
            self.on_admin_group_changed()
        self._events.emit("config.reload", user="ds01d", resource=f"config/{self.config_dir}")
        if new.limits != old.limits:  # totals or group memberships may have changed
            self.on_limits_changed(new)
        return new

    @property
    def backend(self) -> GpuBackend:
        """The GPU backend of the current configuration."""
        self.config()
        return self._backend


__all__ = ["CONFIG_SETTLE_MAX_SECONDS", "CONFIG_SETTLE_SECONDS", "ConfigStamp", "ConfigWatcher"]
