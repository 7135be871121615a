"""images.yaml: ``starter`` (user-setup's image) and ``jupyter_port`` of an entry."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from ds01.config.images import ImagesConfig

ENTRY = {"name": "jupyter", "image": "lab/jupyter:1", "framework": "none", "description": "x"}


def test_starter_names_an_entry() -> None:
    config = ImagesConfig.model_validate({"images": [ENTRY], "starter": "jupyter"})
    assert config.starter == "jupyter"
    with pytest.raises(ValidationError, match="starter 'nope' is not the name of an entry"):
        ImagesConfig.model_validate({"images": [ENTRY], "starter": "nope"})


@pytest.mark.parametrize("port", [0, 65536, "8888"])
def test_jupyter_port_is_a_port_number(port: object) -> None:
    with pytest.raises(ValidationError):
        ImagesConfig.model_validate({"images": [{**ENTRY, "jupyter_port": port}]})
    ok = ImagesConfig.model_validate({"images": [{**ENTRY, "jupyter_port": 8888}]})
    assert ok.images[0].jupyter_port == 8888


def test_the_packaged_registry_has_a_jupyter_starter() -> None:
    from importlib.resources import files

    text = (files("ds01.config") / "defaults" / "images.yaml").read_text()
    config = ImagesConfig.model_validate(yaml.safe_load(text))
    starter = config.find(config.starter or "")
    assert starter is not None and starter.jupyter_port == 8888
