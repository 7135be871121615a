# ds01 developer targets. Run as root on the build machine (Debian 12); see docs/contributing.md.
#
#   make setup   Docker engine + world-readable install in $(VENV), commands in /usr/local/bin
#   make images  offline test images (ds01-test/busybox, ds01-test/busybox-alt, the JupyterLab
#                image), JupyterHub, its proxy, Chromium and Playwright for the hub's tests
#   make slurm   Debian's Slurm, munge and MariaDB packages for the test cluster
#                (scripts/slurm-cluster.sh starts it from the tests)
#   make test    setup + images + slurm + the whole pytest suite (scripts/run-tests.sh;
#                PYTEST_ARGS='-k quota' runs one pytest with those arguments instead)
#   make lint    ruff + mypy
#   make demo    setup + images + scripts/demo.sh (two users sharing simulated GPUs)
#   make bench   setup + images + every benchmarks/bench_*.py
#   make clean   remove the demo's state, containers and users
#   make help-page  rewrite src/ds01/cli/kept_pages.py (the --help pages) from the live parsers

SHELL := /bin/bash
VENV ?= /opt/ds01/venv
PYTEST_ARGS ?=
# docker/e2e tests must fail, never skip, when `make test` cannot run them.
DS01_REQUIRE_DOCKER ?= 1
export VENV DS01_REQUIRE_DOCKER

.PHONY: setup images slurm test lint demo bench clean help-page

setup:
	@bash scripts/install.sh

images:
	@bash scripts/ensure-docker.sh
	@bash scripts/build-test-images.sh
	@test -x $(VENV)/bin/python || bash scripts/install.sh
	@bash scripts/ensure-jupyterhub.sh

slurm:
	@bash scripts/ensure-slurm.sh

test: setup images slurm
	@bash scripts/run-tests.sh $(PYTEST_ARGS)

lint:
	@test -x $(VENV)/bin/ruff || bash scripts/install.sh
	@rc=0; \
	$(VENV)/bin/ruff check . || rc=1; \
	$(VENV)/bin/mypy || rc=1; \
	exit $$rc

demo: setup images
	@bash scripts/demo.sh

bench: setup images
	@set -e; shopt -s nullglob; files=(benchmarks/bench_*.py); \
	if [ $${#files[@]} -eq 0 ]; then echo "make bench: no benchmarks/bench_*.py" >&2; exit 1; fi; \
	for f in "$${files[@]}"; do echo "== $$f"; $(VENV)/bin/python "$$f"; done

help-page:
	@PYTHONPATH=src $(VENV)/bin/python -m ds01.cli.help_record > src/ds01/cli/kept_pages.py.new
	@mv src/ds01/cli/kept_pages.py.new src/ds01/cli/kept_pages.py

clean:
	@bash scripts/demo.sh clean
