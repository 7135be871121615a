"""One change to a GPU's MIG layout, as plain data.

``ds01.core.mig`` plans these steps; the GPU backends (``ds01.gpu``) carry them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

StepAction = Literal["destroy", "disable_mig", "enable_mig", "create"]


@dataclass(frozen=True)
class MigStep:
    """One change to a GPU. ``uuid``: the instance a ``destroy`` removes; ``start``: the
    memory slice a ``create`` places its instance at (``None``: wherever the driver puts it,
    where the GPU's placement table is not known)."""

    action: StepAction
    profile: str | None = None
    uuid: str | None = None
    start: int | None = None

    def describe(self) -> str:
        if self.action == "destroy":
            return f"destroy {self.profile} ({self.uuid})"
        if self.action == "create":
            at = "" if self.start is None else f" at memory slice {self.start}"
            return f"create {self.profile}{at}"
        return "turn MIG mode on" if self.action == "enable_mig" else "turn MIG mode off"
