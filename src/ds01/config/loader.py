"""Loading the configuration directory into typed models, with errors that point at lines.

``load_config(dir)`` reads ``resource-limits.yaml``, ``gpu-config.yaml`` and ``images.yaml``;
a missing file means its embedded default. ``load_file(path)`` validates one file, for
``ds01 config check FILE``.

YAML is read with ``yaml.safe_load`` semantics (no arbitrary tags). Any problem raises
``ds01.errors.ConfigError`` whose message has one line per problem, all problems at once,
each naming the file, the line and the key path::

    /etc/ds01/resource-limits.yaml:12: groups.phd_students.gpu_limit: Input should be ...

The line comes from the YAML node tree: pydantic's error location is walked down it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, cast, overload

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ds01.config.aime import AimeFormatError, entry_name, parse_ml_images_repo
from ds01.config.gpu_config import GpuConfig
from ds01.config.images import ImageEntry, ImagesConfig
from ds01.config.limits import ResourceLimitsConfig
from ds01.config.messages import error_message
from ds01.errors import ConfigError, InvalidInput
from ds01.paths import GPU_CONFIG_FILE, IMAGES_FILE, RESOURCE_LIMITS_FILE

ConfigKind = Literal["resource-limits", "gpu-config", "images"]
ConfigModel = ResourceLimitsConfig | GpuConfig | ImagesConfig
_Model = TypeVar("_Model", bound=BaseModel)

#: The file name each kind of configuration has in the configuration directory.
CONFIG_FILES: dict[ConfigKind, str] = {
    "resource-limits": RESOURCE_LIMITS_FILE,
    "gpu-config": GPU_CONFIG_FILE,
    "images": IMAGES_FILE,
}
_MODELS: dict[ConfigKind, type[ConfigModel]] = {
    "resource-limits": ResourceLimitsConfig,
    "gpu-config": GpuConfig,
    "images": ImagesConfig,
}
# Words in a file name that tell its kind when it is not named exactly like CONFIG_FILES.
_KIND_HINTS: tuple[tuple[str, ConfigKind], ...] = (
    ("limits", "resource-limits"),
    ("gpu", "gpu-config"),
    ("image", "images"),
)

#: What ``Ds01Config.sources`` says for a file that was absent.
EMBEDDED_DEFAULT = "embedded default"
_DEFAULT_IMAGES_RESOURCE = ("ds01.config", "defaults/images.yaml")

_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Ds01Config:
    """One consistent set of configuration, as the daemon applies it.

    ``sources`` maps each kind (``"resource-limits"``, ``"gpu-config"``, ``"images"``) to
    the path it was read from, or to ``EMBEDDED_DEFAULT``.
    """

    limits: ResourceLimitsConfig
    gpus: GpuConfig
    images: ImagesConfig
    sources: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a configuration file.

    ``line`` is 1-based (``None`` when the file is empty); ``key`` is the dotted key path
    (list positions as numbers, ``""`` for the whole file).
    """

    line: int | None
    key: str
    message: str

    def format(self, source: str) -> str:
        where = source if self.line is None else f"{source}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


def config_error(source: str, problems: list[ConfigProblem]) -> ConfigError:
    """A ``ConfigError`` listing every problem, one ``file:line: key: message`` a line."""
    return ConfigError(
        "\n".join(problem.format(source) for problem in problems),
        details={"file": source, "problems": [asdict(problem) for problem in problems]},
    )


# --- YAML -------------------------------------------------------------------------------

#: Why a file with no YAML document is refused, and what to write instead.
NO_DOCUMENT = (
    "no settings: the file is empty or holds only comments (is it being rewritten?). "
    "To use the built-in defaults, write {} in it or remove it."
)


def has_document(text: str) -> bool:
    """Whether ``text`` holds a YAML document (``False``: empty, blank or comments only).
    Invalid YAML counts as a document, so that parsing it reports the error."""
    loader = yaml.SafeLoader(text)
    try:
        return bool(loader.check_node())
    except yaml.YAMLError:
        return True
    finally:
        loader.dispose()


def _parse_yaml(text: str, source: str) -> tuple[Any, yaml.Node]:
    """Parse one YAML document safely; return the data and its node tree.

    A file with no document at all (empty, blank or comments only) is refused: that is what
    a file being rewritten in place holds for a moment, and reading it as "no settings" would
    apply the built-in defaults. ``{}`` (or ``null``) is an empty mapping. Duplicate keys are
    refused.
    """
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise config_error(source, [ConfigProblem(None, "", NO_DOCUMENT)])
        duplicates = list(_duplicate_keys(root))
        if duplicates:
            raise config_error(source, duplicates)
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        problem = f"{exc.problem} ({exc.context})" if exc.context else str(exc.problem)
        if "'\\t'" in problem:
            problem += "; indent with spaces, not tabs"
        raise config_error(source, [ConfigProblem(line, "", f"invalid YAML: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise config_error(source, [ConfigProblem(None, "", f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    return ({} if data is None else data), root


def _key_label(key_node: yaml.Node) -> str:
    return str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _duplicate_keys(root: yaml.Node | None) -> Iterator[ConfigProblem]:
    """Every mapping key that appears twice in the same mapping, with its path and line."""
    visited: set[int] = set()  # aliases share nodes; visit each once

    def walk(node: yaml.Node, path: tuple[str, ...]) -> Iterator[ConfigProblem]:
        if id(node) in visited:
            return
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first_seen: dict[tuple[str, str], int] = {}
            for key_node, value_node in node.value:
                key_path = (*path, _key_label(key_node))
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                    identity = (key_node.tag, key_node.value)
                    if identity in first_seen:
                        yield ConfigProblem(
                            _line(key_node),
                            ".".join(key_path),
                            f"duplicate key {key_node.value!r} "
                            f"(first given on line {first_seen[identity]})",
                        )
                    else:
                        first_seen[identity] = _line(key_node)
                yield from walk(value_node, key_path)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                yield from walk(item, (*path, str(index)))

    if root is not None:
        yield from walk(root, ())


def _child(node: yaml.Node, part: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    """The (node that carries the line, value node) for one step of a pydantic location."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                return key_node, value_node
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        item: yaml.Node = node.value[part]
        return item, item
    return None


def _locate(root: yaml.Node | None, error: ErrorDetails) -> tuple[int | None, str]:
    """The line and dotted key path of a pydantic error, walked down the YAML node tree.

    Location parts that are not in the tree are pydantic's own markers (``[key]``, union
    branch names) and are left out, except the last part of a ``missing`` error: that key
    is the one to add, reported on the line of the mapping it belongs in.
    """
    loc = error["loc"]
    node = root
    line = None if root is None else _line(root)
    path: list[str] = []
    for index, part in enumerate(loc):
        step = None if node is None else _child(node, part)
        if step is not None:
            line_node, node = step
            line = _line(line_node)
            path.append(str(part))
        elif error["type"] == "missing" and index == len(loc) - 1:
            path.append(str(part))
    return line, ".".join(path)


def _parse(text: str, model: type[_Model], source: str) -> _Model:
    data, root = _parse_yaml(text, source)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            ConfigProblem(*_locate(root, error), error_message(error, model))
            for error in exc.errors(include_url=False)
        ]
        problems.sort(key=lambda problem: problem.line or 0)
        raise config_error(source, problems) from None


# --- images.yaml: AIME imports --------------------------------------------------------------


def _line_of(root: yaml.Node | None, *parts: str | int) -> int | None:
    """The line of the node at ``parts`` below ``root`` (as far down as it exists)."""
    node, line = root, None if root is None else _line(root)
    for part in parts:
        step = None if node is None else _child(node, part)
        if step is None:
            break
        line_node, node = step
        line = _line(line_node)
    return line


def key_line(text: str, *parts: str) -> int | None:
    """The 1-based line of the key at ``parts`` in the YAML ``text`` (or of the deepest of its
    parents there); ``None`` when the text does not parse or holds no document."""
    loader = yaml.SafeLoader(text)
    try:
        return _line_of(loader.get_single_node(), *parts)
    except yaml.YAMLError:
        return None
    finally:
        loader.dispose()


def _parse_images(text: str, source: str, base_dir: Path) -> ImagesConfig:
    """``images.yaml`` with the rows of its ``import_aime`` files as registry entries.

    A file that cannot be read is reported on the line of ``images.yaml`` that names it; a
    row that does not follow the format, on its own line of the imported file."""
    images = _parse(text, ImagesConfig, source)
    if not images.import_aime:
        return images
    root = _parse_yaml(text, source)[1]
    imported: list[tuple[ImageEntry, str]] = []
    errors: list[ConfigError] = []
    for index, name in enumerate(images.import_aime):
        path = Path(name) if Path(name).is_absolute() else base_dir / name
        line = _line_of(root, "import_aime", index)  # the key's line for a single path
        try:
            repo = _read_text(path)
        except ConfigError as exc:
            reason = exc.details["problems"][0]["message"]
            problem = ConfigProblem(line, "import_aime", f"{path}: {reason}")
            errors.append(config_error(source, [problem]))
            continue
        if repo is None:
            problem = ConfigProblem(line, "import_aime", f"{path}: file not found")
            errors.append(config_error(source, [problem]))
            continue
        try:
            rows = parse_ml_images_repo(repo)
        except AimeFormatError as exc:
            errors.append(
                config_error(str(path), [ConfigProblem(n, "", m) for n, m in exc.problems])
            )
            continue
        imported += [
            (
                ImageEntry(
                    name=entry_name(row.image),
                    image=row.image,
                    framework=row.framework_title,
                    description=row.description,
                    version=row.version,
                    architectures=row.architectures,
                ),
                f"{path}:{row.line}",
            )
            for row in rows
        ]
    if errors:
        raise ConfigError(
            "\n".join(error.message for error in errors),
            details={"files": [error.details for error in errors]},
        )
    return images.with_imported(imported)


# --- files --------------------------------------------------------------------------------


@overload
def parse_config(
    text: str, kind: Literal["resource-limits"], source: str
) -> ResourceLimitsConfig: ...
@overload
def parse_config(text: str, kind: Literal["gpu-config"], source: str) -> GpuConfig: ...
@overload
def parse_config(text: str, kind: Literal["images"], source: str) -> ImagesConfig: ...
@overload
def parse_config(text: str, kind: ConfigKind, source: str) -> ConfigModel: ...
def parse_config(text: str, kind: ConfigKind, source: str) -> ConfigModel:
    """Parse and validate the YAML ``text`` of a ``kind`` file; ``source`` names it in errors.

    For ``images``, relative ``import_aime`` paths are taken relative to ``source``'s
    directory."""
    if kind == "images":
        return _parse_images(text, source, Path(source).parent)
    return _parse(text, _MODELS[kind], source)


def guess_kind(path: Path) -> ConfigKind:
    """The kind of configuration file ``path`` holds, from its name.

    The standard names match exactly; otherwise one of the words ``limits``, ``gpu`` or
    ``image`` must appear in the name (``new-limits.yaml``). Raises ``InvalidInput`` if the
    name does not tell.
    """
    name = path.name.lower()
    for kind, file_name in CONFIG_FILES.items():
        if name == file_name:
            return kind
    matches = [kind for word, kind in _KIND_HINTS if word in name]
    if len(matches) == 1:
        return matches[0]
    raise InvalidInput(
        f"cannot tell which configuration file {path} is from its name: name it "
        f"{', '.join(CONFIG_FILES.values())} or give its kind "
        f"({', '.join(CONFIG_FILES)})"
    )


def _read_text(path: Path) -> str | None:
    """The file's text, or ``None`` if it does not exist. Other failures are ``ConfigError``."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        problem = ConfigProblem(None, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")
        raise config_error(str(path), [problem]) from None
    except OSError as exc:
        problem = ConfigProblem(None, "", f"cannot read: {exc.strerror or exc}")
        raise config_error(str(path), [problem]) from None


@overload
def load_file(path: Path, kind: Literal["resource-limits"]) -> ResourceLimitsConfig: ...
@overload
def load_file(path: Path, kind: Literal["gpu-config"]) -> GpuConfig: ...
@overload
def load_file(path: Path, kind: Literal["images"]) -> ImagesConfig: ...
@overload
def load_file(path: Path, kind: ConfigKind | None = None) -> ConfigModel: ...
def load_file(path: Path, kind: ConfigKind | None = None) -> ConfigModel:
    """Load and validate one configuration file; ``kind`` is guessed from the name if absent.

    Raises ``ConfigError`` if the file is missing, unreadable or invalid, and
    ``InvalidInput`` if no kind is given and the name does not tell it.
    """
    resolved_kind = guess_kind(path) if kind is None else kind
    text = _read_text(path)
    if text is None:
        raise config_error(str(path), [ConfigProblem(None, "", "file not found")])
    return parse_config(text, resolved_kind, str(path))


@cache
def default_images() -> ImagesConfig:
    """The image registry packaged with ds01 (``ds01/config/defaults/images.yaml``)."""
    package, name = _DEFAULT_IMAGES_RESOURCE
    text = resources.files(package).joinpath(name).read_text(encoding="utf-8")
    return _parse(text, ImagesConfig, f"{EMBEDDED_DEFAULT} {package}:{name}")


def load_config(config_dir: Path) -> Ds01Config:
    """Load every configuration file in ``config_dir``; an absent file means its default.

    Defaults: no limits (so the builtin baseline applies), ``GpuConfig()`` (the simulated
    backend), and the packaged image registry. Raises one ``ConfigError`` listing the
    problems of every invalid file.
    """
    sources: dict[str, str] = {}
    errors: list[ConfigError] = []

    def load_or_default(
        kind: ConfigKind, model: type[_Model], default: Callable[[], _Model]
    ) -> _Model | None:
        path = config_dir / CONFIG_FILES[kind]
        try:
            text = _read_text(path)
            if text is None:
                sources[kind] = EMBEDDED_DEFAULT
                return default()
            sources[kind] = str(path)
            if model is ImagesConfig:
                return cast(_Model, _parse_images(text, str(path), config_dir))
            return _parse(text, model, str(path))
        except ConfigError as exc:
            errors.append(exc)
            return None

    limits = load_or_default("resource-limits", ResourceLimitsConfig, ResourceLimitsConfig)
    gpus = load_or_default("gpu-config", GpuConfig, GpuConfig)
    images = load_or_default("images", ImagesConfig, default_images)
    if errors or limits is None or gpus is None or images is None:
        raise ConfigError(
            "\n".join(error.message for error in errors),
            details={"files": [error.details for error in errors]},
        )
    return Ds01Config(limits=limits, gpus=gpus, images=images, sources=sources)
