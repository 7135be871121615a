"""Decisions of ds01's Docker Engine API door (``/run/ds01/docker.sock``), without I/O.

The door speaks the Docker Engine API to users' own tools (the ``docker`` CLI, docker-py)
on ds01's rules. What a request may do is decided here, from its method and path alone:

- :func:`parse_request` reads a request's head (method, path, query, headers);
- :func:`route` says which endpoint it is, or why it is refused: an **allowlist**, so an
  endpoint not named in :data:`ENDPOINTS` is refused with a message naming it;
- :func:`owned_filters` adds the caller's labels to a list's or an event stream's
  ``filters``, so Docker itself shows a user only their own containers (whatever filters,
  ``all`` or ``size`` the client asked for);
- :func:`visible_image` says whether, and how, a user may see an image;
- :func:`request_waits` says which requests may hold a worker for long (followed streams,
  a create that asks for GPUs), :func:`held_create_step` what a create held in the GPU
  queue does next.

The daemon (``ds01.daemon.docker_api``) resolves containers, audits refusals and forwards
allowed requests to dockerd (``ds01.runtime.engine_proxy``).
"""

from __future__ import annotations

import http.client
import io
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from ds01.core.docker_create import asks_for_gpus, is_network_name, is_object_name, unset
from ds01.core.image_build import image_name, user_namespace
from ds01.errors import InvalidInput
from ds01.model import labels as L
from ds01.model.units import format_bytes
from ds01.model.untrusted import json_value

#: ``/v1.41/containers/json`` → version ``1.41``, rest ``/containers/json``.
_VERSIONED = re.compile(r"^/v(?P<version>\d+\.\d+)(?P<rest>/.*)\Z")
#: A container reference in a path: a name, an id or an id prefix (Docker's own characters).
_REF = r"(?P<ref>[^/]+)"
#: An image reference in a path: it may hold slashes (``ds01-test/busybox:latest``).
_IMAGE = r"(?P<ref>.+)"

#: The oldest API version the door accepts in a path: the oldest that Debian's docker.io
#: 20.10 CLI and docker-py 7 speak to a 20.10 engine (dockerd's own minimum is 1.12).
MIN_API_VERSION = (1, 24)


@dataclass(frozen=True)
class Endpoint:
    """One allowed endpoint: its method, its path (``{ref}`` a container), what kind of
    handling it gets, and whether it may wait for long (a stream that follows)."""

    method: str
    path: str
    kind: str
    #: ``always``, ``never``, or the query key whose truth makes it wait (``follow``).
    waits: str = "never"

    @property
    def pattern(self) -> re.Pattern[str]:
        pattern = self.path.replace("{ref}", _REF).replace("{image}", _IMAGE)
        return re.compile("^" + pattern + r"\Z")


#: Kinds: ``engine`` (forwarded as it is: says nothing about containers), ``list``
#: (containers, filtered to the caller's), ``events`` (filtered to the caller's
#: containers), ``images`` (filtered to the images allowed to the caller), ``container``
#: (one of the caller's containers, resolved to its full id, then forwarded; ``attach``
#: likewise, on a hijacked connection), ``image`` (an image the caller may see,
#: inspected), ``create`` (through ds01's creation path), ``start``, ``stop``,
#: ``restart``, ``remove`` (through ds01's container operations), ``exec_create`` (an exec
#: in one of the caller's containers, as its owner), ``exec`` (an exec of one of the
#: caller's containers; ``exec_start`` on a hijacked connection), ``archive_put`` (a tar
#: into one of the caller's containers, written again by ``ds01.core.docker_archive``),
#: ``archive_get`` (a tar out of one, without what its user could not read),
#: ``update`` (one of the caller's containers, its limits lowered: :func:`check_update`),
#: ``commit``, ``image_tag``, ``image_remove`` (the caller's own images, in their
#: namespace: :func:`own_repository`), ``pull`` (``image-pull``'s: what the image policy
#: allows, followed as Docker streams it: :func:`pull_reference`), ``build``
#: (``image-build``'s, from the context the client sends: :func:`build_options`),
#: ``network*`` (every network name the caller uses means their own network:
#: :func:`network_view`),
#: ``volume*`` (the caller's named volumes, Docker-named as containers are:
#: :func:`check_volume_create`), ``image_save`` (images the caller may see, written out
#: when ``images.yaml`` says ``docker_save: true``: :func:`save_names`), ``image_load``
#: (a tar of images tagged in the caller's namespace, read before dockerd sees it, when
#: ``images.yaml`` says ``docker_load: true``: ``ds01.core.docker_load``).
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/_ping", "engine"),
    Endpoint("HEAD", "/_ping", "engine"),
    Endpoint("GET", "/version", "engine"),
    Endpoint("GET", "/info", "info"),
    Endpoint("GET", "/containers/json", "list"),
    Endpoint("GET", "/containers/{ref}/json", "container"),
    Endpoint("GET", "/containers/{ref}/logs", "container", waits="follow"),
    Endpoint("GET", "/containers/{ref}/top", "container"),
    Endpoint("GET", "/containers/{ref}/stats", "container", waits="stream"),
    Endpoint("GET", "/containers/{ref}/changes", "container"),
    Endpoint("GET", "/containers/{ref}/export", "archive_get", waits="always"),
    Endpoint("GET", "/containers/{ref}/archive", "archive_get"),
    Endpoint("HEAD", "/containers/{ref}/archive", "container"),
    Endpoint("PUT", "/containers/{ref}/archive", "archive_put", waits="always"),
    Endpoint("GET", "/events", "events", waits="always"),
    Endpoint("GET", "/images/json", "images"),
    Endpoint("GET", "/images/{image}/json", "image"),
    Endpoint("POST", "/images/{image}/tag", "image_tag"),
    Endpoint("DELETE", "/images/{image}", "image_remove"),
    Endpoint("GET", "/images/{image}/get", "image_save", waits="always"),
    Endpoint("GET", "/images/get", "image_save", waits="always"),
    Endpoint("POST", "/images/load", "image_load", waits="always"),
    Endpoint("POST", "/commit", "commit"),
    Endpoint("POST", "/images/create", "pull", waits="always"),
    Endpoint("POST", "/build", "build", waits="always"),
    Endpoint("GET", "/networks", "networks"),
    Endpoint("POST", "/networks/create", "network_create"),
    Endpoint("GET", "/networks/{ref}", "network"),
    Endpoint("DELETE", "/networks/{ref}", "network"),
    Endpoint("POST", "/networks/{ref}/connect", "network_connect"),
    Endpoint("POST", "/networks/{ref}/disconnect", "network_connect"),
    Endpoint("GET", "/volumes", "volumes"),
    Endpoint("POST", "/volumes/create", "volume_create"),
    Endpoint("GET", "/volumes/{ref}", "volume"),
    Endpoint("DELETE", "/volumes/{ref}", "volume"),
    Endpoint("POST", "/containers/create", "create"),
    Endpoint("POST", "/containers/{ref}/start", "start"),
    Endpoint("POST", "/containers/{ref}/stop", "stop"),
    Endpoint("POST", "/containers/{ref}/restart", "restart"),
    Endpoint("POST", "/containers/{ref}/rename", "rename"),
    Endpoint("POST", "/containers/{ref}/kill", "container"),
    Endpoint("POST", "/containers/{ref}/wait", "container", waits="always"),
    Endpoint("POST", "/containers/{ref}/resize", "container"),
    Endpoint("POST", "/containers/{ref}/pause", "container"),
    Endpoint("POST", "/containers/{ref}/unpause", "container"),
    Endpoint("POST", "/containers/{ref}/update", "update"),
    Endpoint("POST", "/containers/{ref}/attach", "attach", waits="always"),
    Endpoint("DELETE", "/containers/{ref}", "remove"),
    Endpoint("POST", "/containers/{ref}/exec", "exec_create"),
    Endpoint("POST", "/exec/{ref}/start", "exec_start", waits="always"),
    Endpoint("POST", "/exec/{ref}/resize", "exec"),
    Endpoint("GET", "/exec/{ref}/json", "exec"),
)


@dataclass(frozen=True)
class DockerRequest:
    """A request's head as the door reads it. ``path`` is without its version prefix;
    ``version`` the prefix's version (``None`` when the path had none)."""

    method: str
    path: str
    version: str | None
    query: tuple[tuple[str, str], ...]
    headers: Message
    head_bytes: int

    def query_value(self, key: str) -> str | None:
        """The first value of query ``key``, as dockerd reads it (Go's ``FormValue``), or
        ``None``: a key given twice means to the door what it means to dockerd."""
        return next((v for k, v in self.query if k == key), None)

    def flag(self, key: str, *, default: bool = False) -> bool:
        """Whether query ``key`` is true as dockerd reads it (``BoolValueOrDefault``):
        ``default`` when absent, else anything but empty, ``0``, ``no``, ``false`` and
        ``none`` (any case, spaces trimmed): ``follow=yes`` follows."""
        value = self.query_value(key)
        if value is None:
            return default
        return value.strip().lower() not in ("", "0", "no", "false", "none")

    @property
    def chunked(self) -> bool:
        return "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()

    @property
    def wants_upgrade(self) -> bool:
        return "upgrade" in (self.headers.get("Connection") or "").lower()


@dataclass(frozen=True)
class Routed:
    """An allowed request: its endpoint and the container it names (``None`` if none)."""

    endpoint: Endpoint
    ref: str | None


@dataclass(frozen=True)
class Refused:
    """A refused request: the HTTP status and Docker-style message to answer with."""

    status: int
    message: str


class BadRequest(ValueError):
    """A request head the door cannot read (answered 400)."""


def parse_request(data: bytes) -> DockerRequest:
    """The head of one request (``data``: its bytes, head first).

    Raises:
        BadRequest: no request line, an unknown HTTP version, unreadable headers.
    """
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[: end + 4]
    line, _, rest = head.partition(b"\r\n")
    words = line.decode("latin-1").split()
    if len(words) != 3 or not words[2].startswith("HTTP/1."):
        raise BadRequest("malformed request line")
    try:
        headers = http.client.parse_headers(io.BytesIO(rest))
    except (http.client.HTTPException, ValueError):
        raise BadRequest("malformed headers") from None
    url = urlsplit(words[1])
    path = unquote(url.path)
    version = None
    match = _VERSIONED.match(path)
    if match:
        version, path = match["version"], match["rest"]
    query = tuple(parse_qsl(url.query, keep_blank_values=True))
    return DockerRequest(words[0].upper(), path, version, query, headers, len(head))


def version_too_old(version: str | None) -> bool:
    """Whether a path's API version is older than the door speaks."""
    if version is None:
        return False
    major, minor = (int(x) for x in version.split("."))
    return (major, minor) < MIN_API_VERSION


BUILDKIT_MESSAGE = (
    "ds01 builds with Docker's classic builder, not BuildKit: run DOCKER_BUILDKIT=0 docker "
    "build … (or image-build)."
)

#: Why a ``docker import`` is refused: its image is a file system from anywhere, with no
#: Dockerfile whose bases the image policy could check.
IMPORT_MESSAGE = (
    "ds01 does not import images (docker import): an imported file system passes no image "
    "policy. Build it instead: a Dockerfile FROM an image you may use, with COPY of your "
    "files, then DOCKER_BUILDKIT=0 docker build -t <your namespace>/NAME . (or "
    "image-build); or docker pull an allowed image."
)
#: Why a ``docker push`` is refused: ds01d would carry the user's registry credentials and
#: send an image out of the machine under its own name.
PUSH_MESSAGE = (
    "ds01 does not push images: a push would send your registry credentials through ds01 "
    "and an image out of this machine. Where your admin allows docker save: docker save "
    "<your namespace>/NAME:TAG -o FILE, then docker load -i FILE and docker push on a "
    "machine with Docker of your own; otherwise ask an admin."
)

#: Endpoints refused with a reason of their own (method, path pattern, why).
EXPLAINED: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("POST", re.compile(r"^/session\Z"), BUILDKIT_MESSAGE),
    ("POST", re.compile(r"^/grpc\Z"), BUILDKIT_MESSAGE),
    ("POST", re.compile(r"^/images/.+/push\Z"), PUSH_MESSAGE),
)


def rename_target(request: DockerRequest, uid: int) -> str:
    """The ds01 name a rename (``?name=``) asks for: the name as given, less the caller's
    own suffix ``._.{uid}`` (docker-compose renames a container to ``{short id}_{its Docker
    name}``). Not checked here: ds01's name rule does that (a separator left in it, e.g.
    another user's suffix, fails it)."""
    name = (request.query_value("name") or "").lstrip("/")
    own = f"{L.CONTAINER_NAME_SEPARATOR}{uid}"
    return name[: -len(own)] if name.endswith(own) else name


def import_refusal(request: DockerRequest) -> str | None:
    """Why a ``docker import`` (``POST /images/create`` with ``fromSrc``: a file system
    tar or a URL made an image) is refused, or ``None`` for any other request."""
    if request.method != "POST" or request.path != "/images/create":
        return None
    if request.query_value("fromSrc") is None:
        return None
    return IMPORT_MESSAGE


def route(method: str, path: str) -> Routed | Refused:
    """The endpoint a request is for, or why it is refused (not on the allowlist)."""
    for endpoint in ENDPOINTS:
        match = endpoint.pattern.match(path)
        if match and endpoint.method == method:
            return Routed(endpoint, match.groupdict().get("ref"))
    for refused_method, pattern, why in EXPLAINED:
        if method == refused_method and pattern.match(path):
            return Refused(403, why)
    return Refused(403, not_allowed_message(method, path))


def not_allowed_message(method: str, path: str) -> str:
    shown = path if len(path) <= 80 else path[:77] + "..."
    return (
        f"ds01 does not allow {method} {shown} through its Docker socket: only the endpoints "
        'listed in ds01\'s user guide ("Using docker with ds01") are served; everything '
        "else is refused. ds01's own commands (container-create, container-list, …) do the "
        "rest."
    )


def waits(request: DockerRequest) -> bool:
    """Whether a request may hold its worker for long (it then runs among the waiting)."""
    routed = route(request.method, request.path)
    if isinstance(routed, Refused):
        return False
    key = routed.endpoint.waits
    if key == "always":
        return True
    if key == "never":
        return False
    if key == "stream":  # stats streams unless told not to
        return request.flag("stream", default=True)
    return request.flag(key)


def request_waits(data: bytes) -> bool:
    """Whether a whole request (``data``: its head and body as the connection reader read
    them) may hold its worker for long: one that :func:`waits`, or a create that asks for
    GPUs (with none free it waits in ds01's GPU queue, its connection held until it is
    placed). Whatever cannot be read waits not (its refusal is quick). Only a create's
    headers and body are read: this runs in the thread that reads every user's requests."""
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        first = parse_request(line + b"\r\n\r\n")
    except BadRequest:
        return False
    if waits(first):
        return True
    routed = route(first.method, first.path)
    if not isinstance(routed, Routed) or routed.endpoint.kind != "create":
        return False
    try:
        request = parse_request(data)
    except BadRequest:
        return False
    length = request.headers.get("Content-Length") or "0"
    if not (length.isascii() and length.isdigit()):
        return False
    body = data[request.head_bytes : request.head_bytes + int(length)]
    try:
        return asks_for_gpus(json_value(body))
    except ValueError:
        return False


#: What a create held in the GPU queue does next (:func:`held_create_step`).
HeldStep = Literal["wait", "created", "ended", "stopping", "left"]


def held_create_step(state: str, *, made: bool, client_left: bool, stopping: bool) -> HeldStep:
    """The next step of a Docker create that waits in ds01's GPU queue while its client's
    connection is held, from its queue entry's ``state`` (``waiting``, ``started``,
    ``failed``, ``cancelled``; ``gone``: no entry), whether the dispatcher ``made`` its
    container, whether its client left and whether ds01d is ``stopping``:

    - ``left``: the client hung up: nobody would be told, so the entry is withdrawn (a
      container made for it already is removed);
    - ``created``: the container was made: the client gets Docker's 201 (also while ds01d
      stops: it exists, and its client is still there);
    - ``ended``: the entry ended otherwise (failed at its turn, cancelled with ``ds01
      queue cancel``): the client gets the entry's reason as an error;
    - ``stopping``: ds01d stops: the entry is withdrawn and the client told so (a later
      ds01d would make a container for a client that is gone);
    - ``wait``: still waiting.
    """
    if client_left:
        return "left"
    if made:
        return "created"
    if state != "waiting":
        return "ended"
    return "stopping" if stopping else "wait"


def no_such_container(ref: str) -> str:
    """Docker's own answer for a container it does not know (so another user's container
    reads exactly like one that does not exist)."""
    return f"No such container: {ref}"


def owner_labels(uid: int) -> list[str]:
    """The label filters that select the containers of ``uid`` among ds01's."""
    return [f"{L.MANAGED}=true", f"{L.UID}={uid}"]


def owned_filters(filters: str | None, uid: int, *, container_events: bool = False) -> str:
    """Docker ``filters`` (JSON) that keep what the client asked for and add the owner's
    labels (Docker ANDs label filters). ``container_events``: also only container events.

    Raises:
        BadRequest: ``filters`` is not Docker's JSON of filters.
    """
    wanted: dict[str, object] = {}
    if filters:
        try:
            read = json_value(filters)
        except ValueError:
            raise BadRequest("filters is not JSON") from None
        if not isinstance(read, dict):
            raise BadRequest("filters is not a JSON object")
        wanted = read
    merged: dict[str, dict[str, bool]] = {}
    for key, value in wanted.items():
        # Docker takes {"label": ["a=b"]} and the older {"label": {"a=b": true}}.
        if isinstance(value, list):
            merged[key] = {str(v): True for v in value}
        elif isinstance(value, dict):
            merged[key] = {str(v): True for v, on in value.items() if on}
        else:
            raise BadRequest(f"filter {key!r} is neither a list nor an object")
    merged.setdefault("label", {}).update({label: True for label in owner_labels(uid)})
    if container_events:
        kinds = merged.get("type")
        if kinds and set(kinds) - {"container"}:
            # Only container events of one's own containers are shown; other types none.
            merged["type"] = {"container": True}
            merged["label"][f"{L.UID}=-1"] = True  # matches nothing
        else:
            merged["type"] = {"container": True}
    return json.dumps(merged, separators=(",", ":"), sort_keys=True)


def with_query(request: DockerRequest, **replaced: str) -> str:
    """The request's versioned path and query, with the given keys' values replaced."""
    kept = [(k, v) for k, v in request.query if k not in replaced]
    query = urlencode(kept + list(replaced.items()))
    return request_path(request, quoted(request.path)) + (f"?{query}" if query else "")


def quoted(path: str) -> str:
    """A path the door read (percent-decoded) as it goes to dockerd, encoded again: dockerd
    decodes it once more, and must read the path the door checked (``%2F`` stays a
    character of a name, never a new segment)."""
    return quote(path, safe="/:@")


#: What a ``docker save`` is answered when ``images.yaml`` does not allow it.
SAVE_REFUSED = "ds01 does not allow docker save on this machine."


def save_names(request: DockerRequest, ref: str | None) -> list[str]:
    """The images a ``docker save`` names: ``ref`` (``/images/{name}/get``) or every
    ``names`` of the query (``/images/get``), each with its tag, a digest or an image id
    (``sha256:…``).

    Raises:
        BadRequest: no image is named, or one by its repository alone.
    """
    names = [ref] if ref else [v for k, v in request.query if k == "names" and v]
    if not names:
        raise BadRequest("docker save needs at least one image")
    for name in names:
        # A repository without a tag is every tag of it to dockerd, allowed to the caller
        # or not.
        if ":" not in name.rsplit("/", 1)[-1] and "@" not in name:
            raise BadRequest(f"name the tag of {name[:80]} (docker save NAME:TAG)")
    return names


def request_path(request: DockerRequest, path: str) -> str:
    """``path`` with the request's version prefix (if it had one)."""
    return f"/v{request.version}{path}" if request.version else path


def visible_image(
    summary: Mapping[str, object], user: str, allows_reference: Callable[[str], bool]
) -> dict[str, object] | None:
    """An image (an ``/images/json`` summary or an inspection) as a user may see it, or
    ``None`` when they may not: an image built for the user (``ds01.image.owner``) is shown
    whole; any other only with the tags the image registry allows (and the digests of
    those tags' repositories), and not at all without one."""
    labels = summary.get("Labels")
    config = summary.get("Config")
    if labels is None and isinstance(config, dict):
        labels = config.get("Labels")
    if isinstance(labels, dict) and labels.get(L.IMAGE_OWNER) == user:
        return dict(summary)
    tags = summary.get("RepoTags")
    allowed = [
        tag
        for tag in (tags if isinstance(tags, list) else [])
        if isinstance(tag, str) and tag != "<none>:<none>" and allows_reference(tag)
    ]
    if not allowed:
        return None
    repositories = {tag.rsplit(":", 1)[0] for tag in allowed}
    digests = summary.get("RepoDigests")
    return {
        **summary,
        "RepoTags": allowed,
        "RepoDigests": [
            d
            for d in (digests if isinstance(digests, list) else [])
            if isinstance(d, str) and d.split("@", 1)[0] in repositories
        ],
    }


#: An image named by its id (``sha256:…``) or an id prefix, not by a reference.
_IMAGE_ID = re.compile(r"^(sha256:)?[0-9a-f]{6,64}\Z")


def visible_image_by(
    ref: str, inspected: Mapping[str, object], user: str, allows_reference: Callable[[str], bool]
) -> dict[str, object] | None:
    """An image a user asked for by ``ref`` (:func:`visible_image`), or ``None``: by a
    reference, that very reference must be allowed (an allowed image under a tag that is
    not allowed stays hidden), unless the image was built for the user."""
    shown = visible_image(inspected, user, allows_reference)
    if shown is None or _IMAGE_ID.match(ref):
        return shown
    config = inspected.get("Config")
    labels = config.get("Labels") if isinstance(config, dict) else None
    if isinstance(labels, dict) and labels.get(L.IMAGE_OWNER) == user:
        return shown
    return shown if allows_reference(ref) else None


def no_such_image(ref: str) -> str:
    """Docker's own answer for an image it does not know."""
    return f"No such image: {ref}"


def owns(labels: Mapping[str, str] | None, uid: int) -> bool:
    """Whether a container's labels say it is a ds01 container of ``uid``."""
    labels = labels or {}
    return labels.get(L.MANAGED) == "true" and labels.get(L.UID) == str(uid)


#: Fields of an exec create the door passes on (after :func:`check_exec`).
_EXEC_FIELDS = frozenset(
    {"AttachStdin", "AttachStdout", "AttachStderr", "DetachKeys", "Tty", "Env", "Cmd",
     "WorkingDir", "User", "Privileged", "ConsoleSize"}
)  # fmt: skip
#: Fields of an exec create the door reads past and drops: docker-py's ``exec_run`` names
#: the container in the body too, which dockerd does not read (the path says which).
_EXEC_DROPPED = frozenset({"Container"})

ROOT_EXEC_MESSAGE = (
    "ds01 runs every exec as the container's owner: -u {asked} is not allowed. Root in a "
    "container that mounts your directories could plant set-uid files there. Install "
    "what you need in an image of your own (image-create), or run as yourself."
)


def check_exec(body: object, *, uid: int, gid: int, user: str) -> dict[str, object]:
    """The exec create to send dockerd: only the fields the door knows, as it read them
    (dockerd's JSON decoder matches keys case-insensitively, so a ``"user"`` the door did
    not read must never reach it), and always ``User`` ``uid:gid`` in numbers: a name
    (``alice``) is looked up in the container's own ``/etc/passwd``, which the user may
    have written (``alice:x:0:0``: root), and a uid alone takes its group from there too
    (group 0 where the uid has no entry). Refused: privileged, another user (root
    included: ``ROOT_EXEC_MESSAGE``), fields the door does not know. Dropped: docker-py's
    ``Container`` (``_EXEC_DROPPED``).

    Raises:
        BadRequest: the body is not a JSON object with a command (answered 400).
        PermissionError: the exec asks for what ds01 refuses (answered 403).
    """
    if not isinstance(body, dict) or not body.get("Cmd"):
        raise BadRequest("an exec needs a JSON object body with a Cmd")
    known = _EXEC_FIELDS | _EXEC_DROPPED
    unknown = sorted(k for k, v in body.items() if k not in known and v)
    if unknown:
        raise PermissionError(f"ds01 does not allow {', '.join(unknown)[:80]} in an exec.")
    if body.get("Privileged"):
        raise PermissionError("Privileged execs are not allowed.")
    asked = body.get("User") or ""
    if asked not in ("", user, str(uid), f"{uid}:{gid}", f"{user}:{gid}"):
        raise PermissionError(ROOT_EXEC_MESSAGE.format(asked=str(asked)[:40]))
    kept = {k: v for k, v in body.items() if k in _EXEC_FIELDS and k not in ("Privileged", "User")}
    return {**kept, "User": f"{uid}:{gid}"}


#: Fields of an update the door reads (everything else must be left unset).
_UPDATE_FIELDS = frozenset({"Memory", "MemorySwap", "NanoCpus"})

RAISE_MESSAGE = (
    "ds01 does not raise a container's limits: {asked} is above the {had} it was made with "
    "(ds01 counts your totals from that). Make a new container with more, within your "
    "limits (check-limits)."
)


def check_update(body: object, *, memory_bytes: int, nano_cpus: int) -> dict[str, object]:
    """The update to send dockerd for ``body`` on a container made with ``memory_bytes``
    and ``nano_cpus`` (``0``: no limit; ds01's labels, from which it counts the user's
    totals, say so): memory and CPUs only, each at most what the container was made with
    (a limit over the user's quota was refused then; back up to it after a lowering is
    fine), never swap (the memory-and-swap limit follows the memory).

    Raises:
        BadRequest: the body is not a JSON object, or a value is not a whole number.
        PermissionError: another field, swap, or a limit raised (refused, never trimmed).
    """
    if not isinstance(body, dict):
        raise BadRequest("an update needs a JSON object body")
    unknown = sorted(k for k, v in body.items() if k not in _UPDATE_FIELDS and not unset(v))
    if unknown:
        raise PermissionError(
            f"ds01 does not allow {', '.join(unknown)[:80]} in an update: only the memory "
            "and CPU limits (-m, --cpus) may be lowered."
        )
    values: dict[str, int] = {}
    for key in sorted(_UPDATE_FIELDS):
        value = body.get(key) or 0
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            raise BadRequest(f"{key} must be a whole number")
        values[key] = value
    memory, cpus = values["Memory"], values["NanoCpus"]
    if values["MemorySwap"] not in (0, -1, memory):
        raise PermissionError("--memory-swap is not allowed: ds01 gives containers no swap.")
    if memory > 0 and memory_bytes and memory > memory_bytes:
        asked, had = format_bytes(memory), format_bytes(memory_bytes)
        raise PermissionError(RAISE_MESSAGE.format(asked=f"-m {asked}", had=f"-m {had}"))
    if cpus > 0 and nano_cpus and cpus > nano_cpus:
        asked, had = f"{cpus / 1e9:g}", f"{nano_cpus / 1e9:g}"
        raise PermissionError(RAISE_MESSAGE.format(asked=f"--cpus {asked}", had=f"--cpus {had}"))
    update: dict[str, object] = {}
    if memory > 0:
        update.update(Memory=memory, MemorySwap=memory)
    if cpus > 0:
        update["NanoCpus"] = cpus
    if not update:
        raise BadRequest("an update needs a memory or CPU limit to lower")
    return update


def own_repository(repository: str, user: str, uid: int) -> str:
    """The image name in ``repository`` when it is ``<the user's namespace>/<name>`` (as
    ``image-build`` names images: ``ds01.core.image_build``), for a tag or a commit.

    Raises:
        PermissionError: another namespace, none, or a name that is not one as it stands.
    """
    namespace = user_namespace(user, uid)
    prefix, _, name = repository.partition("/")
    shown = repository[:80] or "(none)"
    if prefix != namespace or not name:
        raise PermissionError(
            f"Your images are named {namespace}/NAME[:TAG] (not {shown!r}): ds01 tags and "
            "commits only into your own namespace."
        )
    try:
        valid = image_name(name) == name
    except InvalidInput:
        valid = False
    if not valid:
        raise PermissionError(
            f"{shown!r} is not an image name ds01 keeps: use letters, digits, '-', '_' or '.'."
        )
    return name


def pull_reference(request: DockerRequest) -> str:
    """The reference a ``POST /images/create`` pulls (``fromImage`` with its ``tag``, a
    tag or a digest).

    Raises:
        PermissionError: an import (``fromSrc``), or no image named.
    """
    if request.query_value("fromSrc") is not None:
        raise PermissionError(IMPORT_MESSAGE)
    image = request.query_value("fromImage") or ""
    if not image:
        raise PermissionError("Name the image to pull (docker pull IMAGE).")
    tag = request.query_value("tag") or ""
    if not tag:
        return image
    return f"{image}@{tag}" if ":" in tag else f"{image}:{tag}"


def pull_line(text: str) -> bytes:
    """One line of a pull's progress as Docker streams it (``docker pull`` prints it)."""
    return json.dumps({"status": text}).encode() + b"\r\n"


def stream_error(message: str) -> bytes:
    """A pull's or build's failure as Docker streams it (the CLI prints it, exits 1)."""
    return json.dumps({"errorDetail": {"message": message}, "error": message}).encode() + b"\r\n"


@dataclass(frozen=True)
class BuildOptions:
    """What a ``POST /build`` asks of ``image-build``: the image's name in the caller's
    namespace and its tag, the Dockerfile's path in the context, and two switches."""

    name: str
    tag: str
    dockerfile: str
    pull: bool
    no_cache: bool


#: Query keys of a classic build the door reads or that say nothing (their "unset" values).
_BUILD_READ = frozenset({"t", "dockerfile", "pull", "nocache", "q", "rm", "forcerm", "version"})
_BUILD_UNSET = frozenset({"", "0", "false", "False", "{}", "[]", "null", "default"})


def build_options(request: DockerRequest, user: str, uid: int) -> BuildOptions:
    """A classic ``docker build`` as ``image-build`` runs it: tagged ``-t <namespace>/NAME``
    (one tag), with the user's limits, cgroup parent and network (not the client's), its
    bases checked against the image policy; BuildKit, build arguments, labels, targets,
    remote contexts and every resource setting are refused by name.

    Raises:
        PermissionError: what ds01's builds do not take, named.
    """
    if request.query_value("version") == "2":
        raise PermissionError(BUILDKIT_MESSAGE)
    for key, value in request.query:
        if key not in _BUILD_READ and value not in _BUILD_UNSET:
            raise PermissionError(
                f"ds01 does not take {key[:40]} in a build (build arguments, labels, "
                "targets, remote contexts and resource settings are ds01's or unsupported)."
            )
    tags = [v for k, v in request.query if k == "t"]
    if len(tags) != 1:
        raise PermissionError("Name the image with one -t <your namespace>/NAME[:TAG].")
    repository, tag = tags[0], "latest"
    if ":" in repository.rsplit("/", 1)[-1]:
        repository, tag = repository.rsplit(":", 1)
    return BuildOptions(
        name=own_repository(repository, user, uid),
        tag=tag,
        dockerfile=request.query_value("dockerfile") or "Dockerfile",
        pull=request.flag("pull"),
        no_cache=request.flag("nocache"),
    )


def build_line(text: str) -> bytes:
    """One line of a build's output as Docker streams it (``docker build`` prints it)."""
    return json.dumps({"stream": text + "\n"}).encode() + b"\r\n"


#: The most named volumes one user may have.
MAX_USER_VOLUMES = 32


def _only(body: object, allowed: set[str], what: str) -> dict[str, object]:
    """``body`` as a JSON object whose set fields are all in ``allowed``."""
    if not isinstance(body, dict):
        raise BadRequest(f"{what} needs a JSON object body")
    extra = sorted(k for k, v in body.items() if k not in allowed and not unset(v))
    if extra:
        raise PermissionError(f"ds01 does not allow {', '.join(extra)[:80]} in {what}.")
    return body


def _client_labels(labels: object) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise BadRequest("Labels must map names to strings")
    for key in labels:
        if str(key).startswith((L.PREFIX, "aime.")):
            raise PermissionError(f"Label {str(key)[:80]!r} is ds01's own: only ds01 sets it.")
    return {str(k): v for k, v in labels.items()}


def check_network_create(body: object) -> str:
    """The name of a network create: ds01 makes no network for it (every network name of
    the caller's means their own network), so only what that network is may be asked:
    the bridge driver, no options, addresses, IPv6, internal or ingress mode.

    Raises:
        BadRequest: no JSON object, or no valid name.
        PermissionError: anything ds01's network is not.
    """
    fields = _only(body, {"Name", "CheckDuplicate", "Labels", "Attachable", "Driver", "IPAM"},
                   "a network create")  # fmt: skip
    if fields.get("Driver") not in (None, "", "bridge"):
        raise PermissionError("Your network is a bridge: another driver is not allowed.")
    ipam = fields.get("IPAM") or {}
    if not isinstance(ipam, dict) or any(
        not unset(v) for k, v in ipam.items() if not (k == "Driver" and v == "default")
    ):
        raise PermissionError("Addresses (IPAM) of your network are ds01's to choose.")
    _client_labels(fields.get("Labels"))
    name = fields.get("Name")
    if not is_network_name(name):
        raise BadRequest("a network create needs a Name of letters, digits, '_', '.' or '-'")
    assert isinstance(name, str)
    return name


def network_view(name: str, network_id: str, subnet: list[object]) -> dict[str, object]:
    """What a network of the caller's looks like under the name they gave it: their own
    bridge (its id and addresses), with no options or labels of ds01's."""
    return {
        "Name": name, "Id": network_id, "Scope": "local", "Driver": "bridge",
        "EnableIPv6": False, "Internal": False, "Attachable": True, "Ingress": False,
        "IPAM": {"Driver": "default", "Options": None, "Config": subnet},
        "ConfigOnly": False, "Containers": {}, "Options": {}, "Labels": {},
    }  # fmt: skip


def check_volume_create(body: object) -> tuple[str | None, dict[str, str]]:
    """The name (``None``: ds01 picks one) and the client's labels of a volume create: a
    local volume with no driver options (``type=none,o=bind,device=/etc`` would mount any
    host path), no ds01 labels.

    Raises:
        BadRequest: no JSON object, a malformed name or labels.
        PermissionError: another driver, driver options, ds01's labels.
    """
    fields = _only(body, {"Name", "Driver", "Labels"}, "a volume create")
    if fields.get("Driver") not in (None, "", "local"):
        raise PermissionError("Volume drivers are not allowed: your volumes are local.")
    labels = _client_labels(fields.get("Labels"))
    name = fields.get("Name") or None
    if name is not None and not (isinstance(name, str) and is_object_name(name)):
        raise BadRequest("a volume's Name is letters, digits, '_', '.' or '-'")
    return name, labels


def volume_view(volume: Mapping[str, object], name: str) -> dict[str, object]:
    """A volume of the caller's, under the name they gave it."""
    return {**volume, "Name": name}


def no_such_volume(name: str) -> str:
    """Docker's own answer for a volume it does not know."""
    return f"get {name}: no such volume"


#: What ``/info`` shows of the engine: what it is, never what others run on it.
_INFO_KEPT = (
    "ID", "Name", "ServerVersion", "OperatingSystem", "OSType", "OSVersion", "Architecture",
    "KernelVersion", "NCPU", "MemTotal", "Driver", "CgroupDriver", "CgroupVersion",
    "DefaultRuntime", "IndexServerAddress", "ExperimentalBuild", "LoggingDriver",
)  # fmt: skip


def info_view(info: Mapping[str, object], states: list[str]) -> dict[str, object]:
    """The engine's ``/info`` as a user sees it: the engine itself, and counts of only
    their own containers (``states``: each one's ``State``) and no other user's, no
    images, no swarm."""
    shown: dict[str, object] = {key: info[key] for key in _INFO_KEPT if key in info}
    shown.update(
        Containers=len(states),
        ContainersRunning=states.count("running"),
        ContainersPaused=states.count("paused"),
        ContainersStopped=len(states) - states.count("running") - states.count("paused"),
        Images=0,
        Swarm={"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": ""},
        Plugins={"Volume": ["local"], "Network": ["bridge"], "Authorization": None, "Log": []},
        Warnings=None,
    )
    return shown


def error_body(message: str) -> bytes:
    """Docker's error body, which its clients print (``Error response from daemon: …``)."""
    return json.dumps({"message": message}).encode()


__all__ = [
    "BUILDKIT_MESSAGE",
    "ENDPOINTS",
    "EXPLAINED",
    "IMPORT_MESSAGE",
    "MAX_USER_VOLUMES",
    "MIN_API_VERSION",
    "PUSH_MESSAGE",
    "RAISE_MESSAGE",
    "ROOT_EXEC_MESSAGE",
    "BadRequest",
    "BuildOptions",
    "DockerRequest",
    "Endpoint",
    "HeldStep",
    "Refused",
    "Routed",
    "build_line",
    "build_options",
    "check_exec",
    "check_network_create",
    "check_update",
    "check_volume_create",
    "error_body",
    "held_create_step",
    "import_refusal",
    "info_view",
    "network_view",
    "no_such_container",
    "no_such_image",
    "no_such_volume",
    "not_allowed_message",
    "own_repository",
    "owned_filters",
    "owner_labels",
    "owns",
    "parse_request",
    "pull_line",
    "pull_reference",
    "quoted",
    "rename_target",
    "request_path",
    "request_waits",
    "route",
    "stream_error",
    "version_too_old",
    "visible_image",
    "visible_image_by",
    "volume_view",
    "waits",
    "with_query",
]
