"""A Docker create held in ds01's GPU queue: its client's connection stays open until the
dispatcher made its container (Docker's ``201``) or the entry ended.

``docker run --gpus N`` through the door, with no GPU free, joins the GPU queue as
``container-create`` does (``QueueDesk.enqueue`` registers it as a held create:
``ds01.daemon.held_creates``). The door's worker then waits here, on two things at once
(one ``select``): the held create's wake-up (the dispatcher made its container or failed
it, the queue changed, ds01d stops) and the client's socket (a closed connection: Ctrl-C of
``docker run``, a docker-py timeout; as for a followed stream, a client that shuts down
only its sending side reads as gone too). Each time it looks, ``decide.held_create_step``
says what comes next.

Such a request runs in the door's pool of waiting requests (``decide.request_waits``),
which bounds how many one user holds (``ConnectionLimits.waiting``: 429 beyond), so held
creates never take the workers of ordinary requests.

The dispatcher only creates the container (as ``docker create`` would); ``docker run``
starts it with its next request, as with any create.

State: none beyond the request's. Locks: takes the allocation lock to end a held create
(its entry and the registry change together with the dispatcher's passes). Calls: the
service's store, queue desk, create intents and audit log.
"""

from __future__ import annotations

import select
import socket

from ds01.core import docker_api as decide
from ds01.daemon.door_exchange import Answered, log
from ds01.daemon.held_creates import HeldCreate
from ds01.daemon.identity import Caller
from ds01.daemon.prepared import Created, Queued
from ds01.daemon.service import Ds01Service
from ds01.errors import Conflict, DaemonStopping
from ds01.runtime.engine_proxy import EngineProxy

#: Seconds between two looks at a held create when nothing woke it (a safety net: every
#: change of its entry wakes it).
RECHECK_S = 30.0

LEFT_REASON = "its Docker client's connection closed while it waited, so nothing was created"
STOPPING_REASON = "ds01d stopped while it waited, so nothing was created"


def wait_for_turn(
    service: Ds01Service,
    engine: EngineProxy,
    client: socket.socket,
    caller: Caller,
    queued: Queued,
) -> Created:
    """Hold the client of ``queued`` (a held create) until its container is made; return
    it as a direct create's ``Created`` (its intent still open: confirm it when answering).

    Raises:
        Answered: the client left: the entry was withdrawn (or the container made for it
            removed); there is nobody to answer.
        Conflict: the entry ended without a container (failed at its turn, cancelled).
        DaemonStopping: ds01d stops: the entry was withdrawn.
    """
    entry_id = queued.entry.id
    held = service.queue_desk.held.get(entry_id)
    if held is None:  # ended already (a queue cancel right after the join)
        raise Conflict(f"Your queued create of {queued.entry.container!r} ended at once.")
    log.info("create of %s held in the GPU queue as %s", queued.entry.container, entry_id)
    reason: str | None = LEFT_REASON
    left = False
    try:
        while True:
            entry = service.store.queued_by_id(entry_id)
            step = decide.held_create_step(
                "gone" if entry is None else entry.state,
                made=held.made is not None,
                client_left=left,
                stopping=engine.closing,
            )
            if step == "wait":
                left = _client_left(client, held)
                continue
            if step == "left":
                raise Answered
            if step == "created":
                assert held.made is not None
                reason = None
                return Created(info=held.made.info, request_id=entry_id, record=held.made.record)
            if step == "stopping":
                reason = STOPPING_REASON
                raise DaemonStopping(
                    f"ds01d is stopping: your create waited in ds01's GPU queue (request "
                    f"{entry_id}) and was withdrawn; nothing was created. Run it again when "
                    "ds01d is back."
                )
            reason = None  # ended: nothing left to withdraw
            why = (entry.message if entry is not None else None) or "-"
            state = "gone" if entry is None else entry.state
            raise Conflict(
                f"Your create waited in ds01's GPU queue (request {entry_id}) and ended "
                f"({state}): {why}. Nothing was created."
            )
    finally:
        _let_go(service, held, caller, reason)


def _client_left(client: socket.socket, held: HeldCreate) -> bool:
    """Wait until the held create is woken or its client's socket is readable (at most
    ``RECHECK_S``); whether the client left (end of file, or the connection broke). Bytes
    a client sends after its request are read away (the connection closes after the
    answer)."""
    readable, _, _ = select.select([client.fileno(), held.fileno()], [], [], RECHECK_S)
    if held.fileno() in readable:
        held.woken()
    if client.fileno() not in readable:
        return False
    try:
        return not client.recv(4096)
    except (BlockingIOError, InterruptedError, TimeoutError):
        return False
    except OSError:
        return True


def _let_go(service: Ds01Service, held: HeldCreate, caller: Caller, reason: str | None) -> None:
    """Takes the allocation lock. The held create's waiter is done: it is forgotten, and,
    with a ``reason`` (it was not answered with a container), its entry still waiting is
    cancelled, or the container the dispatcher made for it meanwhile is removed, so that
    nothing is left for nobody."""
    entry_id = held.entry_id
    with service.allocation_lock:
        service.queue_desk.held.forget(entry_id)
        if reason is None:
            return
        stamp = service.now().isoformat(timespec="seconds")
        entry = service.store.queued_by_id(entry_id)
        if entry is not None and service.store.finish_queued(
            entry_id, "cancelled", stamp, message=reason
        ):
            service.events.emit(
                "queue.cancel",
                user=caller.name,
                resource=f"queue/{entry_id}",
                details={"container": entry.container, "owner": entry.user, "reason": reason},
            )
        elif held.made is not None:
            docker_name = held.made.info.docker_name
            # Docker away: its intent stays, and the undo is done once Docker is back.
            service.create_intents.undo_create(docker_name, entry_id)
            service.events.emit(
                "container.create",
                user="ds01d",
                resource=f"container/{docker_name}",
                details={"reason": reason},
                outcome="rolled_back",
            )
    service.queue_changed()


__all__ = ["LEFT_REASON", "RECHECK_S", "STOPPING_REASON", "wait_for_turn"]
