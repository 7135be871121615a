"""Where one ds01d instance keeps its configuration, state, logs and socket."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ds01 import paths as p


@dataclass(frozen=True)
class DaemonPaths:
    config_dir: Path
    state_dir: Path
    log_dir: Path
    socket: Path

    @classmethod
    def resolve(
        cls,
        config: str | None = None,
        state: str | None = None,
        log: str | None = None,
        socket: str | None = None,
    ) -> DaemonPaths:
        """Each path from its flag, else its ``DS01_*`` environment variable, else the default."""
        return cls(
            config_dir=Path(p.config_dir(config)),
            state_dir=Path(p.pick(state, p.ENV_STATE_DIR, p.DEFAULT_STATE_DIR)),
            log_dir=Path(p.pick(log, p.ENV_LOG_DIR, p.DEFAULT_LOG_DIR)),
            socket=Path(p.socket_path(socket)),
        )

    @property
    def events_file(self) -> Path:
        return self.log_dir / p.EVENTS_FILE

    @property
    def state_db(self) -> Path:
        return self.state_dir / p.STATE_DB_FILE

    @property
    def simulated_telemetry_file(self) -> Path:
        """Where the simulated GPU backend reads per-device utilisation (tests, demos)."""
        return self.state_dir / p.SIMULATED_TELEMETRY_FILE

    @property
    def simulated_mig_file(self) -> Path:
        """Where the simulated GPU backend keeps the MIG changes of ``ds01 admin mig apply``."""
        return self.state_dir / p.SIMULATED_MIG_FILE

    @property
    def simulated_process_file(self) -> Path:
        """Where the simulated GPU backend reads the processes on its devices (tests)."""
        return self.state_dir / p.SIMULATED_PROCESS_FILE
