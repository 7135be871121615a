"""Targeted edits of ``resource-limits.yaml``: ``ds01 admin add-user`` and ``remove-user``.

An edit changes only the lines it must; the rest of the file, comments included, stays as
the admin wrote it. It works on the text, at positions taken from the YAML node tree, and
then checks itself twice:

1. the edited text must parse to exactly the data the change should give (the same change
   made on the parsed data);
2. the whole new document must pass the loader's own validation (``parse_config``), so an
   edit can never produce a file that ds01d would refuse.

Where the file uses a form the targeted edit does not handle (anchors and aliases at the
place to change, a flow mapping at the top, …), check 1 fails and the document is written
anew from its data instead: its comments are then lost, and the result says so
(``comments_kept``). Check 2 failing refuses the change (``ConfigError``).

The edits:

- add a user without a group: an entry ``users: {NAME: {}}`` (a user entry that sets no
  key: the user is listed, and every limit still comes from groups and defaults);
- add a user to a group: ``NAME`` appended to ``groups.<group>.members`` (the group must be
  defined);
- remove a user: their entries under ``users:``, ``aggregate.users:``,
  ``policies.users:`` and ``reservations.users:``, and their name from every group's
  ``members``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from ds01.config.loader import has_document, parse_config
from ds01.errors import InvalidInput

#: Sections whose ``users:`` mapping holds per-user entries (the top level is ``()``).
USER_SECTIONS: tuple[tuple[str, ...], ...] = ((), ("aggregate",), ("policies",), ("reservations",))

_NULL_TAG = "tag:yaml.org,2002:null"
_STR_TAG = "tag:yaml.org,2002:str"

Tree = str | dict[str, "Tree"]  # a value to insert: flow text, or nested keys


@dataclass(frozen=True)
class LimitsEdit:
    """The outcome of an edit of ``resource-limits.yaml``.

    Attributes:
        text: the new text of the file (the old one when nothing changes).
        changes: what changed, one sentence each; empty when nothing had to.
        comments_kept: whether the file was edited in place (``False``: written anew from
            its data, comments lost).
    """

    text: str
    changes: tuple[str, ...]
    comments_kept: bool = True


class _Unsupported(Exception):
    """The targeted edit does not handle this form of YAML."""


@dataclass(frozen=True)
class _Splice:
    start: int
    end: int
    text: str


def _scalar(value: str) -> str:
    """``value`` as a YAML scalar, quoted only where needed (``yes``, ``1e3``, ``@x``)."""
    dumped = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True)
    return dumped.split("\n", 1)[0]


def _render_flow(tree: Tree) -> str:
    if isinstance(tree, str):
        return tree
    return "{" + ", ".join(f"{_scalar(k)}: {_render_flow(v)}" for k, v in tree.items()) + "}"


def _render_block(key: str, tree: Tree, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(tree, str):
        return [f"{pad}{_scalar(key)}: {tree}"]
    lines = [f"{pad}{_scalar(key)}:"]
    for child, subtree in tree.items():
        lines += _render_block(child, subtree, indent + 2)
    return lines


class _Document:
    """A YAML text with its node tree, and the positions edits are made at."""

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            self.root: yaml.Node | None = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            raise _Unsupported(str(exc)) from exc

    @staticmethod
    def item(node: yaml.Node | None, key: str) -> tuple[yaml.Node, yaml.Node] | None:
        """The (key node, value node) of plain string key ``key`` in mapping ``node``."""
        if not isinstance(node, yaml.MappingNode):
            return None
        for key_node, value_node in node.value:
            if (
                isinstance(key_node, yaml.ScalarNode)
                and key_node.tag == _STR_TAG
                and key_node.value == key
            ):
                return key_node, value_node
        return None

    def end_of_line(self, index: int) -> int:
        """The index of the newline ending the line that holds ``index`` (or the end)."""
        newline = self.text.find("\n", index)
        return len(self.text) if newline < 0 else newline

    def line_start(self, index: int) -> int:
        return self.text.rfind("\n", 0, index) + 1

    def last_end(self, node: yaml.Node) -> int:
        """Where the text of ``node`` ends: its last scalar's end, for block collections."""
        if isinstance(node, yaml.ScalarNode):
            if node.style in ("|", ">"):
                raise _Unsupported("a block scalar")
            return int(node.end_mark.index)
        if getattr(node, "flow_style", False) or not node.value:
            return int(node.end_mark.index)
        last = node.value[-1]
        return self.last_end(last[1] if isinstance(node, yaml.MappingNode) else last)

    def first_on_line(self, node: yaml.Node) -> bool:
        start = int(node.start_mark.index)
        return not self.text[self.line_start(start) : start].strip()


def _is_null(node: yaml.Node | None) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


def _insert_key(doc: _Document, path: tuple[str, ...], key: str, value: Tree) -> list[_Splice]:
    """Splices that add ``key: value`` to the mapping at ``path`` (created as needed)."""
    node, owner = doc.root, None
    for depth, part in enumerate(path):
        found = doc.item(node, part)
        if found is None:
            nested: Tree = value
            for inner in reversed((*path[depth + 1 :], key)):
                nested = {inner: nested}
            return _add_item(doc, node, owner, part, nested)
        owner, node = found
    return _add_item(doc, node, owner, key, value)


def _add_item(
    doc: _Document, node: yaml.Node | None, owner: yaml.Node | None, key: str, value: Tree
) -> list[_Splice]:
    """Splices that add ``key: value`` to mapping ``node`` (the value of key ``owner``;
    ``None`` for the document's top level)."""
    text = doc.text
    if node is None or (_is_null(node) and owner is None):
        block = "\n".join(_render_block(key, value, 0))
        if not text.strip():
            return [_Splice(0, len(text), text + block + "\n")]
        lead = "" if text.endswith("\n") else "\n"
        return [_Splice(len(text), len(text), f"{lead}{block}\n")]
    if _is_null(node) and owner is not None:
        if not doc.first_on_line(owner):
            raise _Unsupported("a key that is not first on its line")
        indent = int(owner.start_mark.column) + 2
        block = "\n".join(_render_block(key, value, indent))
        start, end = int(node.start_mark.index), int(node.end_mark.index)
        eol = doc.end_of_line(end)
        return [_Splice(start, end, ""), _Splice(eol, eol, "\n" + block)]
    if not isinstance(node, yaml.MappingNode):
        raise _Unsupported("not a mapping")
    if node.flow_style:
        return _append_to_flow(doc, node, f"{_scalar(key)}: {_render_flow(value)}")
    first_key = node.value[0][0]
    if not doc.first_on_line(first_key):
        raise _Unsupported("a block mapping whose keys are not first on their lines")
    block = "\n".join(_render_block(key, value, int(first_key.start_mark.column)))
    eol = doc.end_of_line(doc.last_end(node))
    return [_Splice(eol, eol, "\n" + block)]


def _append_to_flow(
    doc: _Document, node: yaml.MappingNode | yaml.SequenceNode, entry: str
) -> list[_Splice]:
    """The splice that appends ``entry`` (rendered) to the flow mapping or sequence ``node``,
    just before its closing brace or bracket."""
    close = int(node.end_mark.index) - 1
    if isinstance(node, yaml.MappingNode):
        closer, without = "}", "a flow mapping without its closing brace"
    else:
        closer, without = "]", "a flow sequence without its closing bracket"
    if doc.text[close] != closer:
        raise _Unsupported(without)
    return [_Splice(close, close, (", " if node.value else "") + entry)]


def _append_to_sequence(doc: _Document, path: tuple[str, ...], item: str) -> list[_Splice]:
    """Splices that append scalar ``item`` to the sequence at ``path`` (created if absent)."""
    parent = doc.root
    for part in path[:-1]:
        found = doc.item(parent, part)
        if found is None:
            raise _Unsupported(f"no {part!r} where expected")
        parent = found[1]
    found = doc.item(parent, path[-1])
    if found is None:
        return _insert_key(doc, path[:-1], path[-1], f"[{_scalar(item)}]")
    node = found[1]
    text = doc.text
    if _is_null(node):
        start, end = int(node.start_mark.index), int(node.end_mark.index)
        flow = f"[{_scalar(item)}]"
        return [_Splice(start, end, " " + flow if start == end else flow)]
    if not isinstance(node, yaml.SequenceNode):
        raise _Unsupported("not a sequence")
    if node.flow_style:
        return _append_to_flow(doc, node, _scalar(item))
    first = node.value[0]
    start = int(first.start_mark.index)
    prefix = text[doc.line_start(start) : start]
    if prefix.strip() != "-":
        raise _Unsupported("a block sequence whose items are not one to a line")
    eol = doc.end_of_line(doc.last_end(node))
    return [_Splice(eol, eol, "\n" + prefix + _scalar(item))]


def _remove_from_collection(
    doc: _Document, owner: yaml.Node, node: yaml.Node, index: int
) -> list[_Splice]:
    """Splices that remove entry ``index`` of mapping or sequence ``node`` (the value of key
    node ``owner``): its key (or item) through the end of its value."""
    text = doc.text
    mapping = isinstance(node, yaml.MappingNode)
    # Where each entry starts (its key, or the item) and the node whose end is its end.
    bounds: list[tuple[yaml.Node, yaml.Node]] = (
        [(k, v) for k, v in node.value] if mapping else [(i, i) for i in node.value]
    )
    first, last = bounds[index]
    start, end = int(first.start_mark.index), doc.last_end(last)
    if getattr(node, "flow_style", False):
        if index + 1 < len(bounds):
            return [_Splice(start, int(bounds[index + 1][0].start_mark.index), "")]
        if index > 0:
            return [_Splice(doc.last_end(bounds[index - 1][1]), end, "")]
        return [_Splice(start, end, "")]
    lead = text[doc.line_start(start) : start].strip()
    if lead != ("" if mapping else "-"):
        raise _Unsupported("a block entry that is not alone on its line")
    eol = doc.end_of_line(end)
    if len(bounds) == 1:  # the collection becomes empty: `key: {}` / `key: []`
        return [_Splice(int(owner.end_mark.index), eol, ": {}" if mapping else ": []")]
    return [_Splice(doc.line_start(start), min(eol + 1, len(text)), "")]


def _apply(text: str, splices: list[_Splice]) -> str:
    for splice in sorted(splices, key=lambda s: (s.start, s.end), reverse=True):
        text = text[: splice.start] + splice.text + text[splice.end :]
    return text


def _unshared(data: Any) -> Any:
    """A copy of YAML data in which no two places share an object, as YAML aliases make
    them do: a change to one place must not show up at another."""
    if isinstance(data, dict):
        return {key: _unshared(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_unshared(value) for value in data]
    return data


def _mapping(data: Any, *path: str) -> dict[str, Any] | None:
    for part in path:
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data if isinstance(data, dict) else None


def _finish(
    text: str,
    source: str,
    expected: Any,
    changes: list[str],
    targeted: Callable[[_Document], list[_Splice]],
) -> LimitsEdit:
    """The edited text: targeted if it gives ``expected``, else written anew; validated."""
    if not changes:
        return LimitsEdit(text=text, changes=())
    new_text: str | None
    try:
        new_text = _apply(text, targeted(_Document(text)))
        if yaml.safe_load(new_text) != expected:
            new_text = None
    except (_Unsupported, yaml.YAMLError):
        new_text = None
    kept = new_text is not None
    if new_text is None:
        new_text = (
            "# Written by ds01 admin: the previous version's comments could not be kept.\n"
            + yaml.safe_dump(expected, sort_keys=False, allow_unicode=True)
        )
    parse_config(new_text, "resource-limits", source)  # ConfigError: refused, as the loader would
    return LimitsEdit(text=new_text, changes=tuple(changes), comments_kept=kept)


def _load(text: str, source: str) -> Any:
    """The file's data after the loader's checks (an invalid file cannot be edited). A file
    with no settings yet (missing, or comments only) is edited as an empty one."""
    if not has_document(text):
        return {}
    parse_config(text, "resource-limits", source)
    data = yaml.safe_load(text)
    return {} if data is None else data


def add_user(text: str, source: str, user: str, group: str | None = None) -> LimitsEdit:
    """Add ``user``: to ``groups.<group>.members``, or as an entry under ``users:``.

    Nothing changes when they are already there.

    Raises:
        InvalidInput: ``group`` is not defined under ``groups:``.
        ConfigError: the file is invalid now, or would be after the change.
    """
    data = _load(text, source)
    expected = _unshared(data)
    changes: list[str] = []
    if group is not None:
        groups = _mapping(expected, "groups") or {}
        if group not in groups:
            defined = ", ".join(groups) or "none"
            raise InvalidInput(
                f"No group {group!r} under groups: in {source} (defined: {defined}). Define it "
                "there first, or leave out --group."
            )
        entry = groups[group] if isinstance(groups[group], dict) else {}
        expected["groups"][group] = entry
        members = list(entry.get("members") or [])
        if user not in members:
            entry["members"] = [*members, user]
            changes.append(f"add {user} to groups.{group}.members")

        def targeted(doc: _Document) -> list[_Splice]:
            return _append_to_sequence(doc, ("groups", group, "members"), user)

    else:
        users = _mapping(expected, "users")
        if users is None or user not in users:
            expected["users"] = {**(users or {}), user: {}}
            changes.append(f"add an entry for {user} under users:")

        def targeted(doc: _Document) -> list[_Splice]:
            return _insert_key(doc, ("users",), user, "{}")

    return _finish(text, source, expected, changes, targeted)


def _places(data: Any, user: str) -> list[tuple[str, ...]]:
    """The key paths where ``user`` appears: ``("users", NAME)``, the same under each other
    section of ``USER_SECTIONS`` (``("aggregate", "users", NAME)``, …) and ``("groups", G,
    "members")``."""
    found = [
        (*section, "users", user)
        for section in USER_SECTIONS
        if user in (_mapping(data, *section, "users") or {})
    ]
    for name, entry in (_mapping(data, "groups") or {}).items():
        if isinstance(entry, dict) and user in (entry.get("members") or []):
            found.append(("groups", name, "members"))
    return found


def user_entries(data: Any, user: str) -> list[str]:
    """Where ``user`` appears in ``resource-limits.yaml`` data, for people:
    ``users.NAME``, ``aggregate.users.NAME``, ``policies.users.NAME``,
    ``reservations.users.NAME``, ``groups.G.members``."""
    return [".".join(place) for place in _places(data, user)]


def remove_user(text: str, source: str, user: str) -> LimitsEdit:
    """Remove ``user``'s entries (``users:`` and the ``users:`` of each section of
    ``USER_SECTIONS``) and their name from every group's ``members``. Nothing changes when
    there is none.

    Raises:
        ConfigError: the file is invalid now, or would be after the change.
    """
    data = _load(text, source)
    expected = _unshared(data)
    places = _places(data, user)
    for section in USER_SECTIONS:
        users = _mapping(expected, *section, "users")
        if users is not None:
            users.pop(user, None)
    for entry in (_mapping(expected, "groups") or {}).values():
        if isinstance(entry, dict) and user in (entry.get("members") or []):
            entry["members"] = [m for m in entry["members"] if m != user]

    def targeted(doc: _Document) -> list[_Splice]:
        splices: list[_Splice] = []
        for place in places:
            members = place[0] == "groups"
            owner, node = _walk(doc, place if members else place[:-1])
            if members and isinstance(node, yaml.SequenceNode):
                names = [n.value if isinstance(n, yaml.ScalarNode) else None for n in node.value]
            elif not members and isinstance(node, yaml.MappingNode):
                names = [k.value if isinstance(k, yaml.ScalarNode) else None for k, _ in node.value]
            else:
                raise _Unsupported(".".join(place))
            splices += _remove_from_collection(doc, owner, node, names.index(user))
        return splices

    changes = [
        f"remove {user} from {'.'.join(p)}" if p[0] == "groups" else f"remove {'.'.join(p)}"
        for p in places
    ]
    return _finish(text, source, expected, changes, targeted)


def _walk(doc: _Document, path: tuple[str, ...]) -> tuple[yaml.Node, yaml.Node]:
    """The (key node, value node) at ``path``."""
    node: yaml.Node | None = doc.root
    found: tuple[yaml.Node, yaml.Node] | None = None
    for part in path:
        found = doc.item(node, part)
        if found is None:
            raise _Unsupported(f"{'.'.join(path)} not found")
        node = found[1]
    if found is None:
        raise _Unsupported("an empty path")
    return found


__all__ = ["USER_SECTIONS", "LimitsEdit", "add_user", "remove_user", "user_entries"]
