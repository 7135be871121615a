"""Building blocks shared by the sections of ``resource-limits.yaml``.

- ``UserName`` and ``GroupName``: account names as NSS may return them (local, LDAP, SSSD
  ``user@domain``): anything without whitespace, ``:`` or ``/``.
- ``empty_if_null``: a section written with nothing under it (``users:``) parses to null;
  it means an empty section.
- ``UNDEFINED_GROUP`` and ``refuse_undefined_group``: sections that take per-group entries
  besides the top-level ``groups:`` (``aggregate:``, ``policies:``) may only name groups
  defined there, because membership is decided there. ``ResourceLimitsConfig`` replaces the
  entry of an undefined group by ``{UNDEFINED_GROUP: (defined group names)}`` before the
  section is validated, and the entry's model calls ``refuse_undefined_group`` in its
  ``mode="before"`` validator, so that the error lands on the group's own line.
- ``LayerEntry``: the base of an entry whose keys layer (user, then groups, then
  ``defaults``, then the builtin values), with ``declared()``; ``SectionEntry``: an entry of
  a section beside the top-level limits (``aggregate:``, ``policies:``, ``reservations:``),
  which passes one check before its keys are read.
- ``NonNegative`` and ``Positive``: the finite numbers (limits, weights, hours, minutes) a
  key may take, ``>= 0`` or ``> 0``; ``NonNegative | None`` where ``null`` has a meaning.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

_ACCOUNT_NAME_RE = re.compile(r"[^\s:/]+")

#: Marks the entry of a group that the top-level ``groups:`` does not define (no YAML key
#: can equal this object).
UNDEFINED_GROUP = object()


def empty_if_null(value: Any) -> Any:
    """A section written with nothing under it (``users:``) parses to null: treat it as empty."""
    return {} if value is None else value


def account_name_checker(what: str) -> Callable[[str], str]:
    """A validator of ``what`` (``"user"``, ``"group"``) names."""

    def check(name: str) -> str:
        if not _ACCOUNT_NAME_RE.fullmatch(name):
            raise ValueError(
                f"invalid {what} name {name!r}: must be non-empty, without spaces, ':' or '/'"
            )
        return name

    return check


UserName = Annotated[str, AfterValidator(account_name_checker("user"))]
GroupName = Annotated[str, AfterValidator(account_name_checker("group"))]

#: A finite number ``>= 0`` (a limit, a weight, a grace period: 0 means none).
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: A finite number ``> 0`` (a period that must pass, a largest size).
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
#: A finite share in ``(0, 1]`` (a factor that may shrink a limit, a part of one).
Fraction = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]


class LayerEntry(BaseModel):
    """One layer (``defaults``, a group or a user) of a section whose keys layer.

    A key written as ``null`` and a key left out differ: ``null`` is a value (mostly
    *unlimited*), a key left out inherits from the next layer. Pydantic keeps that
    difference in ``model_fields_set``; read it through ``declared()``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    #: The keys that layer, in the order they are documented and shown; each entry class
    #: sets it once its fields exist (a subclass's extra fields, such as a group's
    #: ``members``, are not among them).
    layer_keys: ClassVar[tuple[str, ...]] = ()

    def declared(self) -> dict[str, Any]:
        """The keys written in this layer, with their values (``None`` = null).

        Keys left out of the layer are absent from the result: they inherit.
        """
        return {key: getattr(self, key) for key in self.layer_keys if key in self.model_fields_set}


class SectionEntry(LayerEntry):
    """An entry of ``aggregate:``, ``policies:`` or ``reservations:``: one check before its keys.

    Before its fields are read, an entry passes ``_layer``: ``null`` reads as empty, an entry
    marked by ``mark_undefined_groups`` is refused, and a key of the reference
    implementation (``renamed_keys``: its name → what to use instead) gets a message naming
    the ds01 key and the section's keys (``section_word``). One message per entry; a
    subclass's own ``mode="before"`` validator runs before this one (pydantic's order).
    """

    #: The section's name in messages (``"aggregate"`` in "aggregate keys: …").
    section_word: ClassVar[str] = ""
    #: Keys of the reference implementation, each with what to write instead.
    renamed_keys: ClassVar[Mapping[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _layer(cls, value: Any) -> Any:
        value = empty_if_null(value)
        refuse_undefined_group(value)
        if isinstance(value, dict):
            for key in value:
                if key in cls.renamed_keys:
                    raise ValueError(
                        f"unknown key {key!r}; use {cls.renamed_keys[key]} "
                        f"({cls.section_word} keys: {', '.join(cls.layer_keys)})"
                    )
        return value


def mark_undefined_groups(section: Any, defined: tuple[str, ...]) -> Any:
    """``section`` (raw YAML data) with the entries under its ``groups:`` that name no group
    of ``defined`` replaced by the ``UNDEFINED_GROUP`` marker; anything else unchanged."""
    if not isinstance(section, dict):
        return section
    groups = section.get("groups")
    if not isinstance(groups, dict):
        return section
    marked = {
        name: entry if name in defined else {UNDEFINED_GROUP: defined}
        for name, entry in groups.items()
    }
    return {**section, "groups": marked}


def refuse_undefined_group(value: Any) -> None:
    """Raise the error for an entry that ``mark_undefined_groups`` marked, if it is one."""
    if isinstance(value, dict) and UNDEFINED_GROUP in value:
        defined = ", ".join(value[UNDEFINED_GROUP]) or "none"
        raise ValueError(
            "no such group under the top-level groups: section, where membership is "
            f"defined (defined: {defined})"
        )


__all__ = [
    "UNDEFINED_GROUP",
    "Fraction",
    "GroupName",
    "LayerEntry",
    "NonNegative",
    "Positive",
    "SectionEntry",
    "UserName",
    "account_name_checker",
    "empty_if_null",
    "mark_undefined_groups",
    "refuse_undefined_group",
]
