"""``images.yaml``: the image registry users pick from, and which other local images they may use.

Each entry gives a short ``name`` users type (``pytorch``) for a Docker image reference
(``aimehub/pytorch-2.8.0-cuda12.6.3``). The optional ``allow`` list holds fnmatch patterns
of further image references users may name directly (e.g. ``"ds01-*"`` for images built
on the host).
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ds01.core.names import is_image_reference, with_default_tag

IMAGE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}", re.ASCII)


class ImageEntry(BaseModel):
    """One image in the registry."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(
        description="Short name users type: lower case letters, digits, '.', '_', '-'."
    )
    image: str = Field(
        description="Docker image reference, e.g. 'aimehub/pytorch-2.8.0-cuda12.6.3'."
    )
    framework: str = Field(description="ML framework, e.g. 'PyTorch', or 'none'.")
    description: str = Field(description="One line shown by image-list.")
    version: str | None = Field(default=None, description="Framework version, free text.")
    phase: str | None = Field(
        default=None, description="Where the image stands, free text, e.g. 'stable' or 'beta'."
    )

    @field_validator("name")
    @classmethod
    def _image_name(cls, name: str) -> str:
        if not IMAGE_NAME_RE.fullmatch(name):
            raise ValueError(
                f"invalid image name {name!r}: use 1 to 64 lower case letters, digits, "
                "'.', '_' or '-', starting with a letter or digit"
            )
        return name

    @field_validator("image")
    @classmethod
    def _image_reference(cls, reference: str) -> str:
        if not is_image_reference(reference):
            raise ValueError(
                f"invalid image reference {reference!r}: expected "
                "[registry/]repository[:tag][@digest], repository in lower case"
            )
        return reference


class ImagesConfig(BaseModel):
    """The whole ``images.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # strict=False lets the YAML lists become tuples; every item is still fully validated.
    images: tuple[ImageEntry, ...] = Field(default=(), strict=False)
    allow: tuple[str, ...] = Field(
        default=(),
        strict=False,
        description="fnmatch patterns of further image references users may name directly.",
    )

    @field_validator("images", "allow", mode="before")
    @classmethod
    def _null_list(cls, value: Any) -> Any:
        # "allow:" with nothing under it parses to null: an empty list.
        return [] if value is None else value

    @field_validator("images")
    @classmethod
    def _unique_names(cls, images: tuple[ImageEntry, ...]) -> tuple[ImageEntry, ...]:
        first_index: dict[str, int] = {}
        for index, entry in enumerate(images):
            if entry.name in first_index:
                raise ValueError(
                    f"duplicate image name {entry.name!r} "
                    f"(entries {first_index[entry.name]} and {index})"
                )
            first_index[entry.name] = index
        return images

    @field_validator("allow")
    @classmethod
    def _non_empty_patterns(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        if any(not pattern.strip() for pattern in patterns):
            raise ValueError("allow patterns must not be empty")
        return patterns

    def find(self, name: str) -> ImageEntry | None:
        """The registry entry called ``name``, or ``None``."""
        return next((entry for entry in self.images if entry.name == name), None)

    def allows_reference(self, reference: str) -> bool:
        """Whether users may run the image ``reference`` directly.

        True for the image of any registry entry and for references matching an ``allow``
        pattern (fnmatch, case-sensitive). A reference without tag also matches in its
        ``:latest`` form, so ``myimage`` matches both ``myimage`` and ``myimage:*``.
        Invalid references are never allowed.
        """
        if not is_image_reference(reference):
            return False
        forms = {reference, with_default_tag(reference)}
        if any(with_default_tag(entry.image) in forms for entry in self.images):
            return True
        return any(fnmatchcase(form, pattern) for form in forms for pattern in self.allow)
