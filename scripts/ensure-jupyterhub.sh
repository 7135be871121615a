#!/usr/bin/env bash
# Install what the JupyterHub tests need, into $VENV and the system. Idempotent; quick (a few
# checks) when everything is there already. Run as root (`make test` does, after setup).
#
#   1. JupyterHub: the requirements of ds01's `jupyterhub` extra (pyproject.toml), into $VENV;
#   2. configurable-http-proxy, JupyterHub's proxy, from npm (`npm install -g`);
#   3. Debian's chromium, a headless browser for the browser tests;
#   4. Playwright for Python, which drives that chromium (/usr/bin/chromium): the tests never
#      run `playwright install`, nothing is downloaded at test time;
#   5. rfc3987-syntax removed from $VENV again (below: it slows every start of the hub).
#
# Environment: VENV (default /opt/ds01/venv).
set -euo pipefail
umask 022
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-/opt/ds01/venv}
log=$(mktemp /tmp/ds01-jupyterhub.XXXXXX.log)
trap 'rm -f "$log"' EXIT

quiet() {
  if ! "$@" >>"$log" 2>&1; then
    echo "ensure-jupyterhub.sh: failed: $*" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}

if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-jupyterhub.sh: must run as root" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "ensure-jupyterhub.sh: no ds01 install in $VENV: run scripts/install.sh first" >&2
  exit 1
fi

# 1 and 4: Python packages.
if ! "$VENV/bin/python" -c 'import jupyterhub, playwright' >/dev/null 2>&1; then
  mapfile -t extra < <("$VENV/bin/python" - "$repo/pyproject.toml" <<'PY'
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["jupyterhub"]))
PY
  )
  quiet "$VENV/bin/python" -m pip install -q "${extra[@]}" 'playwright>=1.40,<2'
  chmod -R a+rX "$VENV"
fi
# Not rfc3987-syntax (jupyter-events pulls it in through jsonschema[format-nongpl]): it builds
# a grammar's parser when imported, which cost every start of the hub 2 s (5 s on a busy
# 2-core machine), for jsonschema's "iri" format check, which the hub never uses (jsonschema
# skips a check whose library is missing). The JupyterLab image leaves it out too
# (scripts/build-jupyter-image.sh).
if "$VENV/bin/python" -c 'import rfc3987_syntax' >/dev/null 2>&1; then
  quiet "$VENV/bin/python" -m pip uninstall -q -y rfc3987-syntax lark
fi

apt_install() {
  quiet apt-get install -y -qq --no-install-recommends "$@" || {
    quiet apt-get update -qq
    quiet apt-get install -y -qq --no-install-recommends "$@"
  }
}

# 2: the proxy (Node.js and npm from Debian if missing).
if ! command -v configurable-http-proxy >/dev/null 2>&1; then
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  quiet npm install -g --no-fund --no-audit configurable-http-proxy
fi

# 3: the browser.
if [ ! -x /usr/bin/chromium ]; then
  apt_install chromium
fi
