#!/usr/bin/env bash
# Install what scripts/slurm-cluster.sh needs from Debian 12's packages: munge, mariadb-server,
# slurmdbd, slurmctld, slurmd, slurm-client (Slurm 22.05). Idempotent; one dpkg query when
# everything is there. Run as root (`make test` does, and `slurm-cluster.sh up`).
#
# The packages' own services are kept from starting while they install (a policy-rc.d that
# denies every start, only if the machine has none, removed afterwards): the test cluster runs
# its own daemons on its own files.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(munge mariadb-server slurmdbd slurmctld slurmd slurm-client)
POLICY=/usr/sbin/policy-rc.d

if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-slurm.sh: must run as root" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

log=$(mktemp /tmp/ds01-ensure-slurm.XXXXXX.log)
own_policy=0
cleanup() {
  [ "$own_policy" -eq 1 ] && rm -f "$POLICY"
  rm -f "$log"
}
trap cleanup EXIT
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$POLICY"
  chmod 755 "$POLICY"
  own_policy=1
fi

install() { apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$log" 2>&1; }
if ! install && ! { apt-get update -qq >>"$log" 2>&1 && install; }; then
  echo "ensure-slurm.sh: failed: apt-get install ${missing[*]}" >&2
  tail -n 40 "$log" >&2
  exit 1
fi
