from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.errors import InvalidInput
from ds01.model.labels import (
    CONTAINER_NAME_SEPARATOR,
    NAME,
    REPLACED_SUFFIX,
    container_name,
    name_of,
)
from ds01.model.names import validate_container_name, validate_image_reference


@pytest.mark.parametrize("name", ["thesis", "exp-01", "A_b", "x" * 63, "0abc"])
def test_valid_container_names(name: str) -> None:
    assert validate_container_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "-x", "_x", "a b", "a/b", "a._.1000", "x" * 64, "née", "a;rm -rf", "../x"]
)
def test_invalid_container_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(InvalidInput, match="letters, digits"):
        validate_container_name(name)


@pytest.mark.parametrize(
    "ref",
    [
        "busybox",
        "ds01-test/busybox:latest",
        "aimehub/pytorch-2.8.0-cuda12.6.3",
        "localhost:5000/team/img:v1.2",
        "nvidia/cuda:12.6.3-base-ubuntu24.04",
        "repo/img@sha256:" + "a" * 64,
    ],
)
def test_valid_image_references(ref: str) -> None:
    assert validate_image_reference(ref) == ref


@pytest.mark.parametrize("ref", ["", "case/UPPER", "a b", "img:", "img:tag:tag", "-img", "a//b"])
def test_invalid_image_references(ref: str) -> None:
    with pytest.raises(InvalidInput, match="Invalid image reference"):
        validate_image_reference(ref)


@given(st.from_regex(r"\A[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}\Z"), st.integers(0, 2**31 - 1))
def test_docker_name_keeps_the_user_name_and_uid_recoverable(name: str, uid: int) -> None:
    docker_name = container_name(name, uid)
    base, sep, uid_text = docker_name.rpartition(CONTAINER_NAME_SEPARATOR)
    assert (base, sep, int(uid_text)) == (name, CONTAINER_NAME_SEPARATOR, uid)


def test_a_containers_name_follows_its_docker_name_of_its_owner_else_the_label() -> None:
    labels = {NAME: "web"}
    assert name_of("web._.1001", 1001, labels) == "web"
    assert name_of("0123456789ab_web._.1001", 1001, labels) == "0123456789ab_web"  # renamed
    # ds01d's temporary name while it re-creates the container
    assert name_of("web2._.1001" + REPLACED_SUFFIX, 1001, labels) == "web2"
    # another uid's suffix, a name ds01 would refuse, no suffix: the label
    assert name_of("web._.1002", 1001, labels) == "web"
    assert name_of("a.b._.1001", 1001, labels) == "web"
    assert name_of("web", 1001, labels) == "web"
    assert name_of("web", 1001, {}) == "web"
