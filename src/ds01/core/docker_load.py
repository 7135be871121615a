"""What a ``docker load`` may bring in (pure): the tar of ``POST /images/load``, read and
checked by the Docker API door before dockerd sees a byte of it.

A loaded image brings its own names: dockerd tags it with every ``RepoTags`` entry of the
tar's ``manifest.json``, whatever they are, so a tar could move the image registry's
``pytorch:latest`` or another user's ``bob/model:1`` to an image of the caller's making.
And it brings its own labels: a ``ds01.*`` label in its config would pass on to every
container made from it. So the door reads the tar first (:class:`LoadArchive`, fed member
by member as the body streams in) and lets it on only when:

- it has a ``manifest.json`` (Docker's format since 1.10; dockerd reads an older tar's
  ``repositories`` file instead, which the door does not take), a regular file;
- every image in it carries at least one tag, and every tag is ``<caller's namespace>/NAME:TAG``
  (:func:`ds01.core.docker_api.own_repository`: the rule of ``commit`` and ``tag``); an
  OCI ``index.json``, when there is one, names only such references too;
- each image's config is in the tar, a regular file, and carries no ``ds01.*`` label but
  those that only say what the image serves (``image_build.IMAGE_DECLARED_LABELS``, as
  for a build): not even ``ds01.image.owner`` naming the caller, which only ds01's own
  builds and commits give (it lets an image run outside the image policy), and a tar
  cannot show that ds01 made it;
- no member lies below a symbolic link of the same tar (dockerd would follow it when it
  reads the manifest or a config), and there are at most :data:`MAX_LOAD_MEMBERS` members.

dockerd never gets the client's bytes: Go's ``archive/tar`` and Python's ``tarfile`` do
not read every tar alike (a size field with a leading NUL is 0 to one and 512 to the
other; concatenated gzip streams are one tar to Go and the first stream only to Python),
so what dockerd read could differ from what the door checked. The door writes a new plain
tar of the members it read (:func:`loaded_member`: a header made anew, the content as it
came) and sends that, and it refuses a tar that could be read two ways
(:func:`header_problem`: a header field not in its one plain form, a member type other
than a file, directory or link; and :data:`AFTER_THE_END`: anything but zeros after the
tar's end, or after the first compressed stream).

The image allowlist still decides what runs: a loaded image runs only where
``images.yaml`` allows its reference (the registry, an ``allow`` pattern).

What dockerd then made of the tar is read from its answer as the answer passes to the
client (:class:`LoadAnswer`): dockerd answers 200 and streams JSON messages, among them
``Loaded image: NAME:TAG`` for each image it tagged, or an ``error`` message for a tar it
could not load; the door's ``image.load`` event says which.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field

from ds01.core.docker_archive import PERMISSION_BITS, member_key
from ds01.core.image_build import IMAGE_DECLARED_LABELS, foreign_labels
from ds01.errors import DoorRefusal
from ds01.model import labels as L
from ds01.model.units import format_bytes
from ds01.model.untrusted import json_value

#: The largest tar a ``docker load`` may bring through the door: as sent, and once
#: uncompressed (what the door spools and sends to dockerd).
MAX_LOAD_BYTES = 16 * 1024**3
#: The largest PAX extended header or GNU long name a loaded tar may carry (Go's limit).
MAX_LOAD_META_BYTES = 1024**2
#: The most members a loaded tar may have (a saved image has about three per layer).
MAX_LOAD_MEMBERS = 65536
#: The largest manifest, index or config the door reads (they are a few KiB).
MAX_LOAD_JSON_BYTES = 1024**2
#: The most bytes of such files the door keeps while it reads one tar.
MAX_LOAD_KEPT_BYTES = 32 * 1024**2

MANIFEST = "manifest.json"
OCI_INDEX = "index.json"
#: The OCI annotations that name an image of an ``index.json``.
_REF_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")

LOAD_REFUSED = (
    "ds01 does not allow docker load on this machine: a loaded image brings its own tags. "
    "Build your image (DOCKER_BUILDKIT=0 docker build -t {namespace}/NAME ., or image-build) "
    "or docker pull an allowed one instead."
)


class LoadRefused(DoorRefusal):
    """A tar the door does not load (why, in the message)."""


#: A load refused for what follows the tar (``{what}``: the tar's end, or the first
#: compressed stream's).
AFTER_THE_END = (
    "The image tar has more after {what}: ds01 loads exactly one tar (one compressed "
    "stream, nothing but zeros after the end of the archive). Send it as docker save wrote it."
)
_UNREADABLE = (
    "ds01 loads only a tar that every reader reads alike; send it as docker save wrote it."
)

#: How a compressed stream begins (``compression_of``): as dockerd tells a compressed tar
#: from a plain one (zstd and its skippable frames as newer dockerd reads them).
_MAGICS = (
    ("gzip", b"\x1f\x8b"),
    ("bzip2", b"BZh"),
    ("xz", b"\xfd7zXZ\x00"),
    ("zstd", b"\x28\xb5\x2f\xfd"),
)
#: Bytes at the start of a compressed stream that ``compression_of`` needs.
MAGIC_BYTES = 6


def compression_of(head: bytes) -> str | None:
    """The compression a stream beginning with ``head`` (its first :data:`MAGIC_BYTES`
    bytes, fewer when shorter) is in, as dockerd would read it; None for a plain tar."""
    for name, magic in _MAGICS:
        if head.startswith(magic):
            return name
    if len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == b"\x2a\x4d\x18":
        return "zstd"  # a skippable frame
    return None


#: The header types a loaded tar may have: files, directories, links, and the headers
#: that carry a long name or PAX records for the next one (no global PAX header, no
#: sparse file, no device node, FIFO or contiguous file).
_HEADER_TYPES = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.LNKTYPE: "hard link",
    tarfile.SYMTYPE: "symbolic link",
    tarfile.DIRTYPE: "directory",
    tarfile.XHDTYPE: "PAX header",
    tarfile.GNUTYPE_LONGNAME: "long name",
    tarfile.GNUTYPE_LONGLINK: "long link name",
}
_META_TYPES = (tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
#: A header's numeric fields (offset, length), as ustar lays them out.
_NUMBERS = {
    "mode": (100, 8),
    "uid": (108, 8),
    "gid": (116, 8),
    "size": (124, 12),
    "mtime": (136, 12),
    "checksum": (148, 8),
    "device major": (329, 8),
    "device minor": (337, 8),
}
#: A number as every reader reads it alike: octal digits after spaces, then spaces or NULs.
_OCTAL = re.compile(rb" *[0-7]* *\x00*[ \x00]*")
_POSIX_MAGIC = b"ustar\x0000"
#: The latest time a ustar header holds (a later one is written as the latest).
_MAX_USTAR_TIME = 8**11 - 1
_PREFIX = slice(345, 500)
_STAR_TRAILER = slice(508, 512)


def header_problem(block: bytes) -> str | None:
    """Why the tar header ``block`` (512 bytes, not all zeros) could be read two ways, or
    not faithfully written again; None when it reads one way only.

    Go's reader strips leading NULs of a number where Python's stops at the first NUL,
    reads any byte with the high bit as base-256 where Python takes only ``0x80`` and
    ``0xff``, and joins the ustar prefix to the name only in a POSIX header where Python
    joins it always; so a number must be plain octal (or positive base-256), and a prefix
    only in a POSIX header.
    """
    for field_name, (offset, length) in _NUMBERS.items():
        value = block[offset : offset + length]
        if value[0] == 0x80:
            continue  # positive base-256 (a size over 8 GiB), read alike
        if not _OCTAL.fullmatch(value):
            return f"a header's {field_name} field is not a plain octal number"
    kind = block[156:157]
    if kind not in _HEADER_TYPES:
        return f"a member is of type {kind!r}, not a file, directory or link"
    size = block[124:136]
    if kind in _META_TYPES and (size[0] == 0x80 or _octal(size) > MAX_LOAD_META_BYTES):
        return f"a {_HEADER_TYPES[kind]} is larger than {format_bytes(MAX_LOAD_META_BYTES)}"
    if block[_PREFIX].strip(b"\x00") and (
        block[257:265] != _POSIX_MAGIC or block[_STAR_TRAILER] == b"tar\x00"
    ):
        return "a header that is not POSIX ustar has a name prefix"
    return None


def _octal(value: bytes) -> int:
    """A numeric field that ``_OCTAL`` matched, as a number."""
    return int(value.strip(b" \x00") or b"0", 8)


def header_refused(problem: str) -> LoadRefused:
    """The refusal of a tar for a header's ``problem`` (:func:`header_problem`)."""
    return LoadRefused(f"The image tar cannot be read one way only: {problem}. {_UNREADABLE}")


def loaded_member(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """The header that goes to dockerd in place of ``member`` (read by Python's
    ``tarfile``): made anew from its name, type, size, permission bits, time and link
    target, nothing else (no owner, no PAX record), so that dockerd reads the member the
    door read.

    Raises:
        LoadRefused: a sparse or special file, a link or directory with content, a name
            or link target with a NUL or that is not UTF-8.
    """
    name = member.name
    for text in (name, member.linkname):
        if "\x00" in text or any("\udc80" <= c <= "\udcff" for c in text):
            raise header_refused(f"the name {text[:80]!r} has a NUL or is not UTF-8")
    if not name:
        raise header_refused("a member has no name")
    out = tarfile.TarInfo(name)
    out.mode = member.mode & PERMISSION_BITS
    out.mtime = min(max(0, int(member.mtime)), _MAX_USTAR_TIME)
    if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and member.sparse is None:
        out.type, out.size = tarfile.REGTYPE, member.size
        return out
    kind = _HEADER_TYPES.get(member.type) if member.type in (
        tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE) else None  # fmt: skip
    if kind is None:
        raise header_refused(f"{name[:80]!r} is not a file, directory or link")
    if member.size:
        raise header_refused(f"the {kind} {name[:80]!r} has content")
    out.type, out.linkname = member.type, member.linkname
    return out


def _kind(member: tarfile.TarInfo) -> str:
    if member.isreg():
        return "file"
    if member.isdir():
        return "directory"
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    return "special file"


@dataclass
class LoadArchive:
    """What a loaded tar holds, fed by :meth:`add` member by member: every member's kind
    (the last one of a name wins, as dockerd extracts), the symbolic links, and the JSON
    files the check reads (the manifest, the index, configs)."""

    kinds: dict[str, str] = field(default_factory=dict)
    links: set[str] = field(default_factory=set)
    files: dict[str, bytes] = field(default_factory=dict)
    kept_bytes: int = 0

    def wants(self, member: tarfile.TarInfo) -> bool:
        """Whether :meth:`add` needs ``member``'s content: a small regular file that may
        be the manifest, the index or a config (``*.json``, or an OCI blob)."""
        key = member_key(member.name)
        return (
            member.isreg()
            and member.size <= MAX_LOAD_JSON_BYTES
            and self.kept_bytes + member.size <= MAX_LOAD_KEPT_BYTES
            and (key.endswith(".json") or key.startswith("blobs/"))
        )

    def add(self, member: tarfile.TarInfo, content: bytes | None = None) -> None:
        """One member (``content``: its bytes, when :meth:`wants` said so).

        Raises:
            LoadRefused: more than :data:`MAX_LOAD_MEMBERS` members.
        """
        if len(self.kinds) >= MAX_LOAD_MEMBERS and member_key(member.name) not in self.kinds:
            raise LoadRefused(
                f"The image tar has more than {MAX_LOAD_MEMBERS} members: ds01 does not load it."
            )
        key = member_key(member.name)
        self.kinds[key] = _kind(member)
        self.links.discard(key)
        old = self.files.pop(key, None)
        self.kept_bytes -= len(old or b"")
        if member.issym():
            self.links.add(key)
        if content is not None and member.isreg():
            self.files[key] = content
            self.kept_bytes += len(content)

    def tags(self, own_repository: Callable[[str], str]) -> list[str]:
        """Every tag the tar's images carry, once each is checked (see the module);
        ``own_repository`` refuses (``PermissionError``) a repository outside the caller's
        namespace.

        Raises:
            LoadRefused: the tar is not one the door loads (named in the message).
            PermissionError: a tag outside the caller's namespace.
        """
        self._no_path_through_links()
        manifest = self._json(MANIFEST, "its manifest.json (an image saved by Docker 1.10 "
                              "or later has one)")  # fmt: skip
        if not isinstance(manifest, list) or not manifest:
            raise LoadRefused("The image tar's manifest.json names no image.")
        tags: list[str] = []
        for entry in manifest:
            if not isinstance(entry, dict):
                raise LoadRefused("The image tar's manifest.json is not Docker's.")
            repo_tags = entry.get("RepoTags") or []
            if not isinstance(repo_tags, list) or not repo_tags:
                raise LoadRefused(
                    "An image in the tar has no tag: ds01 loads only images tagged "
                    "<your namespace>/NAME:TAG (docker tag, then docker save it)."
                )
            for tag in repo_tags:
                tags.append(_own_tag(tag, own_repository))
            config = entry.get("Config")
            if not isinstance(config, str):
                raise LoadRefused("An image in the tar names no config.")
            self._check_config(config)
        self._check_index(own_repository)
        return list(dict.fromkeys(tags))

    def _no_path_through_links(self) -> None:
        for key in self.kinds:
            parts = key.split("/")
            for depth in range(1, len(parts)):
                if "/".join(parts[:depth]) in self.links:
                    raise LoadRefused(
                        f"The image tar has {key[:80]!r} below a symbolic link: ds01 does not "
                        "load it."
                    )

    def _json(self, key: str, what: str) -> object:
        kind = self.kinds.get(key)
        if kind is None:
            raise LoadRefused(f"The image tar has no {key}: ds01 loads only a tar with {what}.")
        if kind != "file":
            raise LoadRefused(f"The image tar's {key} is a {kind}, not a plain file.")
        if key not in self.files:
            raise LoadRefused(
                f"The image tar's {key} is larger than {format_bytes(MAX_LOAD_JSON_BYTES)}."
            )
        try:
            return json_value(self.files[key])
        except ValueError:
            raise LoadRefused(f"The image tar's {key} is not JSON.") from None

    def _check_config(self, config: str) -> None:
        body = self._json(member_key(config), "each image's config")
        if not isinstance(body, dict):
            raise LoadRefused("An image's config in the tar is not Docker's.")
        inner = body.get("config")
        labels = (inner.get("Labels") if isinstance(inner, dict) else None) or {}
        if not isinstance(labels, dict):
            raise LoadRefused("An image's labels in the tar are not Docker's.")
        found = {str(k): str(v) for k, v in labels.items()}
        # No owner may be claimed (``""`` is no one): only ds01 labels an image a user's.
        foreign = foreign_labels(found, L.IMAGE_OWNER, "", IMAGE_DECLARED_LABELS)
        if foreign:
            raise LoadRefused(
                f"An image in the tar carries ds01's own label {foreign[0][:80]!r}: only ds01 "
                "sets it."
            )

    def _check_index(self, own_repository: Callable[[str], str]) -> None:
        if OCI_INDEX not in self.kinds:
            return
        index = self._json(OCI_INDEX, "an OCI index.json")
        manifests = index.get("manifests") if isinstance(index, dict) else None
        for entry in manifests if isinstance(manifests, list) else []:
            annotations = entry.get("annotations") if isinstance(entry, dict) else None
            for key in _REF_ANNOTATIONS:
                ref = (annotations or {}).get(key) if isinstance(annotations, dict) else None
                # A bare tag (org.opencontainers.image.ref.name: "1.0") names no repository.
                if isinstance(ref, str) and ("/" in ref or key == _REF_ANNOTATIONS[0]):
                    _own_tag(ref.removeprefix("docker.io/"), own_repository)


#: The most images an answer's ``Loaded image`` messages are kept of (for the audit).
MAX_LOADED_NAMES = 64
#: The longest head, chunk-size line or message of dockerd's answer that is read; a longer
#: one is skipped (a load's messages are progress lines and short statements).
_MAX_ANSWER_LINE = 64 * 1024
_LOADED = ("Loaded image: ", "Loaded image ID: ")


@dataclass
class LoadAnswer:
    """dockerd's answer to ``POST /images/load``, fed as raw HTTP/1.1 bytes by
    :meth:`feed` as they pass to the client (bounded: only what the audit needs is kept),
    then read by :meth:`failure` and :attr:`loaded`.

    dockerd answers 200 with a stream of JSON messages (``Transfer-Encoding: chunked``)
    even when the load fails: the failure is an ``error`` message. Any other status is an
    error body of its own (``{"message": …}``).
    """

    status: int | None = None
    loaded: list[str] = field(default_factory=list)
    error: str | None = None
    chunked: bool = False
    ended: bool = False
    _pending: bytearray = field(default_factory=bytearray)
    _line: bytearray = field(default_factory=bytearray)
    _chunk_left: int = 0
    _crlf_left: int = 0
    _skipping: bool = False

    def feed(self, data: bytes) -> None:
        """The next bytes of dockerd's answer, as they came."""
        if self.status is None:
            self._pending += data
            head, found, rest = bytes(self._pending).partition(b"\r\n\r\n")
            if not found:
                if len(self._pending) > _MAX_ANSWER_LINE:
                    self.status, self.ended = 0, True  # not an answer the door can read
                return
            self._pending.clear()
            self._head(head)
            data = rest
        if self.ended:
            return
        if not self.chunked:
            self._text(data)
            return
        self._pending += data
        self._dechunk()

    def failure(self) -> str | None:
        """Why the load did not happen, as dockerd said it (or that it did not say); None
        when dockerd said it loaded images and no error."""
        if self.error:
            return self.error
        if self.status is None:
            return "dockerd gave no answer"
        if self.status != 200:
            return f"dockerd answered HTTP {self.status}"
        if self.chunked and not self.ended:
            return "dockerd's answer was cut short"
        if not self.loaded:
            return "dockerd did not say that it loaded an image"
        return None

    def _head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        self.chunked = any(
            name.strip().lower() == "transfer-encoding" and "chunked" in value.lower()
            for name, _, value in (line.partition(":") for line in lines[1:])
        )

    def _dechunk(self) -> None:
        while self._pending and not self.ended:
            if self._chunk_left:
                data = bytes(self._pending[: self._chunk_left])
                del self._pending[: len(data)]
                self._chunk_left -= len(data)
                self._text(data)
                continue
            if self._crlf_left:
                skipped = min(self._crlf_left, len(self._pending))
                del self._pending[:skipped]
                self._crlf_left -= skipped
                continue
            size_line, found, _ = bytes(self._pending[:_MAX_ANSWER_LINE]).partition(b"\r\n")
            if not found:
                if len(self._pending) >= _MAX_ANSWER_LINE:
                    self.ended = True  # not chunks the door can read
                return
            del self._pending[: len(size_line) + 2]
            try:
                size = int(size_line.split(b";")[0].strip() or b"x", 16)
            except ValueError:
                self.ended = True
                return
            if size == 0:
                self.ended = True
                self._text(b"\n")  # a last message without its newline
                return
            self._chunk_left, self._crlf_left = size, 2

    def _text(self, data: bytes) -> None:
        """De-chunked body bytes: one JSON message a line."""
        *complete, rest = data.split(b"\n")
        for piece in complete:
            if not self._skipping:
                self._line += piece
                self._message(bytes(self._line))
            self._line.clear()
            self._skipping = False
        if not self._skipping:
            self._line += rest
            if len(self._line) > _MAX_ANSWER_LINE:
                self._line.clear()
                self._skipping = True

    def _message(self, line: bytes) -> None:
        try:
            message = json_value(line) if line.strip() else None
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        error = message.get("error") or (message.get("message") if self.status != 200 else None)
        if error and self.error is None:
            self.error = str(error)[:_MAX_ANSWER_LINE]
        stream = message.get("stream")
        if isinstance(stream, str) and len(self.loaded) < MAX_LOADED_NAMES:
            for prefix in _LOADED:
                if stream.startswith(prefix):
                    self.loaded.append(stream.removeprefix(prefix).strip()[:300])


def _own_tag(tag: object, own_repository: Callable[[str], str]) -> str:
    """``tag`` (``REPOSITORY:TAG``) when its repository is the caller's.

    Raises:
        LoadRefused: not a tag (a digest, no tag).
        PermissionError: another namespace (``own_repository``'s refusal).
    """
    if not isinstance(tag, str) or "@" in tag or ":" not in tag.rsplit("/", 1)[-1]:
        raise LoadRefused(f"The image tar names {str(tag)[:80]!r}, which is not REPOSITORY:TAG.")
    own_repository(tag.rsplit(":", 1)[0])
    return tag


__all__ = [
    "AFTER_THE_END",
    "LOAD_REFUSED",
    "MAGIC_BYTES",
    "MAX_LOADED_NAMES",
    "MAX_LOAD_BYTES",
    "MAX_LOAD_JSON_BYTES",
    "MAX_LOAD_KEPT_BYTES",
    "MAX_LOAD_MEMBERS",
    "MAX_LOAD_META_BYTES",
    "LoadAnswer",
    "LoadArchive",
    "LoadRefused",
    "compression_of",
    "header_problem",
    "header_refused",
    "loaded_member",
]
