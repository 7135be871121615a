"""Who is calling an API request: an authenticated Unix user, as ds01d sees them.

Identity never comes from the request: the server takes the uid from the socket's peer
credentials and the account from NSS (both in ``ds01.runtime.identity``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ds01.runtime.identity import UnixUser


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of one API request."""

    user: UnixUser
    pid: int
    is_admin: bool

    @property
    def name(self) -> str:
        return self.user.name

    @property
    def uid(self) -> int:
        return self.user.uid
