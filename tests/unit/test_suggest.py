"""'Did you mean': the closest allowed name to a mistyped one (model.suggest) and the CLI's
usage errors that use it (cli.parsing)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.cli.main import main
from ds01.model.suggest import closest, did_you_mean


def test_the_closest_name_is_suggested_and_a_stranger_gets_nothing():
    names = ["busybox", "jupyter", "pytorch"]
    assert did_you_mean("jupiter", names) == " Did you mean 'jupyter'?"
    assert did_you_mean("PyTorch", names) == " Did you mean 'pytorch'?"
    assert did_you_mean("tensorflow", names) == ""
    assert did_you_mean("", names) == ""
    assert closest("x" * 10_000, ["x" * 10_000]) is None  # long input is not compared


@given(st.text(max_size=30), st.lists(st.text(min_size=1, max_size=30), max_size=20))
def test_a_suggestion_is_always_one_of_the_candidates(word, candidates):
    match = closest(word, candidates)
    assert match is None or match in candidates


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["container", "create", "x", "--img", "busybox"], "Did you mean '--image'?"),
        (["contianer", "list"], "Did you mean 'container'?"),
        (["container", "lst"], "Did you mean 'list'?"),
        (["container", "list", "--jsno"], "Did you mean '--json'?"),
    ],
)
def test_a_mistyped_command_or_option_is_a_usage_error_that_names_the_right_one(
    argv, expected, capsys
):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "usage:" in err


def test_under_json_a_usage_error_is_one_json_object_on_stderr(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["container", "list", "--json", "--colour"])
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and out == ""
    error = json.loads(err)
    assert error["exit_code"] == 2 and error["kind"] == "usage"
    assert "unrecognized arguments: --colour" in error["error"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("defaults:\n  gpu_limits: 2\n", "unknown key 'gpu_limits'. Did you mean 'gpu_limit'?"),
        ("defaults:\n\tgpu_limit: 2\n", "indent with spaces, not tabs"),
        (
            "defaults:\n  allow_mig: maybe\n",
            "defaults.allow_mig: expected true or false, got 'maybe'",
        ),
    ],
)
def test_config_check_says_what_was_meant_in_its_own_words(text, expected, tmp_path, capsys):
    path = tmp_path / "resource-limits.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit) as exited:
        main(["config", "check", str(path)])
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert expected in err
    assert "Input should" not in err and "Extra inputs" not in err
