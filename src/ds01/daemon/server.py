"""HTTP + JSON over a unix socket, with the caller's identity from ``SO_PEERCRED``.

Connections are accepted, capped per uid, read with deadlines and handed to bounded worker
pools by ``ds01.daemon.connections``; each complete request is answered here by the
standard library's HTTP request handler (keep-alive, HTTP/1.1), bodies validated into the
pydantic models of ``ds01.daemon.schemas``. Routes are declared once in ``ROUTES``; the
same table drives dispatch, the OpenAPI document (``GET /openapi.json``) and which requests
may wait (``Route.waits``: they run in their own per-user bounded pool).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import select
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, TypeAdapter, ValidationError

from ds01 import __version__
from ds01.core.admission import HubCaps, Notice
from ds01.daemon import reservations
from ds01.daemon import schemas as api
from ds01.daemon.connections import (
    DEFAULT_LIMITS,
    MAX_BODY_BYTES,
    ConnectionLimits,
    ConnectionServer,
    Exchange,
    LaneName,
    Reply,
    declared_body_length,
    open_to_everyone,
)
from ds01.daemon.context import HUB_LOOKUP_TTL_S
from ds01.daemon.deferred import deferred
from ds01.daemon.identity import Caller
from ds01.daemon.service import Created, Ds01Service, Queued
from ds01.daemon.terminal import Session, Terminals
from ds01.errors import DaemonUnavailable, Ds01Error, InvalidInput, NotFound
from ds01.events.log import acting_via
from ds01.model.hub import ON_BEHALF_HEADER
from ds01.model.text import SHOWN_INPUT_CHARS, clip, shown
from ds01.runtime.identity import user_by_uid
from ds01.runtime.storage_fault import storage_fault

if TYPE_CHECKING:
    from ds01.daemon import (
        admin,
        events_view,
        exemptions,
        images,
        logs_view,
        queue_view,
        report_view,
        stats_view,
    )
    from ds01.daemon import doctor as doctor_view
    from ds01.daemon import gpu_check as gpu_check_view
    from ds01.daemon import overview as overview_view
    from ds01.daemon.image_jobs import JobKind
else:
    # The handlers of what is not needed to answer a first list load when first called.
    admin = deferred("ds01.daemon.admin")
    doctor_view = deferred("ds01.daemon.doctor")
    events_view = deferred("ds01.daemon.events_view")
    exemptions = deferred("ds01.daemon.exemptions")
    images = deferred("ds01.daemon.images")
    logs_view = deferred("ds01.daemon.logs_view")
    overview_view = deferred("ds01.daemon.overview")
    queue_view = deferred("ds01.daemon.queue_view")
    report_view = deferred("ds01.daemon.report_view")
    stats_view = deferred("ds01.daemon.stats_view")
    gpu_check_view = deferred("ds01.daemon.gpu_check")

log = logging.getLogger(__name__)

Query = dict[str, str]
#: How many problems of an invalid request body an error message lists.
SHOWN_PROBLEMS = 5
#: The query keys of ``GET /v1/events``, ``GET /v1/admin/gpu-check`` and
#: ``GET /v1/admin/report``, passed on to ``events_view``, ``gpu_check`` and ``report_view``.
EVENTS_QUERY = ("user", "action", "container", "since", "until", "after_seq", "limit", "wait")
GPU_CHECK_QUERY = ("image",)
REPORT_QUERY = ("from", "to")
INTERNAL_ERROR_MESSAGE = "ds01d hit an internal error; an admin can find details in its log."
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class RouteCall:
    """One request as its route's handler sees it.

    ``path`` holds the route's ``{name}`` parts, ``query`` the query string (last value of
    each key), ``body`` the request body validated into the route's ``body`` model (``None``
    for a route without one): a handler reads it with ``body_as``.
    """

    service: Ds01Service
    caller: Caller
    path: dict[str, str]
    query: Query
    body: BaseModel | None = None

    def flag(self, key: str) -> bool:
        """Whether query ``key`` is set to yes (``1``, ``true`` or ``yes``)."""
        return self.query.get(key, "").lower() in ("1", "true", "yes")

    def body_as(self, model: type[M]) -> M:
        """The body as ``model``, the route's ``body`` (which the server validated)."""
        if not isinstance(self.body, model):
            raise InvalidInput(f"This request needs a {model.__name__} body.")
        return self.body


#: A route's handler: the request in, the answer out (a schema model, or one of the
#: results the server sends specially: ``Accepted``, ``ConfirmOnSend``, ``Streamed``,
#: ``Upgrade``).
Handler = Callable[[RouteCall], object]


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # e.g. "/v1/containers/{name}/start"
    summary: str
    handler: Handler
    response: Any  # a pydantic model class or list[...] of one
    body: type[BaseModel] | None = None
    query: tuple[str, ...] = ()
    #: The request may wait: always (a terminal), or when its ``wait`` query asks to.
    waits: bool = False

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path) + r"\Z")

    def may_wait(self, query: Query) -> bool:
        """Whether this request may hold its worker for long (then it runs in the pool of
        waiting requests, not in the ordinary one)."""
        if not self.waits:
            return False
        if "wait" not in self.query:
            return True
        try:
            return float(query.get("wait", "0")) > 0
        except ValueError:
            return False  # refused at once


class Door(Protocol):
    """Another socket ds01d serves beside its API (``ds01.daemon.docker_api``)."""

    def serve_forever(self, poll_interval: float = 0.5) -> None: ...

    def drain(self, timeout_s: float) -> None: ...

    def hurry(self) -> None: ...

    @property
    def cut_short(self) -> list[str]: ...

    def server_close(self) -> None: ...


@dataclass(frozen=True)
class ConfirmOnSend:
    """A result with a side effect to confirm right before the answer is written.

    Serialisation happens first, so the window in which a crash leaves the client without
    an answer but the effect confirmed is one syscall, not the whole reply.
    """

    result: Any
    confirm: Callable[[], None]


T = TypeVar("T")

#: One ``Terminals`` per service (the routes get the service only).
_TERMINALS: weakref.WeakKeyDictionary[Ds01Service, Terminals] = weakref.WeakKeyDictionary()


def terminals_of(service: Ds01Service) -> Terminals:
    if service not in _TERMINALS:
        _TERMINALS[service] = Terminals(service)
    return _TERMINALS[service]


@dataclass(frozen=True)
class Upgrade:
    """A terminal session to switch the connection to (HTTP 101, then raw bytes)."""

    session: Session
    raw: Any


class ByteSource(Protocol):
    """Bytes produced while they are sent; ``close`` (from any thread) ends the iteration."""

    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Streamed:
    """A result sent as it is produced: HTTP 200 without a length, ``source``'s chunks as
    they come, then the connection closes (a container's output)."""

    source: ByteSource
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Accepted:
    """A result sent with HTTP 202: the request was accepted and will complete later."""

    result: Any


def _accepted_if_queued(service: Ds01Service, result: T | Queued) -> T | Accepted:
    """A queued request as HTTP 202 with its queue entry; anything else as it is."""
    if isinstance(result, Queued):
        return Accepted(queue_view.describe(service, result.entry, service.now(), with_score=False))
    return result


def _confirmed_when_sent(
    service: Ds01Service, created: Created | Queued
) -> ConfirmOnSend | Accepted:
    if isinstance(created, Queued):
        return Accepted(
            queue_view.describe(service, created.entry, service.now(), with_score=False)
        )
    return ConfirmOnSend(
        created.info,
        lambda: service.confirm_create(created.request_id, created.info.docker_name),
    )


def _maintenance(service: Ds01Service, caller: Caller, *, dry_run: bool) -> api.MaintenanceReport:
    if not caller.is_admin:
        raise service.deny(caller, "maintenance", "Only admins may run maintenance.")
    if service.status.lifecycle_pass is None:
        raise DaemonUnavailable("The lifecycle loop is not running in this ds01d.")
    return service.status.lifecycle_pass(dry_run)


def _int_in(query: Query, key: str, low: int, high: int) -> int:
    text = query.get(key, "")
    if not (text.isascii() and text.isdigit() and low <= int(text) <= high):
        raise InvalidInput(f"{key} must be a whole number from {low} to {high}.")
    return int(text)


def _wait_seconds(query: Query) -> float:
    text = query.get("wait", "0")
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"wait must be a number of seconds, got {text[:20]!r}.") from None
    if not 0 <= value <= 60:
        raise InvalidInput("wait must be from 0 to 60 seconds.")
    return value


# -- the route handlers: one per route, each given the request's parts (``RouteCall``) --


def whoami(call: RouteCall) -> api.WhoAmI:
    return call.service.whoami(call.caller)


def list_containers(call: RouteCall) -> list[api.ContainerInfo]:
    return call.service.list_containers(
        call.caller, all_users=call.flag("all"), user=call.query.get("user")
    )


def create_container(call: RouteCall) -> ConfirmOnSend | Accepted:
    return _confirmed_when_sent(
        call.service, call.service.create(call.caller, call.body_as(api.CreateContainerRequest))
    )


def start_container(call: RouteCall) -> api.ContainerInfo | Accepted:
    return _accepted_if_queued(
        call.service,
        call.service.start(
            call.caller,
            call.path["name"],
            user=call.query.get("user"),
            queue=call.flag("queue"),
            borrow=call.flag("borrow"),
        ),
    )


def stop_container(call: RouteCall) -> api.ContainerInfo:
    return call.service.stop(call.caller, call.path["name"], user=call.query.get("user"))


def remove_container(call: RouteCall) -> api.ContainerInfo:
    return call.service.remove(
        call.caller,
        call.path["name"],
        user=call.query.get("user"),
        force=call.flag("force"),
    )


def container_logs(call: RouteCall) -> Streamed:
    return Streamed(
        logs_view.open_logs(
            call.service,
            call.caller,
            call.path["name"],
            tail=call.query.get("tail", "all"),
            follow=call.flag("follow"),
            user=call.query.get("user"),
        )
    )


def container_stats(call: RouteCall) -> api.ContainerStats:
    return stats_view.one(call.service, call.caller, call.path["name"], call.query.get("user"))


def stats(call: RouteCall) -> list[api.ContainerStats]:
    return stats_view.listing(call.service, call.caller, call.query.get("user"))


def queue(call: RouteCall) -> list[api.QueueEntryInfo]:
    return queue_view.waiting(call.service, call.caller, all_users=call.flag("all"))


def queued_request(call: RouteCall) -> api.QueueEntryInfo:
    return queue_view.wait_for(
        call.service, call.caller, call.path["request_id"], _wait_seconds(call.query)
    )


def cancel_queued(call: RouteCall) -> api.QueueEntryInfo:
    return queue_view.cancel(call.service, call.caller, call.path["request_id"])


def retire_container(call: RouteCall) -> api.RetireResult:
    return call.service.retire(call.caller, call.path["name"], call.body_as(api.RetireRequest))


def open_terminal(call: RouteCall) -> Upgrade:
    return Upgrade(
        *terminals_of(call.service).open(
            call.caller, call.path["name"], call.body_as(api.TerminalRequest)
        )
    )


def resize_terminal(call: RouteCall) -> api.TerminalInfo:
    return terminals_of(call.service).resize(
        call.caller,
        call.path["session_id"],
        _int_in(call.query, "rows", 1, 1000),
        _int_in(call.query, "cols", 1, 1000),
    )


def terminal_info(call: RouteCall) -> api.TerminalInfo:
    return terminals_of(call.service).info(call.caller, call.path["session_id"])


def gpu_status(call: RouteCall) -> api.GpuStatusResponse:
    return call.service.gpu_status(call.caller)


def dashboard_overview(call: RouteCall) -> api.Overview:
    return overview_view.overview(call.service, call.caller)


def limits(call: RouteCall) -> api.LimitsResponse:
    return call.service.limits(
        call.caller, user=call.query.get("user"), explain=call.flag("explain")
    )


def events(call: RouteCall) -> api.EventsPage:
    return events_view.listing(call.service, call.caller, call.query)


def directories(call: RouteCall) -> api.DaemonDirectories:
    return admin.directories(call.service, call.caller)


def doctor(call: RouteCall) -> api.DoctorReport:
    return doctor_view.diagnose(call.service, call.caller)


def gpu_check(call: RouteCall) -> api.GpuCheckReport:
    return gpu_check_view.gpu_check(call.service, call.caller, call.query)


def usage_report(call: RouteCall) -> api.UsageReport:
    return report_view.report(call.service, call.caller, call.query)


def add_user(call: RouteCall) -> api.AddUserResult:
    return admin.add_user(call.service, call.caller, call.body_as(api.AddUserRequest))


def remove_user(call: RouteCall) -> api.RemoveUserResult:
    return admin.remove_user(
        call.service,
        call.caller,
        unquote(call.path["user"]),
        archive_dir=call.query.get("archive") or None,
        dry_run=call.flag("dry_run"),
    )


def mig_plan(call: RouteCall) -> api.MigPlan:
    return admin.mig_plan(call.service, call.caller)


def mig_apply(call: RouteCall) -> api.MigApplyResult:
    return admin.mig_apply(call.service, call.caller, call.body_as(api.MigApplyRequest))


def maintenance(call: RouteCall) -> api.MaintenanceReport:
    return _maintenance(call.service, call.caller, dry_run=call.flag("dry_run"))


def list_exemptions(call: RouteCall) -> list[api.ExemptionInfo]:
    return exemptions.listing(call.service, call.caller)


def grant_exemption(call: RouteCall) -> api.ExemptionInfo:
    return exemptions.grant(call.service, call.caller, call.body_as(api.ExemptionRequest))


def revoke_exemption(call: RouteCall) -> api.ExemptionInfo:
    return exemptions.revoke(call.service, call.caller, call.path["exemption_id"])


def create_reservation(call: RouteCall) -> api.ReservationInfo:
    service = call.service
    return reservations.create(
        service,
        call.caller,
        call.body_as(api.ReservationRequest),
        views=lambda inventory: service.mig_on_demand.views(inventory, ()),
    )


def list_reservations(call: RouteCall) -> list[api.ReservationInfo]:
    return reservations.listing(call.service, call.caller, everyone=call.flag("all"))


def cancel_reservation(call: RouteCall) -> api.ReservationInfo:
    return reservations.cancel(call.service, call.caller, call.path["reservation_id"])


def list_images(call: RouteCall) -> list[api.ImageInfo]:
    return images.listing(
        call.service,
        call.caller,
        include_missing=call.flag("all"),
        catalog=call.flag("catalog"),
    )


def images_present(call: RouteCall) -> api.ImagesPresent:
    return images.presence(call.service, call.caller, call.query.get("refs", ""))


def remove_image(call: RouteCall) -> api.ImageRemoved:
    return images.remove(
        call.service, call.caller, call.query.get("ref", ""), force=call.flag("force")
    )


def start_build(call: RouteCall) -> Accepted:
    return Accepted(
        images.start_build(call.service, call.caller, call.body_as(api.ImageBuildRequest))
    )


def _follow_job(call: RouteCall, kind: JobKind) -> api.ImageJobInfo:
    """An image job's output from line ``since``, waiting up to ``wait`` for more."""
    job_id = call.path[f"{kind}_id"]
    wait, since = _wait_seconds(call.query), call.query.get("since")
    return images.follow(call.service, call.caller, kind, job_id, wait, since)


def follow_build(call: RouteCall) -> api.ImageJobInfo:
    return _follow_job(call, "build")


def cancel_build(call: RouteCall) -> api.ImageJobInfo:
    return images.cancel_build(call.service, call.caller, call.path["build_id"])


def start_pull(call: RouteCall) -> Accepted:
    return Accepted(
        images.start_pull(call.service, call.caller, call.body_as(api.ImagePullRequest))
    )


def follow_pull(call: RouteCall) -> api.ImageJobInfo:
    return _follow_job(call, "pull")


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/v1/whoami",
        "Who the daemon sees calling",
        whoami,
        api.WhoAmI,
    ),
    Route(
        "GET",
        "/v1/containers",
        "List containers (own; admins: all=1 or user=NAME)",
        list_containers,
        list[api.ContainerInfo],
        query=("all", "user"),
    ),
    Route(
        "POST",
        "/v1/containers",
        "Allocate devices and create a container",
        create_container,
        api.ContainerInfo,
        body=api.CreateContainerRequest,
    ),
    Route(
        "POST",
        "/v1/containers/{name}/start",
        "Start a container (queue=1: if its released devices are taken, wait in the queue: "
        "202; borrow=1: if they were released and the owner is over gpu_limit, borrow idle "
        "devices above it)",
        start_container,
        api.ContainerInfo,
        query=("user", "queue", "borrow"),
    ),
    Route(
        "POST",
        "/v1/containers/{name}/stop",
        "Stop a container",
        stop_container,
        api.ContainerInfo,
        query=("user",),
    ),
    Route(
        "DELETE",
        "/v1/containers/{name}",
        "Remove a container and release its devices",
        remove_container,
        api.ContainerInfo,
        query=("user", "force"),
    ),
    Route(
        "GET",
        "/v1/containers/{name}/logs",
        "A container's output (yours; admins: user=NAME's) as raw bytes, not JSON: its "
        "tail=N last lines (0 to 100000, or all: the default), then with follow=1 what it "
        "prints until it stops; the connection closes at the end",
        container_logs,
        bytes,
        query=("tail", "follow", "user"),
        waits=True,
    ),
    Route(
        "GET",
        "/v1/containers/{name}/stats",
        "What a container uses now (yours; admins: user=NAME's): CPU, memory, processes and "
        "its GPUs",
        container_stats,
        api.ContainerStats,
        query=("user",),
    ),
    Route(
        "GET",
        "/v1/stats",
        "What your containers (admins: user=NAME's) use now: CPU, memory and GPUs of the "
        "running ones; stopped ones with their status",
        stats,
        list[api.ContainerStats],
        query=("user",),
    ),
    Route(
        "GET",
        "/v1/queue",
        "Waiting GPU requests in queue order (own; admins: all=1), with scores",
        queue,
        list[api.QueueEntryInfo],
        query=("all",),
    ),
    Route(
        "GET",
        "/v1/queue/{request_id}",
        "One queued request; wait=SECONDS (at most 60) blocks until it is no longer waiting",
        queued_request,
        api.QueueEntryInfo,
        query=("wait",),
        waits=True,
    ),
    Route(
        "DELETE",
        "/v1/queue/{request_id}",
        "Cancel a waiting request (its owner or an admin)",
        cancel_queued,
        api.QueueEntryInfo,
    ),
    Route(
        "POST",
        "/v1/containers/{name}/retire",
        "Remove a container for good, freeing its devices; keep_as=NAME[:TAG] first keeps "
        "what was installed in it as an image of the owner's",
        retire_container,
        api.RetireResult,
        body=api.RetireRequest,
    ),
    Route(
        "POST",
        "/v1/containers/{name}/terminal",
        "Open a terminal in the container as its owner (Connection: Upgrade; 101, then raw "
        "bytes; the session id in X-Ds01-Session); starts the container if needed",
        open_terminal,
        api.TerminalInfo,
        body=api.TerminalRequest,
        waits=True,
    ),
    Route(
        "POST",
        "/v1/terminals/{session_id}/resize",
        "Resize a terminal session of yours (rows, cols)",
        resize_terminal,
        api.TerminalInfo,
        query=("rows", "cols"),
    ),
    Route(
        "GET",
        "/v1/terminals/{session_id}",
        "A terminal session of yours: running, or its exit code",
        terminal_info,
        api.TerminalInfo,
    ),
    Route(
        "GET",
        "/v1/gpus",
        "Every device and who holds it",
        gpu_status,
        api.GpuStatusResponse,
    ),
    Route(
        "GET",
        "/v1/overview",
        "The dashboard's view in one answer: every device with its telemetry, totals, and "
        "the containers, queue entries and usage against quota the caller may see (admins: "
        "everyone's; users: their own, other users' devices by user name only)",
        dashboard_overview,
        api.Overview,
    ),
    Route(
        "GET",
        "/v1/limits",
        "Resolved limits and usage (explain=1 adds where each value came from)",
        limits,
        api.LimitsResponse,
        query=("user", "explain"),
    ),
    Route(
        "GET",
        "/v1/events",
        "Audit events, oldest first (own: yours and ds01d's on your containers; admins: "
        "everyone's or user=NAME's), filtered by action (patterns, comma-separated), "
        "container, since and until (ISO 8601); the newest limit ones, or with after_seq=N "
        "those after event N, waiting up to wait=SECONDS (at most 60) for one",
        events,
        api.EventsPage,
        query=EVENTS_QUERY,
        waits=True,
    ),
    Route(
        "GET",
        "/v1/admin/directories",
        "This ds01d's configuration, state and log directories and its socket (admins)",
        directories,
        api.DaemonDirectories,
    ),
    Route(
        "GET",
        "/v1/admin/doctor",
        "Set-up risks (admins)",
        doctor,
        api.DoctorReport,
    ),
    Route(
        "GET",
        "/v1/admin/gpu-check",
        "Whether this machine serves real GPUs, and only through ds01: driver, devices, "
        "telemetry, device nodes, Docker's toolkit, a test container on one free device "
        "(image=REF, else the starter image) (admins)",
        gpu_check,
        api.GpuCheckReport,
        query=GPU_CHECK_QUERY,
        waits=True,
    ),
    Route(
        "GET",
        "/v1/admin/report",
        "Usage per user and group from=ISO to=ISO (default: the last 30 days): GPU-hours "
        "allocated and used, containers, idle reclaims, queue waits, energy, CO2 (admins)",
        usage_report,
        api.UsageReport,
        query=REPORT_QUERY,
    ),
    Route(
        "POST",
        "/v1/admin/users",
        "Add a Unix user to ds01 (admins): their entry in resource-limits.yaml (a group's "
        "members with group=G), ~/workspace and their cgroup parent; dry_run tells only",
        add_user,
        api.AddUserResult,
        body=api.AddUserRequest,
    ),
    Route(
        "DELETE",
        "/v1/admin/users/{user}",
        "Take a user out of ds01 (admins): cancel their queued requests, remove their "
        "containers, remove their configuration entries; archive=DIR first archives "
        "~/workspace into DIR; dry_run=1 tells only. No file of theirs is deleted",
        remove_user,
        api.RemoveUserResult,
        query=("archive", "dry_run"),
    ),
    Route(
        "GET",
        "/v1/admin/mig",
        "Per GPU: its MIG layout, the one mig_layout in gpu-config.yaml wants, and whether "
        "it can be applied (admins)",
        mig_plan,
        api.MigPlan,
    ),
    Route(
        "POST",
        "/v1/admin/mig",
        "Give the GPUs no container holds their desired MIG layout (admins); gpus: only these",
        mig_apply,
        api.MigApplyResult,
        body=api.MigApplyRequest,
    ),
    Route(
        "POST",
        "/v1/admin/maintenance",
        "Run one lifecycle pass now (admins); dry_run=1 only tells what it would do and why",
        maintenance,
        api.MaintenanceReport,
        query=("dry_run",),
    ),
    Route(
        "GET",
        "/v1/admin/exemptions",
        "Exemptions from idle and runtime limits in force (admins)",
        list_exemptions,
        list[api.ExemptionInfo],
    ),
    Route(
        "POST",
        "/v1/admin/exemptions",
        "Exempt a user's containers, or one, from idle and runtime limits (admins)",
        grant_exemption,
        api.ExemptionInfo,
        body=api.ExemptionRequest,
    ),
    Route(
        "DELETE",
        "/v1/admin/exemptions/{exemption_id}",
        "Revoke an exemption (admins)",
        revoke_exemption,
        api.ExemptionInfo,
    ),
    Route(
        "POST",
        "/v1/reservations",
        "Reserve GPUs or a MIG instance ahead, for yourself (admins: maintenance=true, for "
        "nobody); a conflict names the slot in the way and the next free one",
        create_reservation,
        api.ReservationInfo,
        body=api.ReservationRequest,
    ),
    Route(
        "GET",
        "/v1/reservations",
        "Reservations not ended: yours and maintenance windows (all=1: everyone's)",
        list_reservations,
        list[api.ReservationInfo],
        query=("all",),
    ),
    Route(
        "DELETE",
        "/v1/reservations/{reservation_id}",
        "Cancel a reservation (its holder or an admin)",
        cancel_reservation,
        api.ReservationInfo,
    ),
    Route(
        "GET",
        "/v1/images",
        "Registry images present locally, then your own images (all=1: also registry images "
        "not present; catalog=1: the whole registry only, with AIME imports)",
        list_images,
        list[api.ImageInfo],
        query=("all", "catalog"),
    ),
    Route(
        "GET",
        "/v1/admin/images/present",
        "Which of refs=REF,REF,… are on this machine (admins; `ds01 config check`)",
        images_present,
        api.ImagesPresent,
        query=("refs",),
    ),
    Route(
        "DELETE",
        "/v1/images",
        "Remove image ref=REF: your own; admins any (a registry image with force=1)",
        remove_image,
        api.ImageRemoved,
        query=("ref", "force"),
    ),
    Route(
        "POST",
        "/v1/images/builds",
        "Build an image from a directory you own, tagged in your namespace (202: a job)",
        start_build,
        api.ImageJobInfo,
        body=api.ImageBuildRequest,
    ),
    Route(
        "GET",
        "/v1/images/builds/{build_id}",
        "A build's output from line since=N and its state; wait=SECONDS (at most 60) blocks "
        "until there is more (its owner or an admin)",
        follow_build,
        api.ImageJobInfo,
        query=("wait", "since"),
        waits=True,
    ),
    Route(
        "DELETE",
        "/v1/images/builds/{build_id}",
        "Cancel a running build (its owner or an admin)",
        cancel_build,
        api.ImageJobInfo,
    ),
    Route(
        "POST",
        "/v1/images/pulls",
        "Pull a registry image or a reference images.yaml allows (202: a job)",
        start_pull,
        api.ImageJobInfo,
        body=api.ImagePullRequest,
    ),
    Route(
        "GET",
        "/v1/images/pulls/{pull_id}",
        "A pull's output from line since=N and its state; wait=SECONDS (at most 60)",
        follow_pull,
        api.ImageJobInfo,
        query=("wait", "since"),
        waits=True,
    ),
)


@functools.cache
def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 description of ``ROUTES``, built on first use (about 50 ms of pydantic
    schema generation that ds01d's start need not wait for)."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}

    def ref(model: Any) -> dict[str, Any]:
        schema = TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        if isinstance(model, type) and issubclass(model, BaseModel):
            schemas[model.__name__] = schema
            return {"$ref": f"#/components/schemas/{model.__name__}"}
        return schema

    error = ref(api.ErrorResponse)
    for route in ROUTES:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "parameters": [
                {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                for n in re.findall(r"\{(\w+)\}", route.path)
            ]
            + [{"name": n, "in": "query", "schema": {"type": "string"}} for n in route.query],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": ref(route.response)}},
                },
                "default": {
                    "description": "Error",
                    "content": {"application/json": {"schema": error}},
                },
            },
        }
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(route.body)}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "ds01d", "version": __version__},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _problems(exc: ValidationError) -> str:
    """What is wrong with a request body, for the user: at most ``SHOWN_PROBLEMS`` problems,
    field names and messages clipped (both may quote what the client sent)."""
    errors = exc.errors()
    shown_errors = "; ".join(
        clip(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}", SHOWN_INPUT_CHARS * 2)
        for e in errors[:SHOWN_PROBLEMS]
    )
    more = len(errors) - SHOWN_PROBLEMS
    return shown_errors + (f"; and {more} more problem(s)" if more > 0 else "")


def _encode(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


class _ClientGone(OSError):
    """Writing the answer failed: the client went away or stopped reading (not a fault of
    ds01d, never logged with a traceback)."""


class _SocketWriter:
    """``wfile`` of a handler: each write is one ``sendall`` (bounded by the socket's
    timeout in all); a failure ends the exchange quietly, as does an answer that ds01d's
    drain has written in the handler's place (``reply``)."""

    def __init__(self, sock: socket.socket, reply: Reply) -> None:
        self._sock = sock
        self._reply = reply

    def write(self, data: bytes) -> int:
        if not self._reply.claim():
            raise _ClientGone("ds01d is stopping and has answered this request itself")
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise _ClientGone(str(exc)) from exc
        return len(data)

    def flush(self) -> None:
        pass


class _RequestHandler(BaseHTTPRequestHandler):
    """Answers ONE request that ``ds01.daemon.connections`` has read in full.

    ``rfile`` holds exactly the request's bytes (so reading never blocks on the client),
    ``wfile`` writes to the connection; ``close_connection`` afterwards says whether the
    connection may carry another request.
    """

    protocol_version = "HTTP/1.1"
    server: Ds01HttpServer  # type: ignore[assignment]

    def __init__(self, exchange: Exchange, server: Ds01HttpServer) -> None:
        self.exchange = exchange
        # Identity is fixed for the whole connection by the kernel (read at accept).
        self.creds = exchange.creds
        super().__init__(exchange.sock, "", server)  # type: ignore[arg-type]

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = BytesIO(self.exchange.data)
        self.wfile = _SocketWriter(self.connection, self.exchange.reply)  # type: ignore[assignment]

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()

    def finish(self) -> None:
        pass  # the connection belongs to ds01.daemon.connections

    def handle_expect_100(self) -> bool:
        return True  # the body is already here (the reader sent "100 Continue" if needed)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.creds.uid, *args)

    def address_string(self) -> str:
        return f"uid={self.creds.uid}"

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":
            self.send_error(400, "HTTP/1.1 required")
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (bad request line, unknown method, huge headers), in
        ds01's JSON error shape instead of an HTML page."""
        # Always answer with a status line, whatever the client claimed to speak.
        self.request_version = "HTTP/1.1"
        self.close_connection = True
        # The client's fault, so never a 5xx: 501 is "unsupported method", 505 a bad version.
        status = {501: 405, 505: 400}.get(code, code)
        refusal = InvalidInput(f"{message or 'Bad request'} (HTTP {status}).")
        self._send(status, {"error": refusal.to_dict()})

    def _send(self, status: int, payload: Any) -> None:
        self._send_bytes(status, _encode(payload))

    def _send_bytes(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        service = self.server.service
        try:
            raw = self._read_body()
            if method == "GET" and url.path == "/openapi.json":
                self._send(200, openapi_document())
                return
            for route in ROUTES:
                match = route.pattern.match(url.path)
                if match and route.method == method:
                    break
            else:
                raise NotFound(f"No API route {method} {shown(url.path)}.")
            caller = service.caller(self.creds, self.headers.get(ON_BEHALF_HEADER))
            self.server.remember(caller)
            with acting_via(caller.via):
                self._answer(service, caller, route, method, url.path, match, query, raw)
        except _ClientGone:
            raise
        except Ds01Error as exc:
            self._refuse(method, url.path, exc)
        except Exception as exc:
            # A full disk anywhere under ds01d's directories is said plainly, not as a crash.
            fault = storage_fault(exc, service.paths.state_dir)
            if fault is not None:
                self._refuse(method, url.path, fault)
                return
            log.exception("%s %s crashed", method, url.path)
            self._send(
                500,
                {
                    "error": {
                        "kind": "internal",
                        "message": INTERNAL_ERROR_MESSAGE,
                        "exit_code": 1,
                        "details": {},
                    }
                },
            )

    def _answer(
        self,
        service: Ds01Service,
        caller: Caller,
        route: Route,
        method: str,
        path: str,
        match: re.Match[str],
        query: dict[str, str],
        raw: bytes,
    ) -> None:
        """Run ``route`` for ``caller`` and send its answer (of whatever kind)."""
        body: BaseModel | None = None
        if route.body is not None:
            try:
                body = route.body.model_validate_json(raw or b"{}")
            except ValidationError as exc:
                refusal = InvalidInput(f"Invalid request: {_problems(exc)}")
                service.log_refusal(caller, "auth.denied", f"api/{method} {path}", refusal)
                raise refusal from exc
        result = route.handler(RouteCall(service, caller, match.groupdict(), query, body))
        if isinstance(result, Upgrade):
            self._switch_to_terminal(result)
        elif isinstance(result, Streamed):
            self._stream(result)
        elif isinstance(result, Accepted):
            self._send(202, _dump(result.result))
        elif isinstance(result, ConfirmOnSend):
            payload = _encode(_dump(result.result))
            result.confirm()
            self._send_bytes(200, payload)
        else:
            self._send(200, _dump(result))

    def _refuse(self, method: str, path: str, exc: Ds01Error) -> None:
        if exc.http_status >= 500:
            log.error("%s %s failed: %s", method, path, exc.message)
        self._send(exc.http_status, {"error": exc.to_dict()})

    def _switch_to_terminal(self, upgrade: Upgrade) -> None:
        """Answer 101 and relay the terminal until the program ends; then close."""
        self.close_connection = True
        try:
            self.send_response(101)
            self.send_header("Connection", "Upgrade")
            self.send_header("Upgrade", "tcp")
            self.send_header("X-Ds01-Session", upgrade.session.id)
            self.end_headers()
        except _ClientGone:
            upgrade.raw.close()
            terminals_of(self.server.service).end(upgrade.session)
            raise
        # A terminal may stay quiet for hours: no deadline on the relay (it runs in the
        # bounded pool of waiting requests).
        self.connection.settimeout(None)
        terminals_of(self.server.service).serve(
            upgrade.session, self.connection, upgrade.raw, self.exchange.read_ahead
        )

    def _stream(self, streamed: Streamed) -> None:
        """Answer 200 and send ``streamed``'s chunks as they come; then close.

        Nothing is buffered beyond one chunk: a client that stops reading is dropped after
        the connection's write deadline. A client that hangs up ends the stream at once
        (:func:`_close_on_hang_up`), even while the source has nothing to send, so a
        follower that went away does not keep its worker.
        """
        self.close_connection = True
        source = streamed.source
        try:
            self.send_response(200)
            self.send_header("Content-Type", streamed.content_type)
            self.send_header("Connection", "close")
            self.end_headers()
        except _ClientGone:
            source.close()
            raise
        wake_reader, wake_writer = socket.socketpair()
        hung_up = threading.Event()
        watcher = threading.Thread(
            target=_close_on_hang_up,
            args=(self.connection, wake_reader, source, hung_up),
            name="stream-hang-up",
            daemon=True,
        )
        watcher.start()
        try:
            for chunk in source:
                self.wfile.write(chunk)
        except _ClientGone:
            pass  # the client left: nothing to answer
        except Ds01Error as exc:  # the headers are gone: all that is left is to end it
            if not hung_up.is_set():  # closed under it because the client left: no fault
                log.warning("%s: stream ended early: %s", self.path, exc.message)
        finally:
            source.close()
            wake_writer.send(b"x")
            watcher.join()
            wake_reader.close()
            wake_writer.close()

    def _read_body(self) -> bytes:
        """The request body; a missing, malformed or oversized length is refused."""
        length = declared_body_length(self.headers)
        if length is None:
            self.close_connection = True  # the stream position is unknown now
            text = self.headers.get("Content-Length") or ""
            if text.isascii() and text.isdigit():
                raise InvalidInput(
                    f"Request body too large ({int(text)} bytes, at most {MAX_BODY_BYTES})."
                )
            raise InvalidInput(f"Invalid Content-Length {text[:40]!r}.")
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


def _close_on_hang_up(
    client: socket.socket, wake: socket.socket, source: ByteSource, hung_up: threading.Event
) -> None:
    """Close ``source`` when ``client`` hangs up (and set ``hung_up``); return when ``wake``
    becomes readable.

    A streamed answer only writes, so without this a client that left would be noticed at
    the next write only, which may be hours away for a quiet container.
    """
    while True:
        try:
            readable, _, _ = select.select([client, wake], [], [])
            if wake in readable:
                return
            if client.recv(4096):  # a client sends nothing after its request: ignore it
                continue
        except BlockingIOError:
            continue
        except (OSError, ValueError):  # the connection is gone
            pass
        hung_up.set()
        source.close()
        return


def _lane(request: bytes) -> LaneName:
    """The pool a request (its bytes, or its request line) runs in: ``waiting`` for a route
    that may wait (``Route.waits``), ``workers`` for everything else (including what will
    be refused)."""
    words = request.split(b"\n", 1)[0].decode("latin-1").split()
    if len(words) < 2:
        return "workers"
    url = urlsplit(words[1])
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    for route in ROUTES:
        if route.method == words[0] and route.pattern.match(url.path):
            return "waiting" if route.may_wait(query) else "workers"
    return "workers"


def _wait_only(request_line: bytes) -> bool:
    """Whether a request only waits to read (a long poll, ``GET`` of a route that may wait):
    it changes nothing, so ds01d's drain may answer it at once instead of waiting for it."""
    words = request_line.decode("latin-1").split()
    return len(words) >= 2 and words[0] == "GET" and _lane(request_line) == "waiting"


class HubLookup:
    """Which uids are hub identities (``hub:`` in resource-limits.yaml), with their caps,
    for the connection caps at accept: a uid is looked up in NSS once per configuration
    and ``HUB_LOOKUP_TTL_S`` (the reactor thread asks, so no lookup at all while no hub is
    configured). Thread-safe enough: a race looks a uid up twice."""

    def __init__(self, service: Ds01Service) -> None:
        self.service = service
        self._config: object = None
        self._known: dict[int, tuple[float, HubCaps | None]] = {}

    def __call__(self, uid: int) -> HubCaps | None:
        hub = self.service.config().limits.hub
        if not hub.users and not hub.unix_groups:
            return None
        if hub is not self._config:
            self._config, self._known = hub, {}
        now = time.monotonic()
        known = self._known.get(uid)
        if known is not None and known[0] > now:
            return known[1]
        try:
            user = user_by_uid(uid)
            admitted = hub.admits(user.name, uid, user.groups)
        except Ds01Error:
            admitted = False
        caps = (
            HubCaps(hub.connections, hub.user_requests, hub.workers, hub.waiting)
            if admitted
            else None
        )
        if len(self._known) > 4096:
            self._known = {}
        self._known[uid] = (now + HUB_LOOKUP_TTL_S, caps)
        return caps


def audit_connection_refusal(
    service: Ds01Service, resource: str, notice: Notice, uid: int
) -> None:
    """One audit event per logged notice of refused connections or requests on the socket
    ``resource`` names: whose were refused, why, how many (a user's behind a hub: that
    user's, with the hub as ``details.via``)."""
    try:
        name = user_by_uid(uid).name
    except Ds01Error:
        name = f"uid:{uid}"
    hub, behalf = None, None
    if isinstance(notice.key, tuple):
        hub, behalf = name, str(notice.key[1])
    with acting_via(hub):
        service.events.emit(
            "api.throttled",
            user=behalf or name,
            resource=resource,
            details={"reason": str(notice.reason), "refused": notice.count},
            outcome="denied",
        )


class Ds01HttpServer:
    """ds01d's API on a unix socket: routes of ``ROUTES`` behind the connection limits of
    ``ds01.daemon.connections`` (``limits``). ``serve_forever`` until a ``drain`` (from
    another thread) is over, then ``server_close``.

    ``doors``: more sockets ds01d serves (the Docker API door), each in a thread of its
    own; they are drained, hurried and closed with this one."""

    def __init__(
        self,
        socket_path: Path,
        service: Ds01Service,
        limits: ConnectionLimits = DEFAULT_LIMITS,
        doors: Sequence[Door] = (),
    ) -> None:
        self.service = service
        self.doors = tuple(doors)
        self._door_threads: list[threading.Thread] = []
        self._admins: set[int] = set()
        #: Set once the first request is answered (ds01d's start waits for it to begin its
        #: background work, ``ds01.daemon.run``).
        self.answered = threading.Event()
        listener = open_to_everyone(socket_path)
        socket_path.parent.chmod(0o755)
        self.connections = ConnectionServer(
            listener,
            self._answer,
            _lane,
            limits=limits,
            is_privileged=lambda uid: uid == 0 or uid in self._admins,
            on_refusal=functools.partial(audit_connection_refusal, service, "api/connection"),
            wait_only=_wait_only,
            hub_caps=HubLookup(service),
        )

    def remember(self, caller: Caller) -> None:
        """Note whether ``caller`` is an admin (admins may use the reserved workers)."""
        if caller.is_admin:
            self._admins.add(caller.uid)
        else:
            self._admins.discard(caller.uid)

    def _answer(self, exchange: Exchange) -> bool:
        handler = _RequestHandler(exchange, self)
        self.answered.set()
        return not handler.close_connection

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        for door in self.doors:
            thread = threading.Thread(
                target=door.serve_forever, args=(poll_interval,), name="ds01d-door", daemon=True
            )
            thread.start()
            self._door_threads.append(thread)
        self.connections.serve_forever(poll_interval)

    def drain(self, timeout_s: float) -> None:
        """Begin to stop: no new request runs, terminals are closed with a last word to
        their users, and ``serve_forever`` returns once the accepted requests are answered
        or ``timeout_s`` passed (``ds01.daemon.connections``, step 5)."""
        terminals_of(self.service).close_all()
        for door in self.doors:
            door.drain(timeout_s)
        self.connections.drain(timeout_s)

    def hurry(self) -> None:
        """End the drain now (its requests still running are answered "outcome unknown")."""
        for door in self.doors:
            door.hurry()
        self.connections.hurry()

    @property
    def cut_short(self) -> list[str]:
        """The requests whose clients were told that their outcome is unknown."""
        return self.connections.cut_short + [c for d in self.doors for c in d.cut_short]

    def server_close(self) -> None:
        """Close every socket, once the doors' own drains are over too (a door not yet
        draining, when ds01d ends without a drain, stops now)."""
        for door in self.doors:
            door.drain(0)
        for thread in self._door_threads:
            thread.join()
        for door in self.doors:
            door.server_close()
        self.connections.close()
