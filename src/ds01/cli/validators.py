"""Checks of the answers typed at ``--guided`` prompts.

Each validator takes the text as typed and returns it as it goes on the command line, or
raises ``ValueError`` whose message says what is wrong. They apply the rules ds01d applies
to the same values (container names, sizes, CPU counts), so that a guided command is not
refused for a value the prompt accepted. Imported only by ``--guided``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from ds01.errors import InvalidInput

__all__ = [
    "container_name",
    "cpus",
    "directory",
    "existing_file",
    "gpu_count",
    "image_name",
    "image_tag",
    "log_tail",
    "port",
    "project_name",
    "public_key",
    "size",
]

#: A project name is also a Python distribution name, a directory name and the base of an
#: image name: start with a letter, then letters, digits, '-' or '_'.
PROJECT_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}", re.ASCII)  # use with fullmatch


@contextmanager
def _as_value_error() -> Iterator[None]:
    """ds01's own refusal of a value (``InvalidInput``) as the ``ValueError`` a prompt shows."""
    try:
        yield
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


def container_name(text: str) -> str:
    from ds01.model.names import validate_container_name

    with _as_value_error():
        return validate_container_name(text)


def log_tail(text: str) -> str:
    """A ``container-logs --tail`` value: lines from 0 to 100000, or ``all``."""
    from ds01.core.container_stats import parse_tail

    parse_tail(text)
    return text.strip().lower()


def image_name(text: str) -> str:
    """An image name as ds01d tags it (``My Project`` → ``my-project``)."""
    from ds01.core.image_build import image_name as cleaned

    with _as_value_error():
        return cleaned(text)


def image_tag(text: str) -> str:
    from ds01.core.image_build import validate_tag

    with _as_value_error():
        return validate_tag(text)


def project_name(text: str) -> str:
    from ds01.model.names import require_match

    return require_match(
        PROJECT_NAME_RE,
        text,
        f"Invalid project name {text!r}: use 1-63 letters, digits, '_' or '-', starting "
        "with a letter (e.g. 'thesis', 'cv-segmentation').",
        ValueError,
    )


def size(text: str) -> str:
    from ds01.model.units import parse_bytes

    parse_bytes(text)  # its ValueError says what is wrong
    return text


def cpus(text: str) -> str:
    from ds01.model.units import parse_cpus

    parse_cpus(text)  # its ValueError says what is wrong
    return text


def gpu_count(text: str) -> str:
    if not text.isdigit() or int(text) > 64:
        raise ValueError(f"expected a whole number from 0 to 64, got {text!r}")
    return str(int(text))


def port(text: str) -> str:
    """``PORT`` or ``HOSTPORT:PORT``, both from 1 to 65535; a host port below 1024 is
    refused by ds01d, so it is refused here too."""
    host, _, inside = text.rpartition(":")
    for part in (inside, host) if host else (inside,):
        if not part.isdigit() or not 1 <= int(part) <= 65535:
            raise ValueError(f"expected PORT or HOSTPORT:PORT (1-65535), got {text!r}")
    if host and int(host) < 1024:
        raise ValueError(f"host port {host} is below 1024: pick 1024 or above, or leave it out")
    return text


def existing_file(text: str) -> str:
    path = os.path.expanduser(text)
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {text}")
    return path


def public_key(text: str) -> str:
    """A public key to authorise, as ``user-setup --add-ssh-key`` takes it: its line
    (``ssh-ed25519 AAAA… you@laptop``), or a file holding one (``~`` expanded, returned as
    the path it names). A private key, or a file that is not a public key, is refused."""
    from ds01.core.starter import PUBLIC_KEY_TYPES, public_key_problem

    line, path = text, ""
    if not text.startswith(tuple(PUBLIC_KEY_TYPES)) and len(text.split()) == 1:
        path = existing_file(text)  # one word: a file's name
        try:
            with open(path, encoding="utf-8", errors="replace") as key_file:
                line = key_file.read(64 * 1024).strip()
        except OSError as exc:
            raise ValueError(f"cannot read {text}: {exc.strerror}") from None
    problem = public_key_problem(line)
    if problem:
        raise ValueError(f"{text}: {problem}" if path else problem)
    return path or text


def directory(text: str) -> str:
    path = os.path.expanduser(text)
    if not os.path.isdir(path):
        raise ValueError(f"no such directory: {text}")
    return path
