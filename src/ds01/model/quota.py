"""A user's resolved GPU limits, as plain data (config resolves them, core enforces them)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from ds01.errors import InvalidInput


def _to_fraction(field_name: str, value: float | Fraction | None) -> Fraction | None:
    """Convert a config number exactly as written (0.1 → 1/10, not the binary float)."""
    if value is None or isinstance(value, Fraction):
        return value
    try:
        return Fraction(str(value))
    except ValueError:
        raise InvalidInput(
            f"{field_name} must be a number or null, got {value!r}.",
            details={field_name: repr(value)},
        ) from None


@dataclass(frozen=True)
class GpuQuota:
    """A user's resolved GPU limits. ``None`` means unlimited; the defaults limit nothing.

    Attributes:
        gpu_limit: the most GPU-equivalents the user may hold over all containers.
        max_gpus_per_container: the most GPU-equivalents one container may hold.
        allow_full_gpu: whether the user may have whole GPUs.
        allow_mig: whether the user may have MIG instances.
        max_containers: the most containers the user may have (with or without GPUs).

    Raises:
        InvalidInput: a limit is negative.
    """

    gpu_limit: Fraction | None = None
    max_gpus_per_container: Fraction | None = None
    allow_full_gpu: bool = True
    allow_mig: bool = True
    max_containers: int | None = None

    def __post_init__(self) -> None:
        for field_name in ("gpu_limit", "max_gpus_per_container", "max_containers"):
            value = getattr(self, field_name)
            if value is not None and value < 0:
                raise InvalidInput(
                    f"{field_name} cannot be negative (got {value}).",
                    details={field_name: str(value)},
                )

    @classmethod
    def from_values(
        cls,
        gpu_limit: float | Fraction | None = None,
        max_gpus_per_container: float | Fraction | None = None,
        allow_full_gpu: bool = True,
        allow_mig: bool = True,
        max_containers: int | None = None,
    ) -> GpuQuota:
        """Build from config numbers; floats become the Fraction of their decimal text."""
        return cls(
            gpu_limit=_to_fraction("gpu_limit", gpu_limit),
            max_gpus_per_container=_to_fraction("max_gpus_per_container", max_gpus_per_container),
            allow_full_gpu=allow_full_gpu,
            allow_mig=allow_mig,
            max_containers=max_containers,
        )
