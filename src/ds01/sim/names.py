"""The names of the simulator's reclaim policies, without imports: the ``ds01`` parser is
built at every start and offers them as choices (``ds01.sim.cli``)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal, TypeAlias

    #: How idle tails are reclaimed (``ds01.sim.reclaim``).
    ReclaimName: TypeAlias = Literal["ds01", "none", "reference"]

#: Every reclaim policy, in the order they are reported.
RECLAIMS: tuple[ReclaimName, ...] = ("ds01", "none", "reference")
