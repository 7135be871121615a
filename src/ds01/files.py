"""Small JSON state files: replaced atomically (readers see the old content or the new,
never half of it) and read back through a pydantic ``TypeAdapter``."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from pydantic import TypeAdapter

T = TypeVar("T")


def replace_file(
    path: Path,
    content: str | bytes,
    *,
    mode: int = 0o644,
    owner: tuple[int, int] | None = None,
) -> None:
    """Write ``content`` to a temporary file next to ``path``, flush it to disk, give it
    ``mode`` (and ``owner``, a (uid, gid) pair, when given), then rename it over ``path``.

    The directory must exist. On any failure ``path`` is left as it was and the temporary
    file is removed.
    """
    data = content.encode("utf-8") if isinstance(content, str) else content
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
            os.fchmod(stream.fileno(), mode)
            if owner is not None:
                os.fchown(stream.fileno(), *owner)
        Path(temporary).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(temporary).unlink()
        raise


def read_json_file(path: Path, adapter: TypeAdapter[T], missing: T) -> T:
    """The content of ``path`` validated by ``adapter``; ``missing`` if there is no file.

    Raises:
        OSError: the file exists but cannot be read.
        pydantic.ValidationError: it is not JSON of the adapter's shape (a ValueError).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return missing
    return adapter.validate_json(raw)


__all__ = ["read_json_file", "replace_file"]
