"""The ``borrowing:`` section of ``resource-limits.yaml``: going above ``gpu_limit`` on idle
devices, and taking that back when someone within quota needs them.

Off unless ``enabled: true``. When on, a user who asks to borrow (``--borrow``, or
``borrow: auto`` in their limits) and is over their ``gpu_limit`` gets free devices anyway,
as long as nobody within quota waits for devices and the user's borrowed GPU-equivalents
stay within ``max_borrowed_gpus``. Such a container is *borrowed* as a whole, decided each
time it is placed (``ds01.core.borrowing``). When a request within someone's quota cannot
be placed, ds01d reclaims borrowed containers: newest first, never one placed less than
``min_runtime_minutes`` ago, only as many as the request needs; their owners are warned and
the containers are stopped ``reclaim_grace_minutes`` later (their files kept)::

    borrowing:
      enabled: true
      max_borrowed_gpus: 2
      min_runtime_minutes: 30
      reclaim_grace_minutes: 5

One policy for the whole server; a configuration without ``borrowing:`` has it off.
Minutes may be fractions (0.05 = 3 seconds).
"""

from __future__ import annotations

from fractions import Fraction

from pydantic import BaseModel, ConfigDict, Field

from ds01.config.sections import NonNegative


class BorrowingConfig(BaseModel):
    """Whether and how far users may borrow idle devices above their ``gpu_limit``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    enabled: bool = Field(
        default=False,
        description="Whether anyone may borrow devices above their gpu_limit.",
    )
    max_borrowed_gpus: NonNegative = Field(
        default=1.0,
        strict=False,
        description="GPU-equivalents one user may hold in borrowed containers at once, on top "
        "of their gpu_limit.",
    )
    min_runtime_minutes: NonNegative = Field(
        default=30.0,
        strict=False,
        description="Minutes from the placement of a borrowed container's devices before it may "
        "be reclaimed (fresh work is protected; a restart does not start them again).",
    )
    reclaim_grace_minutes: NonNegative = Field(
        default=5.0,
        strict=False,
        description="Minutes between the warning to a borrowed container's owner and its "
        "stop.",
    )

    @property
    def max_borrowed_equivalents(self) -> Fraction:
        """``max_borrowed_gpus`` exactly as written (0.5 → 1/2)."""
        return Fraction(str(self.max_borrowed_gpus))


#: What a configuration without ``borrowing:`` gets: borrowing off.
BORROWING_OFF = BorrowingConfig()

__all__ = ["BORROWING_OFF", "BorrowingConfig"]
