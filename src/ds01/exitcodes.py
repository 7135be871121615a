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
