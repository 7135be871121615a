"""Who is calling an API request: an authenticated Unix user, as ds01d sees them.

Identity never comes from the request: the server takes the uid from the socket's peer
credentials and the account from NSS (both in ``ds01.runtime.identity``). The one exception
is a hub identity (``hub:`` in resource-limits.yaml, checked on those same credentials): its
request may name the user it acts for (``ON_BEHALF_HEADER``), and then the caller is that
user, never an admin, with ``via`` naming the hub (``ds01.model.hub.ON_BEHALF_HEADER``).
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
    via: str | None = None  # the hub identity acting for ``user``, if any

    @property
    def name(self) -> str:
        return self.user.name

    @property
    def uid(self) -> int:
        return self.user.uid
