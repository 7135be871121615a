"""``images.yaml``: the image registry users pick from, and which other local images they may use.

Each entry gives a short ``name`` users type (``pytorch``) for a Docker image reference
(``aimehub/pytorch-2.8.0-cuda12.6.3``). The optional ``allow`` list holds fnmatch patterns
of further image references users may name directly (e.g. ``"ds01-*"`` for images built
on the host).

``import_aime`` names AIME ``ml_images.repo`` catalogues (a path or a list; relative paths
are relative to the directory of ``images.yaml``) whose rows become registry entries too
(``ds01.config.aime``). The loader reads them (``with_imported``); an entry written in
``images.yaml`` wins over an imported one of the same name or image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ds01.model.names import is_image_reference, with_default_tag

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
    architectures: tuple[str, ...] = Field(
        default=(),
        strict=False,
        description="GPU architectures the image is built for (AIME: CUDA_ADA, CUDA_AMPERE, …).",
    )
    jupyter_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="The port its command serves JupyterLab on: ds01 publishes it on "
        "127.0.0.1 and gives each container a token (images labelled ds01.jupyter.port need "
        "no entry).",
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


#: The lists of strings in which no entry may be blank, with what the error calls an entry.
_BLANK_WORDS: Mapping[str, str] = {"import_aime": "paths", "allow": "patterns"}


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
    import_aime: tuple[str, ...] = Field(
        default=(),
        strict=False,
        description="AIME ml_images.repo files whose rows become registry entries (a path or "
        "a list; relative to the directory of images.yaml).",
    )
    starter: str | None = Field(
        default=None,
        description="The entry `user-setup` starts as a user's first container: an image "
        "that serves JupyterLab (jupyter_port or the ds01.jupyter.port label).",
    )
    docker_save: bool = Field(
        default=False,
        description="Whether `docker save` through ds01's Docker socket may write out the "
        "images a user may see (off: refused).",
    )
    docker_load: bool = Field(
        default=False,
        description="Whether `docker load` through ds01's Docker socket may bring in images "
        "tagged in the user's own namespace (off: refused).",
    )
    # Entries read from the import_aime files, with where each came from ("file:line").
    _imported: tuple[tuple[ImageEntry, str], ...] = PrivateAttr(default=())

    @field_validator("images", "allow", "import_aime", mode="before")
    @classmethod
    def _null_list(cls, value: Any) -> Any:
        # "allow:" with nothing under it parses to null: an empty list.
        return [] if value is None else value

    @field_validator("import_aime", mode="before")
    @classmethod
    def _one_path(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator(*_BLANK_WORDS)
    @classmethod
    def _no_blank_entry(cls, values: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if any(not value.strip() for value in values):
            field = str(info.field_name)
            raise ValueError(f"{field} {_BLANK_WORDS[field]} must not be empty")
        return values

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

    @model_validator(mode="after")
    def _starter_is_an_entry(self) -> ImagesConfig:
        if self.starter is not None and all(e.name != self.starter for e in self.images):
            raise ValueError(f"starter {self.starter!r} is not the name of an entry of images:")
        return self

    def with_imported(self, imported: Sequence[tuple[ImageEntry, str]]) -> ImagesConfig:
        """This registry with ``imported`` entries (each with its source, ``file:line``) added
        after its own. An imported entry whose image an earlier entry has already is left
        out; one whose name is taken gets ``-2``, ``-3``… appended."""
        names = {entry.name for entry in self.images}
        images = {with_default_tag(entry.image) for entry in self.images}
        kept = []
        for entry, source in imported:
            if with_default_tag(entry.image) in images:
                continue
            name, number = entry.name, 1
            while name in names:
                number += 1
                suffix = f"-{number}"
                name = entry.name[: 64 - len(suffix)] + suffix
            names.add(name)
            images.add(with_default_tag(entry.image))
            kept.append(
                (entry if name == entry.name else entry.model_copy(update={"name": name}), source)
            )
        copy = self.model_copy()
        copy._imported = tuple(kept)
        return copy

    @property
    def entries(self) -> tuple[ImageEntry, ...]:
        """Every registry entry: those of ``images.yaml``, then the imported ones."""
        return self.images + tuple(entry for entry, _ in self._imported)

    def source_of(self, entry: ImageEntry) -> str:
        """Where ``entry`` comes from: ``images.yaml`` or ``aime:<file>:<line>``."""
        for imported, source in self._imported:
            if imported is entry:
                return f"aime:{source}"
        return "images.yaml"

    def find(self, name: str) -> ImageEntry | None:
        """The registry entry called ``name``, or ``None``."""
        return next((entry for entry in self.entries if entry.name == name), None)

    def image_of(self, name: str) -> str | None:
        """The image reference of the entry called ``name`` (a short name), or ``None``."""
        entry = self.find(name)
        return entry.image if entry is not None else None

    def allows_reference(self, reference: str) -> bool:
        """Whether users may run the image ``reference`` directly.

        True for the image of any registry entry and for references matching an ``allow``
        pattern (fnmatch, case-sensitive). A reference without tag also matches in its
        ``:latest`` form, so ``myimage`` matches both ``myimage`` and ``myimage:*``.
        Invalid references are never allowed.
        """
        if not is_image_reference(reference):
            return False
        if self.registry_image(reference):
            return True
        forms = {reference, with_default_tag(reference)}
        return any(fnmatchcase(form, pattern) for form in forms for pattern in self.allow)

    def registry_image(self, reference: str) -> bool:
        """Whether ``reference`` is the image of a registry entry (``:latest`` implied)."""
        forms = {reference, with_default_tag(reference)}
        return any(with_default_tag(entry.image) in forms for entry in self.entries)
