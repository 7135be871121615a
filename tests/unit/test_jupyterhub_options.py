"""The JupyterHub spawner's pure parts: container names, the form's choices, the create
body, which containers a server may replace, the address of a server and the queue's words
on the spawn page."""

from __future__ import annotations

import pytest

from ds01.jupyterhub.form import device_options, jupyter_images, render
from ds01.jupyterhub.options import (
    ChoiceError,
    ServerChoice,
    choice_from_form,
    choice_from_options,
    container_name,
    create_body,
    progress_message,
    server_conflict,
    server_url,
)
from ds01.model.names import CONTAINER_NAME_RE


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("", "jupyterhub"),
        ("gpu", "jupyterhub-gpu"),
        ("My Server!", "jupyterhub-my-server"),
        ("ü", "jupyterhub-server"),
        ("x" * 100, "jupyterhub-" + "x" * 52),
    ],
)
def test_every_server_has_a_valid_container_name(server: str, expected: str) -> None:
    name = container_name(server)
    assert name == expected
    assert CONTAINER_NAME_RE.fullmatch(name)


def test_the_form_answer_becomes_a_choice() -> None:
    assert choice_from_form({"image": ["lab"], "device": ["none"]}, "") == ServerChoice("lab")
    assert choice_from_form({"device": ["mig:1g.10gb"]}, "lab") == ServerChoice(
        "lab", mig="1g.10gb"
    )
    assert choice_from_form({"image": ["x"], "device": ["gpus:2"]}, "lab") == ServerChoice(
        "x", gpus=2
    )


@pytest.mark.parametrize(
    "form",
    [
        {"device": ["gpus:0"]},
        {"device": ["gpus:-1"]},
        {"device": ["gpus:999"]},
        {"device": ["mig:1g.10gb;rm"]},
        {"device": ["all"]},
        {"image": [""], "device": ["none"]},
    ],
)
def test_odd_form_answers_are_refused(form: dict[str, list[str]]) -> None:
    default = "" if "image" in form else "lab"
    with pytest.raises(ChoiceError):
        choice_from_form(form, default)


def test_user_options_from_the_rest_api_are_checked_again() -> None:
    assert choice_from_options({}, "lab") == ServerChoice("lab")
    assert choice_from_options({"mig": "1g.5gb"}, "lab") == ServerChoice("lab", mig="1g.5gb")
    assert choice_from_options({"image": "x", "gpus": 2}, "lab") == ServerChoice("x", gpus=2)
    for odd in ({"gpus": 1, "mig": "1g.5gb"}, {"gpus": "all"}, {"mig": "x"}, {"image": 3}):
        with pytest.raises(ChoiceError):
            choice_from_options(odd, "lab")


def test_only_the_hubs_variables_reach_the_create() -> None:
    env = {
        "JUPYTERHUB_API_TOKEN": "t",
        "JPY_API_TOKEN": "t",
        "PATH": "/usr/bin",
        "NVIDIA_VISIBLE_DEVICES": "all",
    }
    body = create_body("", ServerChoice("lab", mig="1g.10gb"), env)
    assert body == {
        "name": "jupyterhub",
        "image": "lab",
        "gpus": 0,
        "mig": ["1g.10gb"],
        "queue": True,
        "hub": {
            "environment": {"JUPYTERHUB_API_TOKEN": "t", "JPY_API_TOKEN": "t"},
            "server_name": "",
        },
    }
    named = create_body("My Lab", ServerChoice("lab"), {})
    assert (named["name"], named["hub"]["server_name"]) == ("jupyterhub-my-lab", "My Lab")


def test_a_server_replaces_only_its_own_container() -> None:
    assert server_conflict({"hub_server": ""}, "") is None
    assert server_conflict({"hub_server": "a.b"}, "a.b") is None
    mine = server_conflict({"hub_server": None}, "")  # made with the CLI, say
    assert mine is not None and "the hub did not make" in mine, mine
    assert "container-remove jupyterhub`" in mine and "rename" in mine, mine
    assert server_conflict({}, "gpu") is not None  # a ds01d without the label: not the hub's
    other = server_conflict({"hub_server": "a.b"}, "a-b")  # both map to jupyterhub-a-b
    assert other is not None and "'a.b'" in other and "jupyterhub-a-b" in other, other
    accents = server_conflict({"hub_server": "ü"}, "é")  # both map to jupyterhub-server
    assert accents is not None and "'ü'" in accents, accents


def test_the_hub_reaches_the_server_at_its_address_never_a_host_port() -> None:
    running = {
        "status": "running",
        "address": "172.18.0.2",
        "ports": [{"container_port": 8888, "host_ip": "127.0.0.1", "host_port": 40002}],
    }
    assert server_url(running, 8888) == "http://172.18.0.2:8888"
    # Stopped, or not yet on the network: no address, so no URL (never 127.0.0.1).
    assert server_url({**running, "status": "exited", "address": None}, 8888) is None
    assert server_url({**running, "address": None}, 8888) is None
    assert server_url({"ports": running["ports"]}, 8888) is None
    # Only an IPv4 address is a place to send the user's pages.
    for odd in ("127.0.0.1", "127.0.0.1:1", "evil.example", "", 7, "fe80::1"):
        assert server_url({**running, "address": odd}, 8888) is None, odd


def test_the_spawn_page_shows_the_place_in_line() -> None:
    entry = {
        "state": "waiting",
        "request": "1 whole GPU",
        "position": 1,
        "queue_length": 2,
        "estimated_start": "2026-12-06T18:00:00+00:00",
        "reason": "Every device is taken.",
    }
    assert progress_message(entry) == (
        "Waiting for 1 whole GPU, position 1 of 2 in line, estimated start "
        "2026-12-06T18:00:00+00:00. Every device is taken."
    )


GPUS = {
    "devices": [
        {"uuid": "GPU-0", "kind": "gpu", "profile": None, "holder": None, "reserved": False},
        {"uuid": "GPU-1", "kind": "gpu", "profile": None, "holder": {"user": "bob"}},
        {"uuid": "MIG-a", "kind": "mig", "profile": "1g.10gb", "holder": None},
        {"uuid": "MIG-b", "kind": "mig", "profile": "1g.10gb", "holder": {"user": "x"}},
        {"uuid": "MIG-c", "kind": "mig", "profile": "3g.40gb", "holder": None},
    ],
    "total_gpu_equivalents": 3.0,
    "allocated_gpu_equivalents": 1.5,
    "queued_requests": 1,
}


def test_the_form_offers_one_mig_profile_or_whole_gpus_within_the_limits() -> None:
    limits = {"limits": {"max_gpus_per_container": 1, "allow_mig": True}}
    assert device_options(GPUS, limits) == [
        ("none", "No GPU"),
        ("mig:1g.10gb", "One 1g.10gb MIG slice (1 free now)"),
        ("mig:3g.40gb", "One 3g.40gb MIG slice (1 free now)"),
        ("gpus:1", "1 whole GPU (1 free now)"),
    ]
    no_gpus = {"limits": {"allow_mig": False, "allow_full_gpu": False}}
    assert device_options(GPUS, no_gpus) == [("none", "No GPU")]
    unlimited = {"limits": {"max_gpus_per_container": None}}
    assert [v for v, _ in device_options(GPUS, unlimited)][-2:] == ["gpus:1", "gpus:2"]


def test_the_form_shows_usage_and_what_is_free_and_escapes_names() -> None:
    html = render(
        ["lab", "<b>x</b>"],
        "lab",
        GPUS,
        {"limits": {"gpu_limit": 1}, "usage": {"gpu_equivalents": 0.5, "containers": 1}},
    )
    assert "You use 0.5 of 1 GPU-equivalents in 1 container(s)." in html
    assert "Free now: 1.5 of 3 GPU-equivalents; 1 request(s) waiting." in html
    assert '<option value="lab" selected>' in html
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_present_registry_images_are_offered_the_starter_first() -> None:
    listed = [
        {"name": "b", "present": True},
        {"name": "lab", "present": True, "starter": True},
        {"name": "absent", "present": False},
        {"name": "mine", "present": True, "own": True},
    ]
    assert jupyter_images(listed) == ["lab", "b"]
