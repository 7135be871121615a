"""Validation of names and references that users type. Pure; raises InvalidInput."""

from __future__ import annotations

import re

from ds01.errors import InvalidInput
from ds01.model.text import shown

# Use with fullmatch: "$" would also match before a trailing newline.
CONTAINER_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}", re.ASCII)
# The grammar of github.com/distribution/reference: [domain[:port]/]path[:tag][@digest].
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
# Use with fullmatch.
IMAGE_REFERENCE_RE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?",
    re.ASCII,
)
# Docker refuses repository names longer than this.
_MAX_REPOSITORY_LENGTH = 255


def is_image_reference(reference: str) -> bool:
    """Whether ``reference`` is a syntactically valid Docker image reference."""
    match = IMAGE_REFERENCE_RE.fullmatch(reference)
    return match is not None and len(match["name"]) <= _MAX_REPOSITORY_LENGTH


def with_default_tag(reference: str) -> str:
    """The reference as Docker resolves it: ``:latest`` added when it has no tag or digest."""
    match = IMAGE_REFERENCE_RE.fullmatch(reference)
    if match is None or match["tag"] or match["digest"]:
        return reference
    return f"{reference}:latest"


def require_match(
    pattern: re.Pattern[str], text: str, refusal: str, error: type[Exception] = InvalidInput
) -> str:
    """``text`` if ``pattern`` matches all of it, else ``error(refusal)``."""
    if not pattern.fullmatch(text):
        raise error(refusal)
    return text


def validate_container_name(name: str) -> str:
    """Return ``name`` if it is a valid container name, else raise InvalidInput."""
    return require_match(
        CONTAINER_NAME_RE,
        name,
        f"Invalid container name {shown(name)}: use 1-63 letters, digits, '_' or '-', "
        "starting with a letter or digit (e.g. 'thesis', 'exp-01').",
    )


def validate_image_reference(ref: str) -> str:
    """Return ``ref`` if it is a well-formed Docker image reference, else raise InvalidInput."""
    if not is_image_reference(ref):
        raise InvalidInput(
            f"Invalid image reference {shown(ref)}: expected e.g. 'pytorch-jupyter' (a registry "
            "name from `image-list`) or 'repo/name:tag'."
        )
    return ref
