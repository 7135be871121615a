"""End to end: a configuration file rewritten in place never applies the built-in defaults.

An editor or ``cat > resource-limits.yaml`` truncates the file, then writes it: for a moment
the file is empty. ds01d once read that moment as "no settings" and applied the built-in
defaults (``max_containers 3``) to every request that came then. Now a file with no YAML
document is an error that keeps the last good configuration, and a change is read once the
file has settled; ``{}`` (or removing the file) is how an admin returns to the defaults.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from support import TEST_IMAGES_YAML, describe

BUILTIN_MAX_CONTAINERS = 3
VERSIONS = {
    5: "# the lab's quotas\ndefaults:\n  max_containers: 5\n  gpu_limit: 2\n",
    7: "# the lab's quotas\ndefaults:\n  max_containers: 7\n  gpu_limit: 2\n",
}
REWRITES = 50
REWRITE_SECONDS = 10.0


def max_containers(d: Any, user: str = "alice") -> int:
    value: int = d.cli_json(user, "check-limits")["limits"]["max_containers"]
    return value


def rewrite_in_place(path: Path, text: str) -> None:
    """What an editor that writes in place does: truncate, then write the new text."""
    with path.open("r+", encoding="utf-8") as file:
        file.truncate(0)
        file.flush()
        time.sleep(0.005)  # the editor's gap, in which a reader finds the file empty
        file.write(text)


def test_rewrites_in_place_never_apply_the_builtin_defaults(ds01d: Any) -> None:
    d = ds01d(resource_limits=VERSIONS[5], images=TEST_IMAGES_YAML)
    path = d.paths.config_dir / "resource-limits.yaml"
    assert max_containers(d) == 5

    def writer() -> None:
        for i in range(REWRITES):
            rewrite_in_place(path, VERSIONS[7 if i % 2 == 0 else 5])
            time.sleep(REWRITE_SECONDS / REWRITES)  # rewrites spread over REWRITE_SECONDS

    writing = threading.Thread(target=writer)
    writing.start()
    seen = []
    while writing.is_alive():
        seen.append(max_containers(d))
    writing.join()

    assert seen and set(seen) <= {5, 7}, f"defaults or another value applied: {seen}"
    assert max_containers(d) == 5  # the last version written (REWRITES is even)


def test_an_emptied_file_keeps_the_last_good_configuration_until_it_says_so(
    ds01d: Any,
) -> None:
    d = ds01d(resource_limits=VERSIONS[7], images=TEST_IMAGES_YAML)
    path = d.paths.config_dir / "resource-limits.yaml"
    assert max_containers(d) == 7

    path.write_text("")
    assert max_containers(d) == 7
    failed = d.events_where(action="config.reload", outcome="failure")
    assert failed and "write {} in it or remove it" in failed[-1]["details"]["error"], failed
    checked = d.cli(None, "config", "check", "--config-dir", str(d.paths.config_dir))
    assert checked.returncode != 0, describe(checked)
    assert "no settings" in checked.stdout + checked.stderr, describe(checked)

    path.write_text("# back to ds01's defaults\n{}\n")
    assert max_containers(d) == BUILTIN_MAX_CONTAINERS
