"""Keep secrets out of the event log.

A value is replaced by :data:`REDACTED` when its key looks like a secret: passwords,
secrets, tokens, API or private keys, credentials, authorisation headers, cookies, and
environments (``env``, ``environment``, ``env_vars``, ``container-env``…: environment
values are never logged, whatever they hold). Keys are matched case-insensitively at any
depth, inside nested objects and inside lists (of objects, or of lists).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[redacted]"

SECRET_KEY_RE = re.compile(
    r"pass(word|wd)?|secret|token|api[_-]?key|private[_-]?key|credential|authori[sz]ation"
    r"|cookie|(^|[_.-])env(iron(ment)?)?($|[_.-])",
    re.IGNORECASE,
)


def is_secret_key(key: object) -> bool:
    """Whether a value under ``key`` must not be logged."""
    return SECRET_KEY_RE.search(str(key)) is not None


def redact(value: Any) -> Any:
    """``value`` with every secret-looking key's value replaced, at any depth.

    Mappings become ``dict``, lists and tuples become ``list``; other values are returned
    unchanged. The argument is never modified.
    """
    if isinstance(value, Mapping):
        return redact_details(value)
    if isinstance(value, (list, tuple)):
        return [redact(item) for item in value]
    return value


def redact_details(details: Mapping[Any, Any]) -> dict[str, Any]:
    """A copy of an event's ``details`` with secrets redacted (see :func:`redact`)."""
    return {
        str(key): REDACTED if is_secret_key(key) else redact(value)
        for key, value in details.items()
    }
