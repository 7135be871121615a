"""One place for each constant: no two modules of ``src/ds01`` (nor one module twice) bind
the same public constant name to the same value; the second place imports the first."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "src" / "ds01"

#: Same name and value, different things: each may change without the other.
DIFFERENT_THINGS = {
    # The CLI's (lazy import guard) idiom, not a constant.
    "TYPE_CHECKING",
    # The value of DS01_CLUSTER (cli.cluster_views) and of an overview's cluster field (tui).
    "SLURM",
    # The long poll of `events --follow` and that of a build or pull: tuned apart.
    "POLL_SECONDS",
}


def repeated_constants(sources: dict[str, str]) -> list[str]:
    """``NAME = value`` at module level (``NAME`` upper case, no leading underscore; not a
    ``TypeVar``) bound in more than one place to the same value, as
    ``NAME = value: path:line, path:line``."""
    places: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path, source in sources.items():
        for node in ast.parse(source).body:
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            else:
                continue
            if isinstance(value, ast.Call) and ast.unparse(value.func) == "TypeVar":
                continue  # a type variable is each module's own
            for target in targets:
                name = target.id if isinstance(target, ast.Name) else ""
                if name.isupper() and not name.startswith("_") and name not in DIFFERENT_THINGS:
                    places[(name, ast.unparse(value))].append(f"{path}:{node.lineno}")
    return [
        f"{name} = {value}: {', '.join(where)}"
        for (name, value), where in sorted(places.items())
        if len(where) > 1
    ]


def test_each_constant_is_written_in_one_place() -> None:
    sources = {
        str(path.relative_to(ROOT.parent)): path.read_text(encoding="utf-8")
        for path in sorted(ROOT.rglob("*.py"))
    }
    repeated = repeated_constants(sources)
    assert not repeated, "import these from one module instead:\n" + "\n".join(repeated)


def test_the_check_names_repeats_across_and_within_modules_only() -> None:
    sources = {
        "a.py": "MIB = 1024 * 1024\nSOCKET = '/s'\nSOCKET = '/s'\n_CHUNK = 1\nLIMIT = 1\n",
        "b.py": "MIB = 1024 * 1024\n_CHUNK = 1\nLIMIT = 2\nTYPE_CHECKING = False\n",
        "c.py": "TYPE_CHECKING = False\nx: int = 3\nT = TypeVar('T')\n",
        "d.py": "T = TypeVar('T')\n",
    }
    assert repeated_constants(sources) == [
        "MIB = 1024 * 1024: a.py:1, b.py:1",
        "SOCKET = '/s': a.py:2, a.py:3",
    ]
