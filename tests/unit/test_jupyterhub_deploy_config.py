"""``deploy/jupyterhub/jupyterhub_config.py`` read as JupyterHub reads it: per-user
subdomains from ``DS01_HUB_SUBDOMAIN_HOST``, with ``__Host-`` cookies over HTTPS only."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "jupyterhub" / "jupyterhub_config.py"


class _Config:
    """What ``get_config()`` returns, enough for the file: ``c.Section.name = value``."""

    def __init__(self) -> None:
        self.sections: dict[str, types.SimpleNamespace] = {}

    def __getattr__(self, name: str) -> Any:
        return self.sections.setdefault(name, types.SimpleNamespace())


def loaded(monkeypatch: pytest.MonkeyPatch, **env: str) -> _Config:
    for name in ("DS01_HUB_SUBDOMAIN_HOST", "DS01_HUB_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = _Config()
    code = compile(CONFIG.read_text(encoding="utf-8"), str(CONFIG), "exec")
    exec(code, {"get_config": lambda: config})  # the repository's own file
    return config


def test_subdomains_and_host_locked_cookies_over_https(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = loaded(monkeypatch, DS01_HUB_SUBDOMAIN_HOST="https://hub.example.org").JupyterHub
    assert hub.subdomain_host == "https://hub.example.org"
    assert hub.cookie_host_prefix_enabled is True
    # JupyterHub reads an address without a scheme as https: so does the file.
    bare = loaded(monkeypatch, DS01_HUB_SUBDOMAIN_HOST="hub.example.org").JupyterHub
    assert bare.cookie_host_prefix_enabled is True


def test_plain_http_subdomains_go_without_host_cookies(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = loaded(monkeypatch, DS01_HUB_SUBDOMAIN_HOST="http://hub.localhost:8000").JupyterHub
    assert hub.subdomain_host == "http://hub.localhost:8000"
    assert hub.cookie_host_prefix_enabled is False


def test_without_the_setting_one_origin_and_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    hub = loaded(monkeypatch).JupyterHub
    assert not hasattr(hub, "subdomain_host") and not hasattr(hub, "cookie_host_prefix_enabled")
    assert "DS01_HUB_SUBDOMAIN_HOST is not set" in caplog.text
    assert loaded(monkeypatch).Spawner.poll_interval == 10
