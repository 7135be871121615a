"""What a configuration error says: ds01's own sentence for each of pydantic's errors.

pydantic speaks of "inputs" and Python types (``Extra inputs are not permitted``, ``Input
should be a valid boolean``); an admin editing YAML wants the key, what it expects in YAML
terms, and for a mistyped key the one that was meant. Pure: no files.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from ds01.model.suggest import did_you_mean

#: YAML's words for what pydantic's error types expect.
_EXPECTED = {
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "string_type": "text (quote it if YAML reads it as a number or true/false)",
    "list_type": "a list (one '- item' per line, or [a, b])",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
}
#: pydantic's comparison errors: the context key and how the bound reads.
_BOUNDS = {
    "greater_than": ("gt", "more than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


def error_message(error: ErrorDetails, model: type[BaseModel]) -> str:
    """The sentence for one of pydantic's ``errors()`` of validating ``model``."""
    kind, ctx = error["type"], error.get("ctx") or {}
    got = _shown(error.get("input"))
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        *where, key = error["loc"] or ("",)
        hint = did_you_mean(str(key), sorted(keys_at(model, where)))
        return f"unknown key {str(key)!r}{'.' + hint if hint else ''}"
    if kind == "missing":
        return "this key is required"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {got}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected', 'one of the listed values')}, got {got}"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"must be {words} {_number(ctx.get(key))}, got {got}"
    return str(error["msg"])


def keys_at(model: type[BaseModel], location: Sequence[str | int]) -> set[str]:
    """The keys (field names and aliases) allowed in the mapping at ``location`` of a
    ``model`` document; empty when that mapping is not a model's (e.g. a free ``users:``
    mapping, where any name is a key)."""
    types: list[Any] = [model]
    for part in location:
        types = [inner for t in types for inner in _step(t, part)]
    return {key for t in types if _is_model(t) for key in _keys(t)}


def _step(annotation: Any, part: str | int) -> Iterator[Any]:
    """What is found at ``part`` inside a value of type ``annotation``."""
    if _is_model(annotation):
        for name, field in annotation.model_fields.items():
            if part in (name, field.alias):
                yield from _unwrapped(field.annotation)
        return
    for inner in _unwrapped(annotation):
        origin = get_origin(inner)
        arguments = get_args(inner)
        if origin in (list, tuple, set, frozenset) and arguments:
            yield from _unwrapped(arguments[0])
        elif origin is dict and len(arguments) == 2:
            yield from _unwrapped(arguments[1])
        elif _is_model(inner):
            yield from _step(inner, part)


def _unwrapped(annotation: Any) -> Iterator[Any]:
    """``annotation`` without Optional, unions and Annotated: each type it may be."""
    origin = get_origin(annotation)
    if origin is Annotated:
        yield from _unwrapped(get_args(annotation)[0])
    elif origin in (Union, UnionType):
        for argument in get_args(annotation):
            yield from _unwrapped(argument)
    else:
        yield annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _keys(model: type[BaseModel]) -> Iterator[str]:
    for name, field in model.model_fields.items():
        yield name
        if field.alias:
            yield field.alias


def _number(value: object) -> str:
    """A bound as an admin wrote it: ``0``, not ``0.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _shown(value: object) -> str:
    """A value as YAML writes it (``null``, ``true``, ``'text'``), at most 60 characters."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = ["error_message", "keys_at"]
