"""``ds01 simulate TRACE.csv``: replay a workload through the GPU queue and compare policies.

Every chosen queue policy (``--policy``) is run with every chosen idle reclaim policy
(``--reclaim``), without and/or with borrowing above quota (``--borrowing``).

The ``ds01`` parser is built at every start and calls :func:`configure`, so this module
imports nothing but the standard library at module level (the choices come from
:mod:`ds01.sim.names`); :func:`run` imports the rest.
"""

from __future__ import annotations

from ds01.sim.names import RECLAIMS

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from pathlib import Path

    from ds01.config.gpu_config import GpuConfig
    from ds01.config.limits import ResourceLimitsConfig
    from ds01.config.scheduler import SchedulerConfig
    from ds01.model.device import Inventory
    from ds01.sim.engine import DynamicGpu, SimulationResult
    from ds01.sim.report import ReservationComparison

POLICIES = ("fair", "fcfs")
#: How MIG GPUs are replayed (``--mig``).
MIG_MODES = ("layout", "on-demand")
#: Whether jobs over quota borrow idle devices (``--borrowing``).
BORROWING_MODES = ("off", "on")


#: The flags that pick one way to replay, or every way to compare them: flag, choices (the
#: last replays each of the others), default, help.
_COMPARED: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    (
        "--policy",
        (*POLICIES, "both"),
        "both",
        "fair: the configured scheduler; fcfs: strict arrival order [both]",
    ),
    (
        "--reclaim",
        (*RECLAIMS, "all"),
        "all",
        "idle containers: ds01: stopped by ds01's lifecycle policy; none: held until their "
        "owner stops them; reference: the reference's hourly check, 3 idle checks in a row "
        "[all]",
    ),
    (
        "--mig",
        (*MIG_MODES, "both"),
        "layout",
        "layout: as gpu-config.yaml says; on-demand: every MIG GPU makes slices on demand [layout]",
    ),
    (
        "--borrowing",
        (*BORROWING_MODES, "both"),
        "off",
        "off: requests over quota wait; on: they borrow idle devices as the borrowing: "
        "section says (enabled or not), reclaimed for requests within quota; both: compare "
        "[off]",
    ),
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``ds01 simulate``."""
    parser.add_argument("trace", metavar="TRACE.csv", help="the workload trace (CSV)")
    parser.add_argument(
        "--config-dir",
        metavar="DIR",
        help="directory with resource-limits.yaml and gpu-config.yaml; a missing file (or "
        "no DIR) means the embedded default: 4 simulated A100s, GPU 3 in MIG",
    )
    for flag, modes, default, help_text in _COMPARED:
        parser.add_argument(flag, choices=modes, default=default, help=help_text)
    parser.add_argument(
        "--reservations",
        metavar="FILE",
        help="GPU reservations to replay (CSV: made_hours,start_hours,hours,user,gpus,mig); "
        "every run is made without and with them, then compared",
    )
    parser.add_argument(
        "--declared-runtime",
        action="store_true",
        help="each job declares its runtime (--runtime-hours: its busy hours, rounded up)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def load_setting(
    config_dir: Path | None,
) -> tuple[ResourceLimitsConfig, Inventory, dict[str, str], GpuConfig]:
    """The limits, the inventory, where each came from (a path or the embedded default), and
    the GPU configuration.

    Raises:
        InvalidInput: ``config_dir`` is not a directory.
        ConfigError: a file is invalid, or its GPU backend is not ``simulated``.
    """
    from ds01.config.gpu_config import GpuConfig
    from ds01.config.limits import ResourceLimitsConfig
    from ds01.config.loader import CONFIG_FILES, EMBEDDED_DEFAULT, load_file
    from ds01.errors import ConfigError, InvalidInput
    from ds01.gpu.simulated import SimulatedBackend

    if config_dir is not None and not config_dir.is_dir():
        raise InvalidInput(f"--config-dir {config_dir}: no such directory.")
    limits_path = gpus_path = None
    if config_dir is not None:
        limits_path = config_dir / CONFIG_FILES["resource-limits"]
        gpus_path = config_dir / CONFIG_FILES["gpu-config"]
    limits = ResourceLimitsConfig()
    gpus = GpuConfig()
    sources = {"resource-limits": EMBEDDED_DEFAULT, "gpu-config": EMBEDDED_DEFAULT}
    if limits_path is not None and limits_path.exists():
        limits = load_file(limits_path, "resource-limits")
        sources["resource-limits"] = str(limits_path)
    if gpus_path is not None and gpus_path.exists():
        gpus = load_file(gpus_path, "gpu-config")
        sources["gpu-config"] = str(gpus_path)
        if gpus.backend != "simulated":
            raise ConfigError(
                f"{gpus_path}: backend is {gpus.backend}; a simulation needs the GPUs described "
                "under simulated.gpus with backend: simulated (copy the file and describe the "
                "hardware there)."
            )
    return limits, SimulatedBackend(gpus).inventory(), sources, gpus


def mig_setups(
    gpus: GpuConfig, inventory: Inventory, mode: str
) -> tuple[Inventory, dict[str, DynamicGpu]]:
    """The inventory and the GPUs that make MIG slices on demand under ``mode``: ``layout``:
    those with ``dynamic`` in ``mig_layout``; ``on-demand``: also every other GPU in MIG mode,
    without its instances (no baseline)."""
    from dataclasses import replace

    from ds01.gpu.simulated import SimulatedBackend
    from ds01.sim.engine import DynamicGpu

    backend = SimulatedBackend(gpus)
    configured = gpus.dynamic_mig()
    dynamic: dict[str, DynamicGpu] = {}
    emptied: set[str] = set()
    for gpu in inventory.gpus:
        table = backend.mig_placements(gpu)
        layout = configured.get(gpu.index, configured.get(gpu.uuid))
        if table is None or not gpu.mig_enabled:
            continue
        if layout is not None:
            dynamic[gpu.uuid] = DynamicGpu(table, layout.baseline)
        elif mode == "on-demand":
            dynamic[gpu.uuid] = DynamicGpu(table)
            emptied.add(gpu.uuid)
    devices = tuple(d for d in inventory.devices if d.gpu_uuid not in emptied)
    return replace(inventory, devices=devices), dynamic


def policies(limits: ResourceLimitsConfig, choice: str) -> dict[str, SchedulerConfig]:
    """The policies to compare: ``fair`` is the configured ``scheduler:``, ``fcfs`` strict
    arrival order without backfill."""
    from ds01.config.scheduler import SchedulerConfig

    available = {"fair": limits.scheduler, "fcfs": SchedulerConfig.first_come_first_served()}
    return {name: available[name] for name in POLICIES if choice in (name, "both")}


def run(args: argparse.Namespace) -> None:
    """Run ``ds01 simulate`` and print the report."""
    from dataclasses import asdict
    from itertools import pairwise
    from pathlib import Path

    from ds01.cli import render
    from ds01.sim.engine import simulate
    from ds01.sim.report import compare_borrowing, compare_reservations, summarize, table_rows
    from ds01.sim.trace import read_reservations, read_trace

    limits, inventory, sources, gpus = load_setting(
        Path(args.config_dir) if args.config_dir else None
    )
    jobs = read_trace(Path(args.trace))
    booked = read_reservations(Path(args.reservations)) if args.reservations else None
    reclaims = [name for name in RECLAIMS if args.reclaim in (name, "all")]
    setups = [mig_setups(gpus, inventory, mode) for mode in MIG_MODES if args.mig in (mode, "both")]
    lent = limits.borrowing.model_copy(update={"enabled": True})
    borrowings = [mode == "on" for mode in BORROWING_MODES if args.borrowing in (mode, "both")]
    results = [
        simulate(
            jobs,
            devices,
            limits,
            policy,
            name,
            reclaim,
            dynamic,
            lent if borrow else None,
            reservations,
            args.declared_runtime,
        )
        for devices, dynamic in setups
        for name, policy in policies(limits, args.policy).items()
        for reclaim in reclaims
        for reservations in ((None, booked) if booked is not None else (None,))
        for borrow in borrowings
    ]
    reports = [summarize(result) for result in results]
    comparisons = [
        (without, compare_borrowing(without, with_))
        for without, with_ in pairwise(results)
        if not without.borrowing and with_.borrowing
    ]
    booked_comparisons = [
        (with_, compare_reservations(_twin_without_reservations(results, with_), with_))
        for with_ in results
        if with_.reservations is not None
    ]
    users = len({job.user for job in jobs})
    if args.json:
        render.emit_json(
            {
                "trace": args.trace,
                "jobs": len(jobs),
                "users": users,
                "sources": sources,
                "runs": [report.to_dict() for report in reports],
                "borrowing": [
                    {
                        "policy": r.policy,
                        "reclaim": r.reclaim,
                        "mig": r.mig,
                        "reservations": r.reservations is not None,
                        **asdict(c),
                        "utilisation_ratio": c.utilisation_ratio,
                        "week_utilisation_ratio": c.week_utilisation_ratio,
                    }
                    for r, c in comparisons
                ],
                "reservations": [
                    {
                        "policy": r.policy,
                        "reclaim": r.reclaim,
                        "mig": r.mig,
                        "borrowing": r.borrowing,
                        **asdict(c),
                        "kept_rate": c.kept_rate,
                        "refusals": [
                            {"line": o.asked.line, "reason": o.refusal}
                            for o in r.reservations or ()
                            if o.reservation is None
                        ],
                    }
                    for r, c in booked_comparisons
                ],
            }
        )
        return
    capacity = render.number(reports[0].capacity_gpu_equivalents)
    render.echo(
        f"Trace {args.trace}: {len(jobs)} jobs from {users} users; "
        f"{capacity} GPU-equivalents to allocate ({inventory.backend} inventory)."
    )
    render.echo(
        f"Limits: {sources['resource-limits']}; GPUs: {sources['gpu-config']}. "
        + "; ".join(
            f"{r.policy}/{r.reclaim}/{r.mig} span {r.span_hours:.1f} h" for r in reports
        )
        + "."
    )
    render.echo()
    render.table(*table_rows(reports))
    render.echo()
    render.echo(
        "Waits in hours from submission to start. GPU UTIL: busy GPU-hours over capacity over "
        "the span. IDLE GPU-h: allocated but idle. RECLAIMED GPU-h: idle time cut off by idle "
        "reclaim. JAIN: fairness of users' service shares (1 = equal). Definitions: "
        "docs/simulation.md."
    )
    for r, c in comparisons:
        ratio = "-" if c.utilisation_ratio is None else f"{c.utilisation_ratio:.2f}x"
        week = "-" if c.week_utilisation_ratio is None else f"{c.week_utilisation_ratio:.2f}x"
        render.echo(
            f"Borrowing, {r.policy}/{r.reclaim}/{r.mig}"
            f"{' with reservations' if r.reservations is not None else ''}: GPU UTIL "
            f"{c.utilisation_without:.1%} "
            f"without, {c.utilisation_with:.1%} with ({ratio}); within the trace's "
            f"{r.window_hours:g} h, {c.week_utilisation_without:.1%} without, "
            f"{c.week_utilisation_with:.1%} with ({week}); median within-quota wait "
            f"{_h(c.within_quota_median_wait_without)} h without, "
            f"{_h(c.within_quota_median_wait_with)} h with; {c.borrowed_jobs} jobs borrowed, "
            f"{c.reclaimed_jobs} reclaimed ({c.requeued_gpu_hours:.1f} GPU-h of work queued "
            f"again, {c.lost_gpu_hours:.1f} never computed); without borrowing, "
            f"{c.borrowable_gpu_hours:.1f} GPU-h stood free while work over quota waited."
        )


    _echo_reservations(booked_comparisons)


def _twin_without_reservations(
    results: list[SimulationResult], with_: SimulationResult
) -> SimulationResult:
    """The run of ``results`` that differs from ``with_`` only by having no reservations."""
    return next(
        r
        for r in results
        if r.reservations is None
        and (r.policy, r.reclaim, r.mig, r.borrowing)
        == (with_.policy, with_.reclaim, with_.mig, with_.borrowing)
    )


def _echo_reservations(compared: list[tuple[SimulationResult, ReservationComparison]]) -> None:
    from ds01.cli import render

    for r, c in compared:
        kept = "-" if c.kept_rate is None else f"{c.kept_rate:.0%}"
        render.echo(
            f"Reservations, {r.policy}/{r.reclaim}/{r.mig}"
            f"{' with borrowing' if r.borrowing else ''}: {c.admitted} admitted, {c.refused} "
            f"refused; kept {kept} ({c.kept} of {c.started} free at their start); "
            f"{c.stopped_jobs} jobs stopped ({c.stopped_gpu_hours:.1f} GPU-h of work queued "
            f"again), {c.ended_jobs} holders' jobs stopped at the end (over quota without "
            f"it), {c.delayed_jobs} delayed ({c.delay_hours:.1f} h in all); mean wait "
            f"{_h(c.mean_wait_without)} h without, {_h(c.mean_wait_with)} h with; GPU UTIL "
            f"{c.utilisation_without:.1%} without, {c.utilisation_with:.1%} with."
        )
    for outcome in compared[0][0].reservations or () if compared else ():
        if outcome.reservation is None:
            render.echo(f"  Refused (line {outcome.asked.line}): {outcome.refusal}")


def _h(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


__all__ = [
    "BORROWING_MODES",
    "MIG_MODES",
    "POLICIES",
    "RECLAIMS",
    "configure",
    "load_setting",
    "mig_setups",
    "policies",
    "run",
]
