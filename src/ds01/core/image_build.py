"""Pure rules of user image builds: where a user's images are tagged, which images a
Dockerfile builds from, how Docker's build output reads. Raises ``InvalidInput``.

Tags. A user's images live in their namespace, ``<namespace>/<name>:<tag>``:

- the namespace is the user name when it is already a valid lower-case repository component
  without dots that does not end in ``-<digits>`` (``alice`` → ``alice``); otherwise the
  user name made valid (lower case, any other character → ``-``, no dots, so that Docker
  never reads it as a registry host) with ``-<uid>`` appended (``Jane.Doe`` →
  ``jane-doe-1004``, ``élodie`` → ``lodie-1005``, ``ÉÉ`` → ``u-1006``); a user name
  beginning with ``ds01`` takes the second form too (``ds01-kept`` → ``ds01-kept-1007``),
  as ds01's own repositories begin so. The rule is injective: a namespace that ends in
  ``-<digits>`` is always the form with the uid, those digits the uid, and any other is
  the user name itself; so ``Jane`` (uid 1004) gets ``jane-1004`` and a user named
  ``jane-1004`` gets ``jane-1004-<their uid>``, and two users never share a namespace;
- the name is made a valid component the same way (``My Project`` → ``my-project``; dots
  and underscores between letters stay) and is at most 64 characters;
- the tag must already be valid (``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``), default ``latest``.

Base images. ``base_references`` (``ds01.core.dockerfile_bases``) returns the images a
Dockerfile builds from, read as Docker's builder reads it, so that ds01d can check them
against the image policy before Docker sees the Dockerfile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ds01.core.dockerfile_bases import BaseReference, base_references
from ds01.errors import InvalidInput
from ds01.model import labels as L
from ds01.model.names import IMAGE_REFERENCE_RE, is_image_reference, require_match

#: ds01 labels a user's image may carry: they say what it serves (the port ds01 publishes
#: with a token of its own, a JupyterHub single-user server) and grant nothing.
IMAGE_DECLARED_LABELS = frozenset({L.JUPYTER_PORT, L.JUPYTERHUB})
DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 64
DEFAULT_DOCKERFILE = "Dockerfile"

_TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
#: Repositories ds01 writes itself (``ds01-kept/``: the commits of re-created containers)
#: begin so: a user named so gets the form with the uid, never such a namespace.
RESERVED_NAMESPACE_PREFIX = "ds01"
_NAMESPACE_RE = re.compile(r"[a-z0-9]+(?:(?:_|__|-+)[a-z0-9]+)*", re.ASCII)
#: How the form with the uid ends, and nothing else does (the rule's injectivity).
_UID_SUFFIX_RE = re.compile(r"-[0-9]+\Z", re.ASCII)
_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : ")


def _component(text: str, *, dots: bool) -> str:
    """``text`` as a repository path component: lower case, other characters → ``-``, only
    valid separators left, none at either end; ``""`` if nothing usable remains."""
    allowed = "a-z0-9._-" if dots else "a-z0-9_-"
    cleaned = re.sub(f"[^{allowed}]+", "-", text.lower())
    # A run of separators is valid only as '.', '_', '__' or dashes: anything else → '-'.
    cleaned = re.sub(
        r"[._-]{2,}", lambda m: m[0] if m[0] == "__" or set(m[0]) == {"-"} else "-", cleaned
    )
    return cleaned.strip("._-")


def user_namespace(user: str, uid: int) -> str:
    """The first component of ``user``'s image references (see the module docstring)."""
    if (
        _NAMESPACE_RE.fullmatch(user)
        and len(user) <= MAX_NAME_LENGTH
        and not user.startswith(RESERVED_NAMESPACE_PREFIX)
        and not _UID_SUFFIX_RE.search(user)
    ):
        return user
    cleaned = _component(user, dots=False)[: MAX_NAME_LENGTH - 12].strip("_-")
    return f"{cleaned or 'u'}-{uid}"


def image_name(name: str) -> str:
    """``name`` as a valid repository component (see the module docstring)."""
    cleaned = _component(name, dots=True)[:MAX_NAME_LENGTH].strip("._-")
    if not cleaned:
        raise InvalidInput(
            f"Invalid image name {name!r}: use letters, digits, '-', '_' or '.' "
            "(e.g. 'thesis', 'cv-segmentation')."
        )
    return cleaned


def validate_tag(tag: str) -> str:
    return require_match(
        _TAG_RE,
        tag,
        f"Invalid tag {tag!r}: use up to 128 letters, digits, '_', '.' or '-', starting "
        "with a letter, digit or '_' (e.g. 'latest', 'v2', '2026-11-28').",
    )


@dataclass(frozen=True)
class BuildTarget:
    """Where a build is tagged: ``repository:tag``."""

    repository: str
    tag: str

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


def build_target(user: str, uid: int, name: str, tag: str | None = None) -> BuildTarget:
    """``<namespace>/<name>:<tag>`` for ``user``'s image ``name``."""
    target = BuildTarget(
        f"{user_namespace(user, uid)}/{image_name(name)}", validate_tag(tag or DEFAULT_TAG)
    )
    if not is_image_reference(target.reference):  # defensive: the parts are valid already
        raise InvalidInput(f"Cannot make an image reference of {name!r}.")
    return target


def owns_reference(user: str, uid: int, reference: str) -> bool:
    """Whether ``reference`` lies in ``user``'s namespace."""
    match = IMAGE_REFERENCE_RE.fullmatch(reference)
    return match is not None and match["name"].startswith(user_namespace(user, uid) + "/")


def validate_dockerfile_path(path: str) -> str:
    """A Dockerfile path inside the build context: relative, normalised, no ``..``."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if (
        not path
        or path.startswith("/")
        or ".." in parts
        or not parts
        or len(path) > 4096
        or any(ord(c) < 32 for c in path)
    ):
        raise InvalidInput(
            f"Invalid --file {path!r}: give the Dockerfile's path inside the build context, "
            "e.g. 'Dockerfile' or 'docker/Dockerfile.gpu'."
        )
    return "/".join(parts)


# --- build output ---------------------------------------------------------------------------


def build_step(line: str) -> tuple[int, int] | None:
    """(step, steps) of a ``Step 3/7 : RUN …`` line of Docker's build output."""
    match = _STEP_RE.match(line)
    return (int(match[1]), int(match[2])) if match else None


def foreign_labels(
    labels: dict[str, str], owner_key: str, owner: str, declared: frozenset[str] = frozenset()
) -> list[str]:
    """Label keys under ``ds01.`` that a user's image may not carry: every one but
    ``owner_key`` with the value ``owner`` and the ``declared`` keys, which describe the
    image (what it serves) and grant nothing. An empty value claims nothing (Docker cannot
    delete a label, only empty it: a container kept as an image has its labels emptied)."""
    return sorted(
        key
        for key, value in labels.items()
        if key.startswith(L.PREFIX)  # ds01d's own: a user's image may carry none but the owner
        and value
        and key not in declared
        and not (key == owner_key and value == owner)
    )


__all__ = [
    "DEFAULT_DOCKERFILE",
    "DEFAULT_TAG",
    "IMAGE_DECLARED_LABELS",
    "BaseReference",
    "BuildTarget",
    "base_references",
    "build_step",
    "build_target",
    "foreign_labels",
    "image_name",
    "owns_reference",
    "user_namespace",
    "validate_dockerfile_path",
    "validate_tag",
]
