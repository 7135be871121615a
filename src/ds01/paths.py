"""Default file locations and the environment variables that override them (DESIGN.md §6)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CONFIG_DIR = Path("/etc/ds01")
DEFAULT_STATE_DIR = Path("/var/lib/ds01")
DEFAULT_LOG_DIR = Path("/var/log/ds01")
DEFAULT_SOCKET = Path("/run/ds01/ds01.sock")

ENV_CONFIG_DIR = "DS01_CONFIG_DIR"
ENV_STATE_DIR = "DS01_STATE_DIR"
ENV_LOG_DIR = "DS01_LOG_DIR"
ENV_SOCKET = "DS01_SOCKET"

RESOURCE_LIMITS_FILE = "resource-limits.yaml"
GPU_CONFIG_FILE = "gpu-config.yaml"
IMAGES_FILE = "images.yaml"
EVENTS_FILE = "events.jsonl"
STATE_DB_FILE = "ds01.db"


def _pick(flag: str | Path | None, env: str, default: Path) -> Path:
    if flag:
        return Path(flag)
    value = os.environ.get(env)
    return Path(value) if value else default


def config_dir(flag: str | Path | None = None) -> Path:
    return _pick(flag, ENV_CONFIG_DIR, DEFAULT_CONFIG_DIR)


def socket_path(flag: str | Path | None = None) -> Path:
    return _pick(flag, ENV_SOCKET, DEFAULT_SOCKET)


@dataclass(frozen=True)
class DaemonPaths:
    """Where one ds01d instance keeps its configuration, state, logs and socket."""

    config_dir: Path
    state_dir: Path
    log_dir: Path
    socket: Path

    @classmethod
    def resolve(
        cls,
        config: str | Path | None = None,
        state: str | Path | None = None,
        log: str | Path | None = None,
        socket: str | Path | None = None,
    ) -> DaemonPaths:
        return cls(
            config_dir=config_dir(config),
            state_dir=_pick(state, ENV_STATE_DIR, DEFAULT_STATE_DIR),
            log_dir=_pick(log, ENV_LOG_DIR, DEFAULT_LOG_DIR),
            socket=socket_path(socket),
        )

    @property
    def events_file(self) -> Path:
        return self.log_dir / EVENTS_FILE

    @property
    def state_db(self) -> Path:
        return self.state_dir / STATE_DB_FILE
