"""Which registry images an admin must still fetch, and what to tell them. Pure.

ds01 never pulls on its own: a registry entry (``images.yaml``) whose image is not on the
machine cannot be used until an admin pulls or builds it, and a missing starter makes a new
user's ``user-setup`` fetch it first (or fail, offline). ``ds01 admin doctor`` and ``ds01
config check`` report each one as a warning, worded here once.

Entries imported from an AIME catalogue (``import_aime``) are a menu of what can be pulled,
not a promise that it is here: they are left out (the caller passes ``images.yaml``'s own
entries only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class MissingImage:
    """A registry entry ``name`` whose ``image`` is not on this machine; ``starter`` when it
    is the entry ``user-setup`` starts."""

    name: str
    image: str
    starter: bool = False

    @property
    def message(self) -> str:
        if self.starter:
            return (
                f"The starter image {self.name} ({self.image}) is not on this machine: a new "
                "user's `user-setup` must fetch it first, and fails where it cannot."
            )
        return (
            f"The registry image {self.name} ({self.image}) is not on this machine: users "
            "cannot start it until it is."
        )

    @property
    def hint(self) -> str:
        return (
            f"`docker pull {self.image}` (or `ds01 image-pull {self.name}`); or remove the "
            "entry from images.yaml."
        )


def missing_images(
    entries: Iterable[tuple[str, str]], starter: str | None, is_present: Callable[[str], bool]
) -> list[MissingImage]:
    """The entries (``(name, image)``, in order) whose image ``is_present`` says is not
    here, the starter first."""
    missing = [
        MissingImage(name, image, starter=name == starter)
        for name, image in entries
        if not is_present(image)
    ]
    return sorted(missing, key=lambda m: not m.starter)


__all__ = ["MissingImage", "missing_images"]
