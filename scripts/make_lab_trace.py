#!/usr/bin/env python3
"""Write the synthetic lab-week trace for ``ds01 simulate`` (deterministic: fixed seed).

A week (168 hours from Monday 00:00) on a 4-GPU lab server:

- 14 students, busy on weekdays from 9 to 19 h and light at weekends: short jobs on a MIG
  slice (mostly 1g.5gb) or on one whole GPU, and a quarter of them leave a notebook
  open for hours afterwards (a forgotten idle tail);
- 4 PhD students with long two-GPU training runs (10 to 24 hours) and some one-GPU jobs;
- 2 faculty members with a few one-GPU jobs on weekdays.

With ``--sweeps``, the same week plus, on Friday and Saturday evening, a sweep of each PhD
student: three one-GPU jobs of 3 to 6 hours submitted together between 19 and 22 h, one
more GPU than their quota of two (the workload borrowing above quota is for; the jobs of
the plain week are the same, drawn first from the same seed).

With ``--deadline-sweeps``, the same week plus three students' deadline sweeps: on Friday,
Saturday and Sunday evening one student each (student03, student08, student12) submits
eight one-GPU jobs of 1 to 2.5 hours together between 20 and 22 h, on a quota of one GPU,
when the lab is otherwise quiet (a hyper-parameter sweep before a Monday deadline: the
workload where a quota keeps a user off GPUs nobody uses). The jobs of the plain week are
the same, drawn first from the same seed.

With ``--night-evals``, the same week plus a night-time batch of evaluations on every
weeknight: from Monday to Friday, between 22 and 23 h, one PhD student in turn (phd1,
phd2, phd3, phd4, then phd1 again) submits four one-GPU evaluation jobs of 1 to 3 hours
together, on a quota of two GPUs (checkpoints of the day evaluated overnight: two jobs run
within the quota, two wait for it, or borrow). The jobs of the plain week are the same,
drawn first from the same seed.

Usage (from the repository root)::

    python scripts/make_lab_trace.py > examples/traces/lab-week.csv
    python scripts/make_lab_trace.py --sweeps > examples/traces/lab-week-sweeps.csv
    python scripts/make_lab_trace.py --deadline-sweeps \
        > examples/traces/lab-week-deadline-sweeps.csv
    python scripts/make_lab_trace.py --night-evals > examples/traces/lab-week-night-evals.csv

Only the standard library is used, so the same seed gives the same file on any machine.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import sys
from collections.abc import Iterator
from typing import NamedTuple

SEED = 2026
STUDENTS = 14
PHD_STUDENTS = 4
FACULTY = 2
WEEKDAYS = range(5)
WEEKEND = range(5, 7)
HOURS_PER_DAY = 24


class Job(NamedTuple):
    submit_hours: float
    user: str
    group: str
    gpus: int
    mig: str
    duration_hours: float
    idle_tail_hours: float


def _idle_tail(rng: random.Random, forgotten: float, longest: float) -> float:
    """Usually a few minutes; with probability ``forgotten``, up to ``longest`` hours."""
    if rng.random() < forgotten:
        return rng.uniform(1.0, longest)
    return rng.uniform(0.0, 0.25)


def _student_job(rng: random.Random, user: str, day: int) -> Job:
    kind = rng.choices(("1g.5gb", "2g.10gb", "3g.20gb", "gpu"), weights=(45, 15, 10, 30))[0]
    # Median 1.2 h, rarely more than 5 h.
    duration = min(6.0, max(0.25, rng.lognormvariate(math.log(1.2), 0.6)))
    return Job(
        submit_hours=day * HOURS_PER_DAY + rng.uniform(9.0, 19.0),
        user=user,
        group="students",
        gpus=1 if kind == "gpu" else 0,
        mig="" if kind == "gpu" else kind,
        duration_hours=duration,
        idle_tail_hours=_idle_tail(rng, forgotten=0.25, longest=14.0),
    )


def students(rng: random.Random) -> Iterator[Job]:
    for number in range(1, STUDENTS + 1):
        user = f"student{number:02d}"
        for day in WEEKDAYS:
            for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
                yield _student_job(rng, user, day)
        for day in WEEKEND:
            if rng.random() < 0.2:
                yield _student_job(rng, user, day)


def phd_students(rng: random.Random) -> Iterator[Job]:
    for number in range(1, PHD_STUDENTS + 1):
        user = f"phd{number}"
        for _ in range(2):  # long two-GPU training runs, any day
            yield Job(
                submit_hours=rng.randrange(6) * HOURS_PER_DAY + rng.uniform(8.0, 22.0),
                user=user,
                group="phd",
                gpus=2,
                mig="",
                duration_hours=rng.uniform(10.0, 24.0),
                idle_tail_hours=_idle_tail(rng, forgotten=0.3, longest=10.0),
            )
        for _ in range(rng.choice((1, 2, 3))):  # evaluation and debugging on one GPU
            yield Job(
                submit_hours=rng.choice(WEEKDAYS) * HOURS_PER_DAY + rng.uniform(9.0, 20.0),
                user=user,
                group="phd",
                gpus=1,
                mig="",
                duration_hours=rng.uniform(2.0, 8.0),
                idle_tail_hours=_idle_tail(rng, forgotten=0.2, longest=6.0),
            )


def faculty(rng: random.Random) -> Iterator[Job]:
    for number in range(1, FACULTY + 1):
        for _ in range(rng.choice((2, 3))):
            yield Job(
                submit_hours=rng.choice(WEEKDAYS) * HOURS_PER_DAY + rng.uniform(8.0, 18.0),
                user=f"prof{number}",
                group="faculty",
                gpus=1,
                mig="",
                duration_hours=rng.uniform(1.0, 5.0),
                idle_tail_hours=_idle_tail(rng, forgotten=0.1, longest=4.0),
            )


SWEEP_JOBS = 3
#: Friday and Saturday evenings (every weekday evening saturates the server: see
#: docs/simulation.md).
SWEEP_DAYS = (4, 5)


def sweeps(rng: random.Random) -> Iterator[Job]:
    for number in range(1, PHD_STUDENTS + 1):
        for day in SWEEP_DAYS:
            submit = day * HOURS_PER_DAY + rng.uniform(19.0, 22.0)
            for _ in range(SWEEP_JOBS):
                yield Job(
                    submit_hours=submit,
                    user=f"phd{number}",
                    group="phd",
                    gpus=1,
                    mig="",
                    duration_hours=rng.uniform(3.0, 6.0),
                    idle_tail_hours=rng.uniform(0.0, 0.25),
                )


#: The students with a deadline sweep, and the evening (day of the week) of each.
DEADLINE_SWEEPS = (("student03", 4), ("student08", 5), ("student12", 6))
DEADLINE_SWEEP_JOBS = 8


def deadline_sweeps(rng: random.Random) -> Iterator[Job]:
    for user, day in DEADLINE_SWEEPS:
        yield from one_gpu_batch(
            rng, user, "students", day, (20.0, 22.0), DEADLINE_SWEEP_JOBS, (1.0, 2.5)
        )


NIGHT_EVAL_JOBS = 4


def night_evals(rng: random.Random) -> Iterator[Job]:
    for day in WEEKDAYS:
        user = f"phd{day % PHD_STUDENTS + 1}"
        yield from one_gpu_batch(rng, user, "phd", day, (22.0, 23.0), NIGHT_EVAL_JOBS, (1.0, 3.0))


def one_gpu_batch(
    rng: random.Random,
    user: str,
    group: str,
    day: int,
    submit_hours: tuple[float, float],
    jobs: int,
    duration_hours: tuple[float, float],
) -> Iterator[Job]:
    """``jobs`` one-GPU jobs of ``user`` submitted together on ``day``, at an hour drawn from
    ``submit_hours``, each running a time drawn from ``duration_hours``."""
    submit = day * HOURS_PER_DAY + rng.uniform(*submit_hours)
    for _ in range(jobs):
        yield Job(
            submit_hours=submit,
            user=user,
            group=group,
            gpus=1,
            mig="",
            duration_hours=rng.uniform(*duration_hours),
            idle_tail_hours=rng.uniform(0.0, 0.25),
        )


def lab_week(
    seed: int,
    *,
    with_sweeps: bool = False,
    with_deadline_sweeps: bool = False,
    with_night_evals: bool = False,
) -> list[Job]:
    """Every job of the week, in submission order (``with_sweeps``: the PhD students'
    evening sweeps too; ``with_deadline_sweeps``: the students' deadline sweeps too;
    ``with_night_evals``: the PhD students' night-time evaluations too)."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible workload, not a secret
    jobs = [*students(rng), *phd_students(rng), *faculty(rng)]
    if with_sweeps:
        jobs += sweeps(rng)
    if with_deadline_sweeps:
        jobs += deadline_sweeps(rng)
    if with_night_evals:
        jobs += night_evals(rng)
    return sorted(jobs, key=lambda job: (job.submit_hours, job.user))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed [{SEED}]")
    parser.add_argument(
        "--sweeps", action="store_true", help="add the PhD students' evening sweeps"
    )
    parser.add_argument(
        "--deadline-sweeps",
        action="store_true",
        help="add three students' weekend deadline sweeps (8 one-GPU jobs each, quota 1)",
    )
    parser.add_argument(
        "--night-evals",
        action="store_true",
        help="add a PhD student's night-time evaluations every weeknight (4 one-GPU jobs, quota 2)",
    )
    args = parser.parse_args()
    out = sys.stdout
    variant = " with evening sweeps" if args.sweeps else ""
    variant += " with students' deadline sweeps" if args.deadline_sweeps else ""
    variant += " with night-time evaluations" if args.night_evals else ""
    out.write(
        f"# Synthetic lab week{variant} for "
        f"`ds01 simulate` (seed {args.seed}); generated by\n"
        "# scripts/make_lab_trace.py, which describes the workload. Limits: the\n"
        "# resource-limits.yaml next to this file.\n"
    )
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(Job._fields)
    for job in lab_week(
        args.seed,
        with_sweeps=args.sweeps,
        with_deadline_sweeps=args.deadline_sweeps,
        with_night_evals=args.night_evals,
    ):
        writer.writerow(
            [
                f"{job.submit_hours:.2f}",
                job.user,
                job.group,
                job.gpus,
                job.mig,
                f"{job.duration_hours:.2f}",
                f"{job.idle_tail_hours:.2f}",
            ]
        )


if __name__ == "__main__":
    main()
