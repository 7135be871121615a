"""What checking a Dockerfile's base images costs an ``image-build`` request.

ds01d reads base images with BuildKit's parser in a child process
(``ds01.runtime.dockerfile_parser.parse_isolated``), so that a crash of the Go code cannot
take the daemon down. Measured, medians over the rounds:

- ``in process``: ``base_references`` with the parser loaded in this process;
- ``child process``: the same as ds01d runs it (one interpreter start per check);
- for a typical multi-stage Dockerfile (23 lines) and for the slowest file ds01 lets
  through: 1 MiB of words just under ``MAX_WORD_CHARS`` (the parser's time grows with the
  square of a word's length; longer words are refused before parsing).

No Docker needed. Timings are reported, never asserted.

Usage: ``/opt/ds01/venv/bin/python benchmarks/bench_dockerfile_check.py [--rounds N]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from ds01.core.dockerfile_bases import MAX_WORD_CHARS, base_references, parse_in_process
from ds01.runtime.dockerfile_parser import parse_isolated
from quick import parse_args

TYPICAL = """\
# escape=\\
ARG BASE=aimehub/pytorch-2.8.0-cuda12.6.3
ARG TAG=latest
FROM ${BASE}:${TAG} AS build
ENV PIP_NO_CACHE_DIR=1 \\
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \\
 && apt-get install -y --no-install-recommends git build-essential \\
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
RUN python -m build --wheel
FROM ${BASE}:${TAG}
LABEL org.opencontainers.image.title="thesis"
COPY --from=build /src/dist/*.whl /tmp/
RUN pip install /tmp/*.whl && rm /tmp/*.whl
RUN useradd -m runner
USER runner
WORKDIR /workspace
EXPOSE 8888
CMD ["jupyter", "lab", "--ip=0.0.0.0"]
"""
SLOWEST = "FROM scratch\n" + ("LABEL a=" + "x" * (MAX_WORD_CHARS - 2) + "\n") * (
    1024**2 // (MAX_WORD_CHARS + 8)
)


def median_ms(function: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    rounds = parse_args(parser, {"rounds": 1}).rounds
    print(f"{'Dockerfile':<28} {'in process':>12} {'child process':>14}")
    for name, text in (("typical (23 lines)", TYPICAL), ("slowest allowed (1 MiB)", SLOWEST)):
        inside = median_ms(lambda t=text: base_references(t, parse=parse_in_process), rounds)
        child = median_ms(lambda t=text: base_references(t, parse=parse_isolated), rounds)
        print(f"{name:<28} {inside:>10.1f} ms {child:>11.1f} ms")


if __name__ == "__main__":
    main()
