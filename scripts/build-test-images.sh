#!/usr/bin/env bash
# Build the images the tests, demo and benchmarks use, offline (no registry is reachable).
#
#   ds01-test/busybox:latest      ~2 MB: Debian's busybox-static with its applets
#                                 (sh, sleep, ps, top, nc, wget, dd, ...), PATH=/bin
#   ds01-test/busybox-alt:latest  the same image under a second name, for image-policy tests
#
#   ds01-test/python, ds01-test/jupyter   see scripts/build-jupyter-image.sh
#
# and installs the Debian packages tests need: docker-registry (a local registry for the
# image-pull test), prometheus (a real Prometheus server for the exporter test; promtool for
# the rules), git (project-init's repository), systemd (systemd-analyze checks ds01d's
# unit) and docker-compose (1.29, on docker-py: tests/e2e/test_docker_api.py). Under
# `make test` those tests fail, never skip, without them.
#
# Idempotent: an existing image is kept unless FORCE=1. Prints the image names.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

IMAGE=ds01-test/busybox:latest
ALT=ds01-test/busybox-alt:latest

have() { docker image inspect "$1" >/dev/null 2>&1; }

if [ "${FORCE:-0}" = 1 ] || ! have "$IMAGE"; then
  work=$(mktemp -d /tmp/ds01-images.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  cd "$work"
  if ! apt-get download busybox-static >apt.log 2>&1; then
    # The package lists may be missing on a fresh machine.
    apt-get update -qq >>apt.log 2>&1 || true
    apt-get download busybox-static >>apt.log 2>&1 || {
      cat apt.log >&2
      echo "build-test-images: cannot download busybox-static" >&2
      exit 1
    }
  fi
  dpkg -x busybox-static_*.deb pkg
  mkdir -p root/bin root/etc root/tmp root/root root/home root/proc root/sys root/dev
  chmod 1777 root/tmp
  chmod 700 root/root
  cp pkg/bin/busybox root/bin/busybox
  for applet in $(root/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "root/bin/$applet"
  done
  cat >root/etc/passwd <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
  cat >root/etc/group <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
  tar -C root --numeric-owner --owner=0 --group=0 -c . |
    docker import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin' - "$IMAGE" >/dev/null
fi

# (Re)tag the second name whenever it does not point at the same image.
if [ "$(docker image inspect -f '{{.Id}}' "$ALT" 2>/dev/null || true)" != \
  "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ]; then
  docker tag "$IMAGE" "$ALT"
fi

# install_for PACKAGE COMMAND...: install Debian's PACKAGE unless every COMMAND is on PATH.
install_for() {
  local package=$1 command
  shift
  for command in "$@"; do
    command -v "$command" >/dev/null 2>&1 && continue
    apt-get install -y -qq --no-install-recommends "$package" >/dev/null 2>&1 || {
      apt-get update -qq >/dev/null 2>&1 || true
      apt-get install -y -qq --no-install-recommends "$package" >/dev/null
    }
    return
  done
}

install_for docker-registry docker-registry  # a registry on 127.0.0.1 for the image-pull test
install_for prometheus prometheus promtool  # the exporter test scrapes ds01d with a real server
install_for git git                          # tests/unit/test_project_init.py
install_for systemd systemd-analyze          # tests/unit/test_deploy_files.py
install_for docker-compose docker-compose    # a compose project on the Docker API door

echo "$IMAGE"
echo "$ALT"

# The JupyterLab starter image (and its Debian + Python base).
bash "$here/build-jupyter-image.sh"
