"""Validation of names and references that users type. Pure; raises InvalidInput."""

from __future__ import annotations

import re

from ds01.errors import InvalidInput

CONTAINER_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$")
# A Docker image reference: [registry[:port]/]path[:tag][@digest], lowercase path components.
IMAGE_REF_RE = re.compile(
    r"^(?:(?P<registry>[a-zA-Z0-9.-]+(?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


def validate_container_name(name: str) -> str:
    """Return ``name`` if it is a valid container name, else raise InvalidInput."""
    if not CONTAINER_NAME_RE.match(name):
        raise InvalidInput(
            f"Invalid container name {name!r}: use 1-63 letters, digits, '_' or '-', "
            "starting with a letter or digit (e.g. 'thesis', 'exp-01')."
        )
    return name


def validate_image_reference(ref: str) -> str:
    """Return ``ref`` if it is a well-formed Docker image reference, else raise InvalidInput."""
    if len(ref) > 255 or not IMAGE_REF_RE.match(ref):
        raise InvalidInput(
            f"Invalid image reference {ref!r}: expected e.g. 'pytorch-jupyter' (a registry "
            "name from `image-list`) or 'repo/name:tag'."
        )
    return ref
