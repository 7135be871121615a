"""Modules imported on first use, for ds01d's start: a route's handler module loads when
the route is first called, not before the socket answers.

``deferred("ds01.daemon.admin")`` stands for the module; reading any of its attributes
imports it (``importlib.import_module``: thread-safe, once) and reads the module's. Spell
the import under ``typing.TYPE_CHECKING`` too, so that the type checker sees the module
itself::

    if TYPE_CHECKING:
        from ds01.daemon import admin
    else:
        admin = deferred("ds01.daemon.admin")
"""

from __future__ import annotations

import importlib
from typing import Any


class DeferredModule:
    """The module named ``name``, imported when one of its attributes is first read."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<deferred module {self._name!r}>"


def deferred(name: str) -> DeferredModule:
    """``name``'s module, imported on first use (see the module's docstring)."""
    return DeferredModule(name)


__all__ = ["DeferredModule", "deferred"]
