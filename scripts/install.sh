#!/usr/bin/env bash
# Install ds01 for every user of this machine. Idempotent and quiet unless something fails.
#
#   1. a Docker engine (scripts/ensure-docker.sh);
#   2. a virtual environment at $VENV (default /opt/ds01/venv) made with Debian's
#      /usr/bin/python3, world-readable, so that Unix users other than root can run it
#      (root's own python may live under /root, which they cannot reach);
#   3. the package installed from this checkout, NOT editable (the checkout may itself be
#      unreadable to other users): the first run installs '.[dev]' with its dependencies,
#      later runs only reinstall the package so that source changes are picked up
#      (dependencies are installed again whenever pyproject.toml changes);
#   4. every console script of [project.scripts] linked into $BIN_DIR (default /usr/local/bin).
#
# Environment: VENV, BIN_DIR, PYTHON (default /usr/bin/python3).
set -euo pipefail
umask 022

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-/opt/ds01/venv}
BIN_DIR=${BIN_DIR:-/usr/local/bin}
PYTHON=${PYTHON:-/usr/bin/python3}
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

log=$(mktemp /tmp/ds01-install.XXXXXX.log)
src=$(mktemp -d /tmp/ds01-src.XXXXXX)
trap 'rm -rf "$log" "$src"' EXIT

# Run a command with its output captured; show the output only if it fails.
quiet() {
  if ! "$@" >>"$log" 2>&1; then
    echo "install.sh: failed: $*" >&2
    tail -n 60 "$log" >&2
    exit 1
  fi
}

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: must run as root (it installs packages, $VENV and links in $BIN_DIR)" >&2
  exit 1
fi

quiet "$repo/scripts/ensure-docker.sh"

# A test session with docker/e2e tests holds this lock (tests/support.py MACHINE_LOCK):
# reinstalling $VENV under its feet would break it, so wait for it to end. Taken after
# ensure-docker.sh, so that a dockerd started there cannot inherit it.
if [ "${DS01_MACHINE_LOCK_HELD:-0}" != 1 ]; then
  exec 9>>/tmp/ds01-tests.lock
  flock 9
fi

# --- virtual environment -------------------------------------------------------------------
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  if ! "$PYTHON" -m venv "$VENV" >>"$log" 2>&1; then
    # Debian ships venv/ensurepip in a separate package.
    rm -rf "$VENV"
    quiet apt-get update -qq
    quiet apt-get install -y -qq --no-install-recommends python3-venv
    quiet "$PYTHON" -m venv "$VENV"
  fi
fi

# --- the package ---------------------------------------------------------------------------
# Build from a clean copy of the checkout: setuptools keeps build/ between builds and would
# ship modules deleted from src/ since; a copy also leaves the checkout untouched.
tar -C "$repo" --exclude=./.git --exclude=./.venv --exclude=./.demo --exclude=./build \
  --exclude=./dist --exclude='*.egg-info' --exclude=__pycache__ --exclude=.mypy_cache \
  --exclude=.ruff_cache --exclude=.pytest_cache --exclude=.hypothesis -cf - . |
  tar -C "$src" -xf -
[ -f "$src/README.md" ] || echo "ds01" >"$src/README.md" # pyproject names it as the readme

stamp="$VENV/.ds01-pyproject.sha256"
want=$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1)
have=$(cat "$stamp" 2>/dev/null || true)
if [ "$want" != "$have" ] || ! "$VENV/bin/python" -c 'import ds01, pytest' >/dev/null 2>&1; then
  # A recent setuptools in the venv lets every build skip build isolation (no download).
  quiet "$VENV/bin/python" -m pip install -q 'setuptools>=68' wheel
  quiet "$VENV/bin/python" -m pip install -q --no-build-isolation "$src[dev]"
  echo "$want" >"$stamp"
fi
# Always reinstall the package itself (not its dependencies) so the venv runs this source.
quiet "$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps --force-reinstall "$src"

chmod -R a+rX "$(dirname "$VENV")"

# --- console scripts on PATH ---------------------------------------------------------------
scripts=$("$VENV/bin/python" - "$repo/pyproject.toml" <<'PY'
import re
import sys

text = open(sys.argv[1], encoding="utf-8").read()
try:
    import tomllib
except ImportError:  # Python 3.10: read the one table by hand
    table = re.search(r"^\[project\.scripts\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    names = re.findall(r'^\s*"?([A-Za-z0-9_.-]+)"?\s*=', table.group(1) if table else "", re.M)
else:
    names = list(tomllib.loads(text)["project"].get("scripts", {}))
print("\n".join(names))
PY
)
mkdir -p "$BIN_DIR"
for name in $scripts; do
  if [ ! -x "$VENV/bin/$name" ]; then
    echo "install.sh: $VENV/bin/$name was not installed" >&2
    exit 1
  fi
  ln -sfn "$VENV/bin/$name" "$BIN_DIR/$name"
done
