"""Creates whose client waits on its connection while they wait in the GPU queue.

A create through the Docker API door (``docker run --gpus N``) that finds no free GPU
joins the GPU queue as a ``container-create`` does, but its client holds its connection
open for the answer (Docker's ``201``): the queue entry lives only as long as that
connection. ``HeldCreates`` is the registry that ties the two together, in memory:

- ``QueueDesk.enqueue`` registers the entry with the client's run options (``hold``);
- the dispatcher, at the entry's turn, creates the container with those options and
  leaves it created (the client starts it, as ``docker run`` does), records what it made
  on the ``HeldCreate`` and wakes it; an entry of the door's that nobody holds (ds01d
  restarted while it waited: its client's connection ended with the old ds01d) is
  cancelled instead (``orphaned``);
- the door's request (``ds01.daemon.door_queue``) waits on the ``HeldCreate`` and on its
  client's socket, and ``forget``\\ s it when it ends.

State: the held creates of this ds01d, by queue id. Locks: ``hold`` and ``forget`` run
under the allocation lock (with the entry's joining and ending), and so does the
dispatcher's look-up; the registry's own lock only guards its dict (``wake_all`` may run
anywhere). Calls: nothing.
"""

from __future__ import annotations

import threading

from ds01.core.docker_create import RunOptions
from ds01.daemon import schemas as api
from ds01.daemon.connections import Waker
from ds01.daemon.prepared import Made
from ds01.runtime.store import QueuedRequest

#: The ``interface`` of the creates that the Docker API door sends (its clients hold them).
DOOR_INTERFACE = "docker"


class HeldCreate(Waker):
    """One held create: its queue entry's id, the client's run options, the container the
    dispatcher made for it (``made``, ``None`` until then), and a wake-up its waiter can
    ``select`` on (``fileno``) next to its client's socket: ``wake`` when its entry or
    ds01d changed."""

    def __init__(self, entry_id: str, run: RunOptions) -> None:
        super().__init__()
        self.entry_id = entry_id
        self.run = run
        self.made: Made | None = None


class HeldCreates:
    """The registry of held creates (module docstring). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, HeldCreate] = {}

    def hold(self, entry_id: str, run: RunOptions) -> HeldCreate:
        """Under the allocation lock, as its entry joins the queue: register it."""
        held = HeldCreate(entry_id, run)
        with self._lock:
            self._held[entry_id] = held
        return held

    def get(self, entry_id: str) -> HeldCreate | None:
        with self._lock:
            return self._held.get(entry_id)

    def forget(self, entry_id: str) -> None:
        """Under the allocation lock: its waiter is done (answered, or withdrew it)."""
        with self._lock:
            held = self._held.pop(entry_id, None)
        if held is not None:
            held.close()

    def wake(self, entry_id: str) -> None:
        """Wake the waiter of ``entry_id``, if one holds it."""
        held = self.get(entry_id)
        if held is not None:
            held.wake()

    def wake_all(self) -> None:
        """Wake every waiter (the queue changed, or ds01d stops)."""
        with self._lock:
            waiters = list(self._held.values())
        for held in waiters:
            held.wake()

    def orphaned(self, entry: QueuedRequest) -> bool:
        """Whether ``entry`` is a held create that nobody holds any more (its client's
        connection is gone): it must not be made."""
        return held_by_client(entry) and self.get(entry.id) is None


def held_by_client(entry: QueuedRequest) -> bool:
    """Whether a queued request is a create whose client holds its connection for the
    answer (the Docker API door's): it lives only as long as that connection."""
    if entry.kind != "create":
        return False
    try:
        request = api.CreateContainerRequest.model_validate_json(entry.request_json)
    except ValueError:
        return False  # unreadable: the dispatcher fails it with the reason
    return request.interface == DOOR_INTERFACE


__all__ = ["DOOR_INTERFACE", "HeldCreate", "HeldCreates", "held_by_client"]
