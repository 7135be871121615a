"""Waiting for a container's JupyterLab: a URL is shown once it answers, not before."""

from __future__ import annotations

import sys
import time

from ds01.cli import render
from ds01.errors import Ds01Error

#: How long `container-start` and `container-create --start` wait for JupyterLab.
JUPYTER_WAIT_SECONDS = 60.0
_POLL_SECONDS = 0.3


def wait_for_jupyter(url: str, timeout_seconds: float) -> str | None:
    """Poll JupyterLab's ``/api/status`` with the token until it answers 200; ``None`` when it
    did, else the last reason it did not (within ``timeout_seconds``)."""
    import urllib.error  # here: urllib.request costs the CLI's start-up 20 ms
    import urllib.request

    base, _, token = url.partition("/lab?token=")
    if not base.startswith("http://127.0.0.1:"):
        raise Ds01Error(f"Unexpected JupyterLab address {base!r}.")
    headers = {"Authorization": f"token {token}"}
    request = urllib.request.Request(f"{base}/api/status", headers=headers)  # noqa: S310
    deadline = time.monotonic() + timeout_seconds
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - http://127.0.0.1 only
                if answer.status == 200:
                    return None
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        time.sleep(_POLL_SECONDS)
    return last


def show_jupyter(name: str, url: str, timeout_seconds: float = JUPYTER_WAIT_SECONDS) -> None:
    """For a person at a terminal, print ``url`` once JupyterLab answers (if it does not in
    time, say so and where to look); a script or pipe gets the address at once, to poll
    itself, instead of a wait it did not ask for."""
    if not sys.stdout.isatty():
        render.echo(f"  JupyterLab: {url}")
        return
    render.echo("  Waiting for JupyterLab to answer…")
    problem = wait_for_jupyter(url, timeout_seconds)
    if problem is None:
        render.echo(f"  JupyterLab: {url}")
    else:
        render.warn(
            f"JupyterLab in {name} did not answer within {timeout_seconds:g} s ({problem}). "
            f"It may still be starting: its address will be {url}. See what it printed with "
            f"`container-open {name}`."
        )


__all__ = ["JUPYTER_WAIT_SECONDS", "show_jupyter", "wait_for_jupyter"]
