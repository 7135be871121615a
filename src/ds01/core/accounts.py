"""The owner's account inside a container: their lines in ``/etc/passwd`` and ``/etc/group``.

A container runs as its owner's uid and gid. Without a ``passwd`` entry for that uid the
shell prompt says ``I have no name!``, ``whoami`` fails, and git, pip and ssh, which look
up the user's name and home, break. ds01 writes the image's own files back with the
owner's entries added (root-owned, mode 0644: the owner cannot change them), before the
container first starts.

Pure text functions: the caller reads the files from the container and writes them back.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The login shell written for the owner when the image's root uses bash.
BASH = "/bin/bash"
#: The login shell otherwise (every image with a shell has it).
SH = "/bin/sh"


@dataclass(frozen=True)
class Account:
    """The owner as the container's ``passwd`` and ``group`` files name them.

    ``home`` is the directory inside the container (the workspace), not the host's.
    """

    name: str
    uid: int
    gid: int
    group: str
    home: str

    def __post_init__(self) -> None:
        for field_name in ("name", "group", "home"):
            value = getattr(self, field_name)
            if not value or any(c in value for c in ":\n\r\0"):
                raise ValueError(f"{field_name} {value!r} cannot be written in /etc/passwd")
        if self.uid <= 0 or self.gid <= 0:
            raise ValueError(f"not an ordinary user: uid {self.uid}, gid {self.gid}")


def _fields(line: str) -> list[str]:
    return line.split(":")


def _lines(text: str) -> list[str]:
    """The file's non-empty lines, split on newlines only (as libc reads it)."""
    return [line for line in text.split("\n") if line]


def login_shell(passwd: str) -> str:
    """Bash when the image's root logs in with it (so bash is there), else ``/bin/sh``."""
    for line in _lines(passwd):
        fields = _fields(line)
        if len(fields) >= 7 and fields[2] == "0":
            return BASH if fields[6].strip() == BASH else SH
    return SH


def passwd_with(passwd: str, account: Account) -> str:
    """``passwd`` with every line for the owner's name or uid replaced by one for them.

    An image's own user with the same uid (``ubuntu``, 1000) would otherwise be who the
    owner is inside; one with the same name but another uid would shadow them.
    """
    kept = [
        line
        for line in _lines(passwd)
        if not _names_account(_fields(line), account.name, str(account.uid))
    ]
    shell = login_shell(passwd)
    entry = f"{account.name}:x:{account.uid}:{account.gid}:{account.name}:{account.home}:{shell}"
    return "\n".join([*kept, entry]) + "\n"


def group_with(group: str, account: Account) -> str:
    """``group`` with every line for the owner's group name or gid replaced by one for it."""
    kept = [
        line
        for line in _lines(group)
        if not _names_account(_fields(line), account.group, str(account.gid))
    ]
    return "\n".join([*kept, f"{account.group}:x:{account.gid}:"]) + "\n"


def _names_account(fields: list[str], name: str, number: str) -> bool:
    return fields[0] == name or (len(fields) >= 3 and fields[2] == number)


__all__ = ["BASH", "SH", "Account", "group_with", "login_shell", "passwd_with"]
