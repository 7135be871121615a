"""Process exit codes shared by every ds01 command."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    QUOTA = 3  # quota reached or no capacity
    NOT_FOUND = 4
    PERMISSION = 5


#: The exit status of a process the kernel's OOM killer ended (128 + SIGKILL), as a shell and
#: Docker tell it.
OOM_KILLED_STATUS = 137
