"""A user's named volume, given to them: its root directory owned by the user.

dockerd makes a local volume's directory (``<data-root>/volumes/<name>/_data``) as root,
mode 0755, and a ds01 container runs as its owner: without this, nothing in the container
could write to the volume. The path is dockerd's, below its root-only data root, so no
user can have put a link on it; the change is made without following one all the same.
"""

from __future__ import annotations

import os
import stat

from ds01.errors import SystemFault


def give_volume_root(mountpoint: str, uid: int, gid: int) -> None:
    """Make the volume directory ``mountpoint`` belong to ``uid``:``gid``.

    Raises:
        SystemFault: it is not a directory, or cannot be changed.
    """
    try:
        info = os.lstat(mountpoint)
        if not stat.S_ISDIR(info.st_mode):
            raise SystemFault(f"Docker's volume directory {mountpoint} is not a directory.")
        os.chown(mountpoint, uid, gid, follow_symlinks=False)
    except OSError as exc:
        raise SystemFault(
            f"Cannot give the volume directory {mountpoint} to its owner: {exc.strerror}."
        ) from exc


__all__ = ["give_volume_root"]
