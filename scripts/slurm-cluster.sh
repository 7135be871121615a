#!/usr/bin/env bash
# A real Slurm cluster on this one machine, for ds01's tests: `up` and `down`.
#
#   scripts/slurm-cluster.sh up     install what is missing, start what is not running,
#                                   print `export NAME=value` lines (and nothing else on stdout)
#   scripts/slurm-cluster.sh down   stop everything `up` started, remove its state directory
#                                   and the nodes' cgroups
#
# `up` is idempotent: run again on a running cluster it changes nothing and prints the same
# lines: SLURM_CONF (every Slurm command, and ds01's, finds the cluster through it; any user
# can read it and reach munge), DS01_SLURM_CLUSTER (the cluster's name), DS01_SLURM_DIR
# (its state: fake devices in dev/<node>/, logs in log/) and DS01_CLUSTER=slurm (ds01's views
# show the whole cluster, as on a login node). What it runs, all as root, all under
# $DS01_SLURM_DIR (default /var/lib/ds01-slurm-test), nothing in the machine's /etc or /run:
#
#   munged     a key made here, its socket in $DIR/munge (slurm.conf's AuthInfo names it)
#   mariadbd   a data directory of its own, 127.0.0.1:$DS01_SLURM_DB_PORT, no unix socket shared
#   slurmdbd   accounting (the database above), port 36819
#   slurmctld  cluster `ds01test`, port 36817
#   slurmd     two nodes, `node1` and `node2`, on this host (Debian's build has slurmd's
#              multiple-slurmd support: `slurmd -N NAME`, one port each, 36818 and 36828)
#
# Jobs run in cgroups (proctrack/cgroup, task/cgroup, cgroup v1: /slurm_<node>/uid_<uid>/job_<id>
# in each hierarchy) with their memory (--mem, 100 MB per CPU by default) as the limit.
#
# Each node has GRES `gpu` entries backed by character devices in $DIR/dev/<node>/
# (`mknod c 195 N`, like tests' fake_gpu_nodes; never the real /dev): node1 two whole GPUs,
# node2 four (NODES below), the simulated ds01 inventory of the tests.
#
# Debian 12's packages are installed first if missing (scripts/ensure-slurm.sh, which
# `make test` runs too).
#
# Environment: DS01_SLURM_DIR, DS01_SLURM_DB_PORT (default 36306).
set -euo pipefail
umask 022

DIR=${DS01_SLURM_DIR:-/var/lib/ds01-slurm-test}
DB_PORT=${DS01_SLURM_DB_PORT:-36306}
CLUSTER=ds01test
CTLD_PORT=36817
DBD_PORT=36819
# node name, slurmd port, GPUs (fake devices nvidia0..N-1 in $DIR/dev/<node>)
NODES=("node1 36818 2" "node2 36828 4")

# What the commands of `up` print (in the state directory: `down` removes it).
log_file=$DIR/log/up.log

say() { echo "slurm-cluster.sh: $*" >&2; }
die() {
  say "$*"
  exit 1
}

quiet() {
  if ! "$@" >>"$log_file" 2>&1; then
    say "failed: $*"
    tail -n 40 "$log_file" >&2
    exit 1
  fi
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.1 s until it succeeds.
wait_for() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "$what did not come up within ${seconds}s; its log:"
      tail -n 30 "$DIR/log/$what.log" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.1
  done
}

# running NAME: the pid in $DIR/run/NAME.pid is alive. A daemon killed by a signal (a test's
# kill -9 of a node's slurmd) whose parent does not reap it stays a zombie: not running.
running() {
  local pid state
  pid=$(cat "$DIR/run/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

write_configs() {
  local conf=$DIR/etc/slurm.conf gres=$DIR/etc/gres.conf node name port gpus i
  mkdir -p "$DIR"/{etc,run,log,munge,spool,dev} "$DIR/spool/ctld"
  chmod 0755 "$DIR" "$DIR/etc" "$DIR/dev"
  cat >"$conf.new" <<EOF
# Written by ds01's scripts/slurm-cluster.sh: a test cluster on one machine.
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
# A submitted batch job (a container's) is scheduled at slurmctld's next 1-second tick, not up
# to 3 s (batch_sched_delay's default) after the last scheduling pass: docs/cluster.md.
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
GresTypes=gpu
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
PriorityType=priority/multifactor
# ds01's priority (the QOS's) outweighs recent usage (fair share, Fair Tree): 10000 x priority
# / the highest against at most 2000 (docs/cluster.md). Usage is applied, and the fair-share
# factors computed, once per PriorityCalcPeriod: a minute, Slurm's least (the tests' fair-share
# check waits for that pass).
PriorityWeightQOS=10000
PriorityWeightFairshare=2000
PriorityDecayHalfLife=7-0
PriorityCalcPeriod=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStorageEnforce=associations,limits,qos
AccountingStorageTRES=gres/gpu
# The munge socket for connections to slurmdbd (AuthInfo covers the others).
AccountingStoragePass=$DIR/munge/munge.socket
EOF
  : >"$gres.new"
  for node in "${NODES[@]}"; do
    read -r name port gpus <<<"$node"
    mkdir -p "$DIR/dev/$name" "$DIR/spool/$name"
    chmod 0755 "$DIR/dev/$name"
    for ((i = 0; i < gpus; i++)); do
      [ -c "$DIR/dev/$name/nvidia$i" ] || mknod -m 0666 "$DIR/dev/$name/nvidia$i" c 195 "$i"
    done
    echo "NodeName=$name NodeHostname=localhost NodeAddr=127.0.0.1 Port=$port CPUs=2 RealMemory=1024 Gres=gpu:$gpus State=UNKNOWN" >>"$conf.new"
    echo "NodeName=$name Name=gpu File=$DIR/dev/$name/nvidia[0-$((gpus - 1))]" >>"$gres.new"
  done
  echo "PartitionName=gpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP" >>"$conf.new"
  mv "$conf.new" "$conf"
  mv "$gres.new" "$gres"
  cat >"$DIR/etc/cgroup.conf" <<EOF
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainRAMSpace=yes
ConstrainSwapSpace=no
ConstrainCores=no
ConstrainDevices=no
EOF
  cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=root
StorageLoc=slurm_acct_db
EOF
  chmod 0600 "$DIR/etc/slurmdbd.conf"
}

start_munge() {
  running munged && return 0
  chmod 0700 "$DIR/munge"
  [ -s "$DIR/munge/munge.key" ] || quiet mungekey --create --keyfile="$DIR/munge/munge.key"
  chmod 0600 "$DIR/munge/munge.key"
  # The socket's directory must be reachable by every user (their sbatch, squeue, sacctmgr).
  chmod 0755 "$DIR/munge"
  quiet munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
    --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
    --seed-file="$DIR/munge/munged.seed"
  wait_for 10 munged munge --socket="$DIR/munge/munge.socket" -n
}

start_mariadb() {
  running mariadbd && return 0
  if [ ! -d "$DIR/mysql/mysql" ]; then
    quiet mariadb-install-db --no-defaults --datadir="$DIR/mysql" --user=root \
      --auth-root-authentication-method=normal --skip-test-db
  fi
  mariadbd --no-defaults --datadir="$DIR/mysql" --user=root --bind-address=127.0.0.1 \
    --port="$DB_PORT" --socket="$DIR/run/mariadb.sock" --pid-file="$DIR/run/mariadbd.pid" \
    --log-error="$DIR/log/mariadbd.log" --skip-log-bin --innodb-buffer-pool-size=32M \
    --innodb-log-file-size=16M --innodb-flush-log-at-trx-commit=0 \
    </dev/null >>"$log_file" 2>&1 &
  wait_for 30 mariadbd mariadb --no-defaults --socket="$DIR/run/mariadb.sock" -uroot -e 'SELECT 1'
}

start_slurmdbd() {
  running slurmdbd && return 0
  # slurmdbd reads slurmdbd.conf from the directory of $SLURM_CONF.
  quiet slurmdbd
  wait_for 30 slurmdbd sacctmgr -n show cluster
}

start_slurmctld() {
  if ! running slurmctld; then
    sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER" ||
      quiet sacctmgr -i add cluster "$CLUSTER"
    quiet slurmctld
    wait_for 30 slurmctld scontrol ping
  fi
}

start_slurmds() {
  local node name port gpus
  for node in "${NODES[@]}"; do
    read -r name port gpus <<<"$node"
    running "slurmd-$name" || quiet slurmd -N "$name"
  done
  for node in "${NODES[@]}"; do
    read -r name port gpus <<<"$node"
    wait_for 30 "slurmd-$name" node_serving "$name"
  done
}

# node_serving NAME: slurmctld reports the node registered and answering (idle, or running
# jobs: `up` on a busy cluster must not wait for them); a state ending in `*` (not
# responding), down or unknown is not.
node_serving() {
  sinfo -h -n "$1" -o '%t' | grep -qxE 'idle|mix|alloc|comp'
}

up() {
  [ "$(id -u)" -eq 0 ] || die "must run as root"
  bash "$(dirname "${BASH_SOURCE[0]}")/ensure-slurm.sh"
  mkdir -p "$DIR/log"
  write_configs
  export SLURM_CONF=$DIR/etc/slurm.conf
  start_munge
  start_mariadb
  start_slurmdbd
  start_slurmctld
  start_slurmds
  echo "export SLURM_CONF=$SLURM_CONF"
  echo "export DS01_SLURM_CLUSTER=$CLUSTER"
  echo "export DS01_SLURM_DIR=$DIR"
  echo "export DS01_CLUSTER=slurm"
}

# stop SIGNAL NAME...: send SIGNAL to the pids in $DIR/run/NAME.pid, wait for them to go,
# KILL after 10 s. All at once.
stop() {
  local signal=$1 pids=() pid name i
  shift
  for name in "$@"; do
    pid=$(cat "$DIR/run/$name.pid" 2>/dev/null) || continue
    [ -n "$pid" ] && kill -s "$signal" "$pid" 2>/dev/null && pids+=("$pid")
  done
  for ((i = 0; i < 100; i++)); do
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null && break
      pids=("${pids[@]:1}")
    done
    [ ${#pids[@]} -eq 0 ] && return 0
    sleep 0.1
  done
  kill -9 "${pids[@]}" 2>/dev/null || true
}

# cancel_jobs: cancel every job of the cluster and wait (10 s at most) until none is left, so
# that no job's processes outlive their slurmd.
cancel_jobs() {
  export SLURM_CONF=$DIR/etc/slurm.conf
  running slurmctld || return 0
  local jobs i
  mapfile -t jobs < <(squeue -h -o %i 2>/dev/null)
  [ ${#jobs[@]} -eq 0 ] && return 0
  scancel "${jobs[@]}" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    [ -z "$(squeue -h -o %i 2>/dev/null)" ] && return 0
    sleep 0.1
  done
}

# The nodes' cgroups (/slurm_<node>/uid_<uid>/…: Slurm's, and those Docker made for the
# containers of jobs), deepest first; a cgroup still in use stays.
remove_cgroups() {
  local node name port gpus
  for node in "${NODES[@]}"; do
    read -r name port gpus <<<"$node"
    find /sys/fs/cgroup/*/"slurm_$name" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

down() {
  [ "$(id -u)" -eq 0 ] || die "must run as root"
  if [ -d "$DIR" ]; then
    local node name port gpus daemons=()
    for node in "${NODES[@]}"; do
      read -r name port gpus <<<"$node"
      daemons+=("slurmd-$name")
    done
    cancel_jobs
    # KILL, not TERM: on TERM each daemon takes seconds to save its state, and the state is
    # removed next. No job is left (cancel_jobs) for a node's slurmd to see to.
    stop KILL "${daemons[@]}" slurmctld slurmdbd mariadbd munged
    rm -rf "$DIR"
  fi
  remove_cgroups
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
