"""Validators accept exactly their grammar: no trailing newline slips through ``$``.

In a Python regex ``$`` also matches before a newline at the end, so ``match`` with
``^…$`` accepted ``"thesis\\n"``, which Docker then refused. Every validator of user input
uses ``fullmatch`` (or ``\\Z``); these properties check it for names, project names, MIG
profiles, GPU UUIDs and Docker ids.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ds01.cli.validators import project_name
from ds01.config.gpu_config import GPU_UUID_RE, mig_profile_slices
from ds01.daemon.access import DOCKER_ID_RE
from ds01.errors import InvalidInput
from ds01.model.names import validate_container_name

NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}")
_name_chars = st.sampled_from("abcXYZ019_-")
_names = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from("aZ0"),
    st.text(_name_chars, max_size=62),
)
_suffixes = st.sampled_from(["\n", "\r\n", "\r", "\x00", " ", "\t", "\u2028", "\n\n", "/x"])


@example("thesis\n")
@example("exp-01\r\n")
@given(st.text(max_size=80))
def test_a_container_name_is_accepted_exactly_when_it_matches_the_grammar(text: str) -> None:
    ok = NAME.fullmatch(text) is not None and text.isascii()
    try:
        validate_container_name(text)
    except InvalidInput:
        assert not ok
    else:
        assert ok


@given(_names, _suffixes)
def test_no_name_with_a_trailing_newline_or_other_tail_passes(name: str, tail: str) -> None:
    assert validate_container_name(name) == name
    with pytest.raises(InvalidInput):
        validate_container_name(name + tail)
    with pytest.raises(ValueError):
        project_name("p" + name + tail)


def test_a_long_name_is_refused_without_echoing_all_of_it() -> None:
    with pytest.raises(InvalidInput) as refused:
        validate_container_name("x" * 100_000)
    assert len(refused.value.message) < 300 and "100000 chars in all" in refused.value.message


@given(st.integers(1, 7), st.integers(1, 200), _suffixes)
def test_mig_profiles_and_gpu_uuids_take_no_tail(slices: int, mem: int, tail: str) -> None:
    profile = f"{slices}g.{mem}gb"
    assert mig_profile_slices(profile) == slices
    with pytest.raises(ValueError):
        mig_profile_slices(profile + tail)
    uuid = "GPU-0123abcd-4567"
    assert GPU_UUID_RE.match(uuid)
    assert not GPU_UUID_RE.match(uuid + tail)


@given(st.text("0123456789abcdef", min_size=12, max_size=64), _suffixes)
def test_docker_ids_take_no_tail(ident: str, tail: str) -> None:
    assert DOCKER_ID_RE.match(ident)
    assert not DOCKER_ID_RE.match(ident + tail)
