"""``ds01 job run``'s pure parts: its default name, its command after ``--``, the create
request's ``command``, and a stopped container's exit status as Docker's list reports it
(what the job's step ends with)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ds01.cli.batch import default_name, the_command
from ds01.cli.parsing import UsageError
from ds01.daemon.schemas import CreateContainerRequest
from ds01.model.names import validate_container_name
from ds01.runtime.docker import exit_code_of


def test_the_default_name_is_a_valid_container_name_with_the_utc_time() -> None:
    name = default_name(0.0, "ab12")
    assert name == "job-19700101-000000-ab12"
    validate_container_name(name)


@pytest.mark.parametrize(
    ("words", "command"),
    [
        (["--", "python", "-c", "1"], ["python", "-c", "1"]),
        (["make", "--", "x"], ["make", "--", "x"]),  # no leading "--": all of it
    ],
)
def test_the_command_is_what_follows_the_double_dash(
    words: list[str], command: list[str]
) -> None:
    assert the_command(words) == command


@pytest.mark.parametrize("words", [[], ["--"]])
def test_a_job_without_a_command_is_a_usage_error(words: list[str]) -> None:
    with pytest.raises(UsageError, match="What should the job run"):
        the_command(words)


def test_a_create_request_takes_a_command_but_not_an_empty_or_nul_one() -> None:
    request = CreateContainerRequest(name="j", image="busybox", command=["sh", "-c", "exit 3"])
    assert request.command == ["sh", "-c", "exit 3"]
    assert CreateContainerRequest(name="j", image="busybox").command is None
    for bad in ([], ["a\0b"]):
        with pytest.raises(ValidationError):
            CreateContainerRequest(name="j", image="busybox", command=bad)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("Exited (0) 2 seconds ago", 0),
        ("Exited (137) About a minute ago", 137),
        ("Up 3 seconds", None),
        ("Created", None),
        ("", None),
    ],
)
def test_the_exit_status_is_read_from_dockers_status_text(status: str, code: int | None) -> None:
    assert exit_code_of(status) == code


def test_the_command_line_keeps_the_words_apart_from_the_command_run() -> None:
    from ds01.cli.main import build_parser

    args = build_parser().parse_args(["job", "run", "--image", "busybox", "--", "echo", "hi"])
    assert the_command(args.words) == ["echo", "hi"]
    assert args.command.path == ("job", "run")
