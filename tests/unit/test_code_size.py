"""Size rules of ``src/ds01``: no class over 500 lines anywhere, no function (a method, a
nested function) over 80 lines in ``ds01/daemon`` or ``ds01/core``.

A size is ``end_lineno - lineno + 1`` of the ``ast`` node: its docstring and comments
count, its decorators do not. A piece over its limit is split by responsibility (see
docs/architecture.md), not wrapped to fit.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "src" / "ds01"

MAX_CLASS_LINES = 500
MAX_FUNCTION_LINES = 80
#: The packages (below ``ds01``) where the function limit holds.
FUNCTION_LIMIT_PACKAGES = frozenset({"daemon", "core"})


def _lines(node: ast.AST) -> int:
    end = getattr(node, "end_lineno", None)
    start = getattr(node, "lineno", 0)
    return 0 if end is None else end - start + 1


def oversized(source: str, relative: Path) -> list[str]:
    """The offenders in one module's ``source`` (``relative``: its path below ``ds01``),
    each as ``path:line kind name (n lines)``."""
    limit_functions = relative.parts[0] in FUNCTION_LIMIT_PACKAGES
    found = []
    for node in ast.walk(ast.parse(source)):
        size = _lines(node)
        if isinstance(node, ast.ClassDef) and size > MAX_CLASS_LINES:
            kind = f"class over {MAX_CLASS_LINES}"
        elif (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and limit_functions
            and size > MAX_FUNCTION_LINES
        ):
            kind = f"function over {MAX_FUNCTION_LINES}"
        else:
            continue
        found.append(f"ds01/{relative}:{node.lineno} {kind}: {node.name} ({size} lines)")
    return found


def test_no_class_or_daemon_or_core_function_over_its_limit() -> None:
    offenders = [
        offender
        for path in sorted(ROOT.rglob("*.py"))
        for offender in oversized(path.read_text(encoding="utf-8"), path.relative_to(ROOT))
    ]
    assert not offenders, "split these by responsibility:\n" + "\n".join(offenders)


def _function(name: str, body_lines: int, indent: str = "") -> str:
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(body_lines))
    return f"{indent}def {name}() -> None:\n{body}"


def test_the_check_names_each_offender_and_only_those() -> None:
    long_method = _function("long_method", MAX_FUNCTION_LINES, indent="    ")  # 81 lines
    short_method = _function("short_method", MAX_FUNCTION_LINES - 1, indent="    ")  # 80
    filler_lines = MAX_CLASS_LINES + 1 - 1 - 81 - 80  # Bigger: one line over the limit
    filler = "".join(f"    y{i} = {i}\n" for i in range(filler_lines))
    within = f"class Big:\n{long_method}{filler}"  # 421 lines
    over = f"class Bigger:\n{long_method}{short_method}{filler}"  # 501 lines
    source = within + over + _function("free", MAX_FUNCTION_LINES)

    in_daemon = oversized(source, Path("daemon/example.py"))
    assert sorted(o.split(" ", 1)[1] for o in in_daemon) == [
        "class over 500: Bigger (501 lines)",
        "function over 80: free (81 lines)",
        "function over 80: long_method (81 lines)",
        "function over 80: long_method (81 lines)",
    ]
    assert all(o.startswith("ds01/daemon/example.py:") for o in in_daemon)

    in_cli = oversized(source, Path("cli/example.py"))
    assert [o.split(" ", 1)[1] for o in in_cli] == ["class over 500: Bigger (501 lines)"]
