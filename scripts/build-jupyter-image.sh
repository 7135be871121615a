#!/usr/bin/env bash
# Build the JupyterLab starter image offline (no container registry is reachable here):
#
#   ds01-test/python:latest   ~125 MB: Debian 12 (debootstrap minbase) with python3 and venv
#   ds01-test/jupyter:latest  ~400 MB: that + JupyterLab, ipykernel and JupyterHub's
#                             jupyterhub-singleuser in /opt/venv, from wheels downloaded on
#                             the host; labelled ds01.jupyter.port=8888, so ds01 publishes it
#                             on 127.0.0.1 with a token of its own (or, started by the
#                             JupyterHub spawner, behind the hub's login)
#
# `user-setup` starts this image as the user's first container (images.yaml: `starter: true`).
# Idempotent: existing images are kept unless FORCE=1 (a JupyterLab image of another recipe,
# its label org.ds01-test.jupyter-recipe not RECIPE, is built again; not a ds01.* label, which
# an image users build on may not carry). About 80 s on a fresh machine.
#
# The image leaves out rfc3987-syntax (pulled in by jupyter-events through
# jsonschema[format-nongpl]): it builds a grammar's parser when it is imported, which cost
# every JupyterLab start here 2 s (4 s on a busy 2-core machine) for jsonschema's "iri"
# format check, which nothing in JupyterLab uses (jsonschema skips a check whose library is
# missing; python-jsonschema/jsonschema#1392).
#
# Environment: PIP (a pip that can download wheels; default $VENV/bin/pip, else a temporary
# venv made with /usr/bin/python3).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

PYTHON_IMAGE=ds01-test/python:latest
JUPYTER_IMAGE=ds01-test/jupyter:latest
SUITE=bookworm  # Python 3.11, the same as the host's, so host-downloaded wheels fit
MIRROR=http://deb.debian.org/debian

have() { docker image inspect "$1" >/dev/null 2>&1; }
# The JupyterLab image's recipe: 2 = jupyterhub-singleuser for the spawner, 3 = without
# rfc3987-syntax.
RECIPE=3
current() {
  [ "$(docker image inspect -f '{{index .Config.Labels "org.ds01-test.jupyter-recipe"}}' "$1" 2>/dev/null)" = "$RECIPE" ]
}

work=$(mktemp -d /tmp/ds01-jupyter.XXXXXX)
trap 'rm -rf "$work"' EXIT
log=$work/build.log

fail() {
  tail -n 40 "$log" >&2 || true
  echo "build-jupyter-image: $*" >&2
  exit 1
}

apt_install() {
  apt-get install -y -qq --no-install-recommends "$@" >>"$log" 2>&1 || {
    apt-get update -qq >>"$log" 2>&1 || true
    apt-get install -y -qq --no-install-recommends "$@" >>"$log" 2>&1
  }
}

if [ "${FORCE:-0}" = 1 ] || ! have "$PYTHON_IMAGE"; then
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap || fail "cannot install debootstrap"
  root=$work/root
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$root" "$MIRROR" >>"$log" 2>&1 || fail "debootstrap failed"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
  tar -C "$root" --numeric-owner -c . |
    docker import -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' -c 'CMD ["/bin/bash"]' \
      - "$PYTHON_IMAGE" >/dev/null
  rm -rf "$root"
fi

if [ "${FORCE:-0}" = 1 ] || ! current "$JUPYTER_IMAGE"; then
  pip=${PIP:-}
  if [ -z "$pip" ]; then
    if [ -x "${VENV:-/opt/ds01/venv}/bin/pip" ]; then
      pip=${VENV:-/opt/ds01/venv}/bin/pip
    else
      /usr/bin/python3 -m venv "$work/venv" >>"$log" 2>&1 || fail "cannot make a venv for pip"
      pip=$work/venv/bin/pip
    fi
  fi
  context=$work/context
  mkdir -p "$context/wheels"
  "$pip" download -q --only-binary=:all: -d "$context/wheels" jupyterlab ipykernel 'jupyterhub>=5,<6' \
    >>"$log" 2>&1 || fail "cannot download the JupyterLab wheels"
  cat >"$context/Dockerfile" <<EOF
FROM $PYTHON_IMAGE
COPY wheels /tmp/wheels
RUN python3 -m venv /opt/venv \\
 && /opt/venv/bin/pip install --no-index --no-cache-dir --find-links /tmp/wheels jupyterlab ipykernel jupyterhub \\
 && /opt/venv/bin/pip uninstall -q -y rfc3987-syntax lark \\
 && rm -rf /tmp/wheels
# Jupyter's sockets stay out of the user's workspace (HOME is /workspace in ds01 containers).
ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin JUPYTER_RUNTIME_DIR=/tmp/jupyter-runtime
WORKDIR /workspace
# ds01 publishes this port on 127.0.0.1 and sets JUPYTER_TOKEN, which Jupyter Server reads.
LABEL ds01.jupyter.port="8888" ds01.jupyterhub="singleuser" org.ds01-test.jupyter-recipe="$RECIPE" org.opencontainers.image.title="JupyterLab starter"
EXPOSE 8888
CMD ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", "--ServerApp.root_dir=/workspace"]
EOF
  docker build -q -t "$JUPYTER_IMAGE" "$context" >>"$log" 2>&1 || fail "docker build failed"
fi

echo "$PYTHON_IMAGE"
echo "$JUPYTER_IMAGE"
