"""AIME's image catalogue, ``ml_images.repo``, as image registry entries. Pure.

The format (AIME MLC, ``reference/peers.md`` §1.3): CSV without a header, one image a line,
four fields separated by commas, each stripped of surrounding spaces::

    Pytorch, 2.8.0, [CUDA_ADA], aimehub/pytorch-2.8.0-cuda12.6.3
    Pytorch, 2.1.0-aime, [CUDA_ADA;CUDA_AMPERE], aimehub/pytorch-2.1.0-aime-cuda11.8

framework, version (free text), the GPU architectures in brackets separated by ``;`` (older
catalogues give one bare architecture), and the Docker image. Blank lines and lines starting
with ``#`` are skipped. ``images.yaml`` imports such files with ``import_aime:``; each row
becomes an entry named after its image (``pytorch-2.8.0-cuda12.6.3``).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass

from ds01.model.names import IMAGE_REFERENCE_RE, is_image_reference

#: How ds01 spells AIME's framework names (others are kept as written).
FRAMEWORK_TITLES = {
    "pytorch": "PyTorch",
    "tensorflow": "TensorFlow",
    "mxnet": "MXNet",
    "rocm": "ROCm",
}
_ARCH_RE = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)
_NAME_CHARS_RE = re.compile(r"[^a-z0-9._-]+")
_FIELDS = 4
_MAX_NAME = 64


@dataclass(frozen=True)
class AimeImage:
    """One row of ``ml_images.repo``."""

    line: int
    framework: str
    version: str
    architectures: tuple[str, ...]
    image: str

    @property
    def framework_title(self) -> str:
        return FRAMEWORK_TITLES.get(self.framework.lower(), self.framework)

    @property
    def description(self) -> str:
        archs = ", ".join(self.architectures) or "any GPU"
        return f"{self.framework_title} {self.version} for {archs} (AIME ML container image)"


class AimeFormatError(ValueError):
    """Rows that do not follow the format: ``problems`` are (line, message) pairs."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        super().__init__("; ".join(f"line {line}: {message}" for line, message in problems))
        self.problems = problems


def _row(line: int, fields: list[str]) -> AimeImage:
    if len(fields) != _FIELDS:
        raise ValueError(
            f"expected 4 comma-separated fields (framework, version, [ARCH;...], image), "
            f"got {len(fields)}"
        )
    framework, version, archs, image = (field.strip() for field in fields)
    for label, value in (("framework", framework), ("version", version), ("image", image)):
        if not value:
            raise ValueError(f"the {label} field is empty")
    bare = archs.removeprefix("[").removesuffix("]")
    if archs.startswith("[") != archs.endswith("]"):
        raise ValueError(f"unbalanced brackets in the architectures {archs!r}")
    architectures = tuple(a.strip() for a in bare.split(";") if a.strip())
    bad = [a for a in architectures if not _ARCH_RE.fullmatch(a)]
    if bad:
        raise ValueError(f"invalid architecture {bad[0]!r} (expected e.g. [CUDA_ADA;CUDA_AMPERE])")
    if not is_image_reference(image):
        raise ValueError(
            f"invalid image reference {image!r}: expected [registry/]repository[:tag], "
            "repository in lower case"
        )
    return AimeImage(line, framework, version, architectures, image)


def parse_ml_images_repo(text: str) -> list[AimeImage]:
    """Every row of an ``ml_images.repo`` text. Raises ``AimeFormatError`` naming the line of
    every bad row (all at once)."""
    rows: list[AimeImage] = []
    problems: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        try:
            fields = next(csv.reader([raw], skipinitialspace=True))
            rows.append(_row(number, fields))
        except (ValueError, csv.Error) as exc:
            problems.append((number, str(exc)))
    if problems:
        raise AimeFormatError(problems)
    return rows


def entry_name(image: str) -> str:
    """The registry name of an imported image: its last path component, with its tag if it
    has one, as a registry name (``aimehub/pytorch-2.8.0-cuda12.6.3`` →
    ``pytorch-2.8.0-cuda12.6.3``; ``rocm/dev-ubuntu-20.04:5.4.2-complete`` →
    ``dev-ubuntu-20.04-5.4.2-complete``)."""
    match = IMAGE_REFERENCE_RE.fullmatch(image)
    if match is None:
        raise ValueError(f"invalid image reference {image!r}")
    name = match["name"].rsplit("/", 1)[-1]
    if match["tag"]:
        name = f"{name}-{match['tag']}"
    name = _NAME_CHARS_RE.sub("-", name.lower()).strip("._-")
    return name[:_MAX_NAME].rstrip("._-") or "image"


__all__ = ["AimeFormatError", "AimeImage", "entry_name", "parse_ml_images_repo"]
