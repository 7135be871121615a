"""A real browser on a real JupyterHub, for the browser test and the benchmark (no tests
here): Debian's Chromium (``CHROMIUM``, headless), driven by Playwright, never
``playwright install`` (nothing is downloaded); passwords for PAM; logging in; the spawn
form's start.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hubproc import Hub

CHROMIUM = "/usr/bin/chromium"
#: Headless, and quiet on the network: nothing is fetched but the hub's pages.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "ds01-hub-test-Pw1"


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Playwright's Chromium on ``CHROMIUM`` (raises ``ImportError`` without Playwright)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def hub_passwords(users: Sequence[str], hub_user: str) -> Iterator[None]:
    """``PASSWORD`` for ``users`` and the group ``shadow`` for ``hub_user`` (so that PAM can
    check passwords without root); both undone afterwards."""
    saved = {}
    for line in Path("/etc/shadow").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in users:
            saved[name] = rest.split(":", 1)[0]
    subprocess.run(
        ["chpasswd"], input="".join(f"{u}:{PASSWORD}\n" for u in users), text=True, check=True
    )
    subprocess.run(["usermod", "-aG", "shadow", hub_user], check=True)
    try:
        yield
    finally:
        subprocess.run(["gpasswd", "-d", hub_user, "shadow"], check=False, capture_output=True)
        for name, hashed in saved.items():
            subprocess.run(["usermod", "-p", hashed, name], check=False)


def log_in(browser: Any, hub: Hub, user: str, shot: Path | None = None) -> Any:
    """A new page logged in to ``hub`` as ``user`` (``shot``: a screenshot of the login
    page, filled in), on the hub's home page."""
    page = browser.new_context(viewport={"width": 1200, "height": 800}).new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{hub.public}/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", PASSWORD)
    if shot is not None:
        page.screenshot(path=shot)
    page.click("#login_submit")
    page.wait_for_url(lambda url: "/hub/login" not in url)
    return page


def open_form(page: Any, hub: Hub) -> None:
    """Go to ds01's options form."""
    page.goto(f"{hub.public}/hub/spawn")
    page.wait_for_selector("#ds01-device")


def start(page: Any, device: str, image: str = "jupyter") -> None:
    """Choose ``image`` and ``device`` in ds01's options form and click its Start."""
    page.select_option("#ds01-image", image)
    page.select_option("#ds01-device", device)
    page.click("form [type=submit]")  # a button in JupyterHub 5, an input in 4


def wait_for_lab(page: Any, user: str, timeout_ms: int = 90_000) -> None:
    """Until ``user``'s JupyterLab has loaded (its launcher shows)."""
    page.wait_for_url(lambda url: f"/user/{user}/lab" in url, timeout=timeout_ms)
    page.wait_for_selector(".jp-LauncherCard", timeout=timeout_ms)
