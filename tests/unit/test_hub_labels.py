"""``ds01.hub`` and ``ds01.hub.server``: a container is a hub's server only when ds01d made
it as one, whatever its image carries."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

from ds01.model import labels as L

PLAIN = L.ContainerLabels(
    user="alice", uid=1001, group="phd", name="jupyterhub", gpus=(), gpu_equivalents=Fraction(0),
    created_at="2026-12-07T00:00:00+00:00", interface="cli", image="lab", request_id="r",
    memory_bytes=None, cpus=None, disk_bytes=None, ports=(), kept_image=None, jupyter_port=8888,
    jupyter_token=None, workspace="/home/alice/workspace", data=None, framework="none",
    visible_devices="void",
)  # fmt: skip


def test_a_hub_server_carries_its_name_and_every_other_container_says_none() -> None:
    default = replace(PLAIN, hub_server="").as_dict()
    assert (default[L.HUB], default[L.HUB_SERVER]) == ("true", "")
    assert L.hub_server_of(default) == ""
    assert L.hub_server_of(replace(PLAIN, hub_server="a.b").as_dict()) == "a.b"
    plain = PLAIN.as_dict()
    assert (plain[L.HUB], plain[L.HUB_SERVER]) == ("", "")  # written, over any image's
    assert L.hub_server_of(plain) is None


def test_labels_from_an_image_do_not_make_a_hub_server() -> None:
    # A kept image carries ds01's labels emptied; any image's labels are inherited where
    # ds01d writes none: an empty or missing ds01.hub is no hub server.
    assert L.hub_server_of({L.HUB_SERVER: ""}) is None
    assert L.hub_server_of({L.HUB: "", L.HUB_SERVER: ""}) is None
    assert L.hub_server_of({L.HUB: "yes", L.HUB_SERVER: "x"}) is None
    assert L.hub_server_of({}) is None
