"""Where a user's limits are written, for ``check-limits --explain``: the line of
``resource-limits.yaml`` that sets each value, and in cluster mode (``cluster: slurm``) the
Slurm QOS field and association that ``ds01 admin slurm sync`` made from it, as Slurm holds
them now (``sacctmgr``, read by ``ds01.runtime.slurm.read_accounting``).

No lock: it reads files and Slurm, and decides nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from ds01.config.loader import key_line
from ds01.config.resolve import source_keys
from ds01.core.slurm_sync import QOS_FIELDS, limit_sources
from ds01.daemon.context import DaemonContext
from ds01.errors import InvalidInput, SlurmError
from ds01.paths import RESOURCE_LIMITS_FILE
from ds01.runtime import slurm


def in_cluster_mode(ctx: DaemonContext) -> bool:
    """Whether this ds01d is a node of a Slurm cluster (``cluster: slurm``)."""
    return ctx.config().limits.cluster == "slurm"


def yaml_lines(ctx: DaemonContext, sources: Mapping[str, str]) -> dict[str, int]:
    """Limit key → the line of ``resource-limits.yaml`` that sets its value, for each
    ``sources`` (key → its provenance, ``group:phd``…) written in the file (not builtin);
    as the file reads now; none when it cannot be read."""
    try:
        text = (ctx.paths.config_dir / RESOURCE_LIMITS_FILE).read_text(encoding="utf-8")
    except OSError:
        return {}
    lines = {}
    for key, source in sources.items():
        where = source_keys(source, key)
        line = None if where is None else key_line(text, *where)
        if line is not None:
            lines[key] = line
    return lines


def slurm_sources(ctx: DaemonContext, user: str, unix_groups: Collection[str]) -> dict[str, str]:
    """Limit key → where Slurm holds it (``ds01.core.slurm_sync.limit_sources``) in cluster
    mode; nothing on a single server. When Slurm's accounting cannot be read, or the user
    cannot be in it, each of those keys says why instead."""
    if not in_cluster_mode(ctx):
        return {}
    config = ctx.config().limits
    try:
        return limit_sources(config, user, unix_groups, slurm.read_accounting())
    except (SlurmError, InvalidInput) as exc:
        return dict.fromkeys(QOS_FIELDS, f"not known: {exc.message}")


__all__ = ["in_cluster_mode", "slurm_sources", "yaml_lines"]
