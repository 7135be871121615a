"""Pure rules of user image builds: namespaces and tags, the images a Dockerfile builds
from, Docker's build output, reserved labels; and the job table that follows builds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ds01.core.image_build import (
    BaseReference,
    base_references,
    build_step,
    build_target,
    foreign_labels,
    image_name,
    owns_reference,
    user_namespace,
    validate_dockerfile_path,
    validate_tag,
)
from ds01.daemon.image_jobs import (
    CUT_MARK,
    MAX_LINE_LENGTH,
    MAX_LINES,
    MAX_RUNNING_PER_USER,
    ImageJob,
    ImageJobs,
)
from ds01.errors import InvalidInput, PermissionDenied, QuotaExceeded
from ds01.model.names import is_image_reference

# --- namespaces, names, tags ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "uid", "namespace"),
    [
        ("alice", 1001, "alice"),
        ("bob_smith", 1002, "bob_smith"),
        ("jane.doe", 1003, "jane-doe-1003"),  # a dot would make Docker read a registry host
        ("Jane", 1004, "jane-1004"),  # not the same namespace as user "jane"
        ("jane@LAB.EXAMPLE", 1005, "jane-lab-example-1005"),
        ("élodie", 1006, "lodie-1006"),
        ("ÉÉ", 1007, "u-1007"),
        ("localhost", 1008, "localhost"),
        # ds01's own repositories (ds01-kept/: other users' container commits) are no one's
        ("ds01-kept", 1009, "ds01-kept-1009"),
        ("ds01", 1010, "ds01-1010"),
        # A name ending in -<digits> could be another user's form with the uid: its own uid.
        ("jane-1004", 1011, "jane-1004-1011"),
        ("u-1007", 1012, "u-1007-1012"),
        ("u1007", 1013, "u1007"),
        ("cuda-12", 1014, "cuda-12-1014"),
        ("jane_1004", 1015, "jane_1004"),
    ],
)
def test_user_namespace(user: str, uid: int, namespace: str) -> None:
    assert user_namespace(user, uid) == namespace


@given(st.text(min_size=1, max_size=80), st.integers(min_value=0, max_value=2**31))
def test_every_user_gets_a_valid_namespace_that_names_no_registry_host(user: str, uid: int) -> None:
    namespace = user_namespace(user, uid)
    assert is_image_reference(f"{namespace}/x:latest")
    assert "." not in namespace and ":" not in namespace


def owner_of(namespace: str) -> tuple[str, object]:
    """Who a namespace names, read back from the namespace alone: the uid, for the form
    with the uid (it ends in ``-<digits>``), else the user name (which is the namespace)."""
    _, dash, digits = namespace.rpartition("-")
    if dash and digits.isascii() and digits.isdigit():
        return ("uid", int(digits))
    return ("name", namespace)


#: User names as NSS may give them: any text, and valid lower-case names that may end in
#: ``-<digits>`` like another user's form with the uid.
USER_NAMES = st.one_of(
    st.text(min_size=1, max_size=70),
    st.from_regex(r"[a-z0-9]{1,8}([-_][a-z0-9]{1,6}){0,2}(-[0-9]{1,6})?", fullmatch=True),
)
UIDS = st.integers(min_value=0, max_value=2**32 - 2)


@given(USER_NAMES, UIDS)
def test_a_namespace_names_its_user_by_name_or_by_uid(user: str, uid: int) -> None:
    """The uid is recoverable from every namespace of the form with the uid, and any other
    namespace is the user name itself: so the rule is injective over users (distinct names,
    distinct uids)."""
    assert owner_of(user_namespace(user, uid)) in {("name", user), ("uid", uid)}


@given(USER_NAMES, USER_NAMES, UIDS, st.integers(min_value=1, max_value=2**20))
def test_no_two_users_share_a_namespace(user: str, other: str, uid: int, apart: int) -> None:
    other_uid = uid + apart
    if other != user:
        assert user_namespace(other, other_uid) != user_namespace(user, uid)


@given(USER_NAMES, UIDS, st.integers(min_value=1, max_value=2**20))
def test_a_user_named_as_another_users_namespace_gets_another(
    user: str, uid: int, apart: int
) -> None:
    """``Jane`` (uid 1004) has ``jane-1004``; a user actually named ``jane-1004`` does not."""
    namespace = user_namespace(user, uid)
    for other in {namespace, namespace.upper(), f"{namespace}-7"} - {user}:
        assert user_namespace(other, uid + apart) != namespace


@pytest.mark.parametrize(
    ("name", "cleaned"),
    [
        ("thesis", "thesis"),
        ("My Project", "my-project"),
        ("cv_seg.v2", "cv_seg.v2"),
        ("--weird__..name--", "weird-name"),
        ("x__y", "x__y"),
        ("a" * 100, "a" * 64),
    ],
)
def test_image_names_are_made_valid(name: str, cleaned: str) -> None:
    assert image_name(name) == cleaned


@pytest.mark.parametrize("name", ["", "---", "ééé", "..."])
def test_an_image_name_with_nothing_usable_is_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="Invalid image name"):
        image_name(name)


@given(st.text(min_size=1, max_size=100))
def test_a_cleaned_image_name_is_always_a_valid_component(name: str) -> None:
    try:
        cleaned = image_name(name)
    except InvalidInput:
        return
    assert is_image_reference(f"alice/{cleaned}:latest")


def test_build_target() -> None:
    target = build_target("alice", 1001, "My Thesis", "v2")
    assert (target.repository, target.tag) == ("alice/my-thesis", "v2")
    assert target.reference == "alice/my-thesis:v2"
    assert build_target("alice", 1001, "x").tag == "latest"
    assert owns_reference("alice", 1001, "alice/x:v1")
    assert not owns_reference("alice", 1001, "alicex/x:v1")
    assert not owns_reference("bob", 1002, "alice/x:v1")


@pytest.mark.parametrize("tag", ["", "-x", ".x", "a b", "a/b", "x" * 129, "é"])
def test_invalid_tags_are_refused(tag: str) -> None:
    with pytest.raises(InvalidInput, match="Invalid tag"):
        validate_tag(tag)


@pytest.mark.parametrize(
    ("path", "normal"),
    [("Dockerfile", "Dockerfile"), ("./docker/Dockerfile.gpu", "docker/Dockerfile.gpu")],
)
def test_dockerfile_paths_inside_the_context(path: str, normal: str) -> None:
    assert validate_dockerfile_path(path) == normal


@pytest.mark.parametrize("path", ["", "/etc/passwd", "../Dockerfile", "a/../../b", ".", "a\nb"])
def test_dockerfile_paths_outside_the_context_are_refused(path: str) -> None:
    with pytest.raises(InvalidInput, match="--file"):
        validate_dockerfile_path(path)


# --- base images --------------------------------------------------------------------------


def refs(text: str) -> list[tuple[int, str, str]]:
    return [(b.line, b.instruction, b.reference) for b in base_references(text)]


def test_from_lines_stages_and_copy_from() -> None:
    text = """\
# escape=\\
ARG BASE=ds01-test/busybox:latest
FROM --platform=linux/amd64 ${BASE} AS build
RUN echo hi
from alice/tools:v1
COPY --from=build /x /x
COPY --from=0 /y /y
COPY --chown=1:1 --from=lab/assets:2 /z /z
FROM scratch
FROM build
"""
    assert refs(text) == [
        (3, "FROM", "ds01-test/busybox:latest"),
        (5, "FROM", "alice/tools:v1"),
        (8, "COPY --from", "lab/assets:2"),
    ]


def test_onbuild_triggers_are_checked_when_the_image_is_built() -> None:
    text = "FROM a/b\nONBUILD COPY --from=evil/image:1 / /x\nONBUILD RUN echo\n"
    assert refs(text) == [(1, "FROM", "a/b"), (2, "COPY --from", "evil/image:1")]


def test_continuations_comments_and_the_backtick_escape() -> None:
    text = (
        "# escape=`\nFROM `\n  # a comment inside\n  aimehub/pytorch-2.8.0-cuda12.6.3\n"
        "RUN a `\n b\n"
    )
    assert refs(text) == [(2, "FROM", "aimehub/pytorch-2.8.0-cuda12.6.3")]


def test_arg_defaults_and_modifiers() -> None:
    text = 'ARG V="1.2"\nFROM lab/x:${V}\nFROM lab/y:${MISSING:-3}\nFROM lab/z${NONE:+-dev}\n'
    assert [r for _, _, r in refs(text)] == ["lab/x:1.2", "lab/y:3", "lab/z"]


@pytest.mark.parametrize(
    "text",
    [
        "ARG BASE\nFROM $BASE\n",  # no default: only --build-arg could set it
        "FROM busybox\nARG LATER=x\nFROM lab/${LATER}\n",  # only ARGs before the first FROM
    ],
)
def test_a_reference_that_cannot_be_known_before_the_build_is_refused(text: str) -> None:
    # Docker would build it (with an empty name): ds01 cannot prove it allowed, exit 5.
    with pytest.raises(PermissionDenied, match="no default"):
        base_references(text)


def test_a_dockerfile_without_from_is_refused() -> None:
    with pytest.raises(InvalidInput, match="no FROM"):
        base_references("# nothing\nRUN echo\n")
    with pytest.raises(InvalidInput, match="FROM without an image"):
        base_references("FROM --platform=linux/amd64\n")


def test_base_reference_fields() -> None:
    assert base_references("FROM a/b\n") == [BaseReference(1, "FROM", "a/b")]


# --- build output and labels ----------------------------------------------------------------


def test_build_steps() -> None:
    assert build_step("Step 3/7 : RUN echo hi") == (3, 7)
    assert build_step(" ---> Running in 2526a7384da5") is None


def test_only_the_owner_label_with_the_owner_is_allowed() -> None:
    labels = {
        "ds01.image.owner": "alice",
        "ds01.managed": "true",
        "org.opencontainers.image.title": "x",
        "aime.mlc.ARCH": "CUDA_ADA",
    }
    assert foreign_labels(labels, "ds01.image.owner", "alice") == ["ds01.managed"]
    assert foreign_labels(labels, "ds01.image.owner", "bob") == [
        "ds01.image.owner",
        "ds01.managed",
    ]
    # A label that says what the image serves is the user's to set; others are not.
    serving = {**labels, "ds01.jupyter.port": "8888", "ds01.jupyter.token": "stolen"}
    declared = frozenset({"ds01.jupyter.port"})
    assert foreign_labels(serving, "ds01.image.owner", "alice", declared) == [
        "ds01.jupyter.token",
        "ds01.managed",
    ]


# --- the job table --------------------------------------------------------------------------


def start(
    jobs: ImageJobs, uid: int, work: Callable[[ImageJob], Any], name: str = "alice/x:latest"
) -> ImageJob:
    return jobs.start("build", "alice", uid, name, "2026-11-28T12:00:00+00:00", work)


def test_lines_are_numbered_over_the_whole_run_and_read_from_since() -> None:
    jobs = ImageJobs()
    release = threading.Event()

    def work(job: ImageJob) -> None:
        jobs.add_text(job, "Step 1/2 : FROM x\n ---> abc")
        jobs.add_text(job, "\nhello\n")
        release.wait(5)
        jobs.finish(job, "succeeded", "done", "2026-11-28T12:00:01+00:00", image_id="sha256:1")

    job = start(jobs, 1001, work)
    first = jobs.wait(job, 0, 5)
    assert first.lines[:1] == ["Step 1/2 : FROM x"] and first.since == 0
    later = jobs.wait(job, first.next, 0.05) if first.next < 3 else first
    assert jobs.wait(job, 0, 0).lines == ["Step 1/2 : FROM x", " ---> abc", "hello"]
    assert later.state == "running"
    release.set()
    end = jobs.wait(job, 3, 5)
    assert (end.state, end.lines, end.next, end.image_id) == ("succeeded", [], 3, "sha256:1")


def test_old_lines_are_dropped_but_the_numbering_goes_on() -> None:
    jobs = ImageJobs()

    def work(job: ImageJob) -> None:
        jobs.add_text(job, "".join(f"{n}\n" for n in range(MAX_LINES + 10)))
        jobs.finish(job, "failed", "no")

    job = start(jobs, 1001, work)
    info = jobs.wait(job, 0, 5)
    while info.state == "running":
        info = jobs.wait(job, 0, 5)
    assert info.since == 10 and info.lines[0] == "10" and info.next == MAX_LINES + 10


def test_output_without_newlines_is_kept_to_one_cut_line() -> None:
    """``RUN head -c 200M /dev/zero | tr '\\0' x``: the unfinished line must not grow (it
    was copied whole at every chunk, under the lock every job shares)."""
    jobs = ImageJobs()
    sizes: list[int] = []

    def work(job: ImageJob) -> None:
        jobs.add_text(job, "Step 1/1 : RUN yes\nxx")
        for _ in range(2000):  # 8 MB, in Docker-sized chunks
            assert jobs.add_text(job, "x" * 4096) == []
            sizes.append(len(job.partial))
        jobs.add_text(job, "\r\nok\n" + "y" * (MAX_LINE_LENGTH + 10))
        jobs.finish(job, "failed", "no")

    job = start(jobs, 1001, work)
    info = jobs.wait(job, 0, 5)
    while info.state == "running":
        info = jobs.wait(job, 0, 5)
    assert max(sizes) == MAX_LINE_LENGTH
    cut = "x" * MAX_LINE_LENGTH + CUT_MARK
    assert info.lines == ["Step 1/1 : RUN yes", cut, "ok", "y" * MAX_LINE_LENGTH + CUT_MARK]


def test_a_wait_returns_after_its_timeout_without_news() -> None:
    jobs = ImageJobs()
    release = threading.Event()
    job = start(jobs, 1001, lambda job: release.wait(5))
    began = time.monotonic()
    info = jobs.wait(job, 0, 0.2)
    assert info.state == "running" and info.lines == []
    assert 0.15 <= time.monotonic() - began < 2
    release.set()


def test_a_user_runs_a_bounded_number_of_jobs() -> None:
    jobs = ImageJobs()
    release = threading.Event()
    for n in range(MAX_RUNNING_PER_USER):
        start(jobs, 1001, lambda job: release.wait(5), f"alice/x{n}:latest")
    with pytest.raises(QuotaExceeded, match="at most"):
        start(jobs, 1001, lambda job: None)
    start(jobs, 1002, lambda job: None)  # someone else may
    release.set()


def test_a_crashing_job_fails_and_a_cancelled_one_reports_who() -> None:
    jobs = ImageJobs()

    def crash(job: ImageJob) -> None:
        raise RuntimeError("boom")

    job = start(jobs, 1001, crash)
    info = jobs.wait(job, 0, 5)
    assert info.state == "failed" and "internal error" in (info.message or "")

    release = threading.Event()
    running = start(jobs, 1001, lambda job: release.wait(5))
    assert jobs.cancel(running, "erin")
    assert running.cancel_requested and running.cancelled_by == "erin"
    release.set()
    assert not jobs.cancel(job, "alice")  # already over
