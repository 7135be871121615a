#!/usr/bin/env bash
# Install (Debian's docker.io) and start a Docker engine if none answers.
# Safe to run repeatedly; used by `make setup`, `make test` and .ci/run.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! command -v dockerd >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi
# ds01d's firewall rules for users' networks need iptables (docker.io depends on it too).
if ! command -v iptables >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends iptables >/dev/null
fi
if docker info >/dev/null 2>&1; then
  exit 0
fi
pid=$(cat /var/run/docker.pid 2>/dev/null || true)
if [ -n "$pid" ] && { [ ! -d "/proc/$pid" ] || grep -q '^State:.*Z' "/proc/$pid/status"; }; then
  rm -f /var/run/docker.pid
fi
# dockerd outlives this script: it must not inherit any other descriptor (a lock held by
# the caller, e.g. the test-machine lock, would stay held for as long as dockerd runs).
nohup dockerd </dev/null >/var/log/dockerd.log 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
for _ in $(seq 1 300); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 0.1
done
tail -50 /var/log/dockerd.log >&2
echo "ensure-docker: dockerd did not come up" >&2
exit 1
