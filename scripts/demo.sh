#!/usr/bin/env bash
# Two users share the simulated GPUs of ds01's embedded default inventory (4 × A100-40GB;
# GPUs 0-2 whole, GPU 3 split into MIG 3g.20gb + 2g.10gb + 1g.5gb + 1g.5gb).
#
#   demo-alice  group phd: gpu_limit 2, whole GPUs allowed
#   demo-bob    gpu_limit 1, allow_full_gpu false: MIG slices only
#
# Starts a private ds01d (config, state, logs and socket under $DS01_DEMO_DIR, default
# /var/lib/ds01-demo), runs the CLI as each user through runuser, echoing every command,
# shows a request over quota being refused, has bob run `user-setup` (a JupyterLab on a MIG
# slice, checked over HTTP), removes everything and prints the audit log.
# The daemon is stopped and the demo's containers are removed on exit, whatever happens.
#
# Usage (as root, after `make setup images`, which `make demo` does):
#   scripts/demo.sh          run the demo
#   scripts/demo.sh clean    stop a leftover demo daemon, remove its containers, the users
#                            the demo created and $DS01_DEMO_DIR
set -euo pipefail
umask 022

VENV=${VENV:-/opt/ds01/venv}
BIN=$VENV/bin
DEMO_DIR=${DS01_DEMO_DIR:-/var/lib/ds01-demo}
CONFIG_DIR=$DEMO_DIR/config
STATE_DIR=$DEMO_DIR/state
LOG_DIR=$DEMO_DIR/log
RUN_DIR=$DEMO_DIR/run
SOCKET=$RUN_DIR/ds01.sock
PIDFILE=$DEMO_DIR/ds01d.pid
DAEMON_LOG=$DEMO_DIR/ds01d.log
CREATED_USERS=$DEMO_DIR/created-users
DEMO_USERS=(demo-alice demo-bob)
IMAGE=ds01-test/busybox:latest

die() {
  echo "demo: $*" >&2
  exit 1
}

stop_daemon() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -qa ds01d "/proc/$pid/cmdline"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
}

# Containers ds01 created for the demo users (found by the labels only ds01d writes).
remove_demo_containers() {
  local user uid ids
  command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 || return 0
  for user in "${DEMO_USERS[@]}"; do
    uid=$(id -u "$user" 2>/dev/null) || continue
    ids=$({
      docker ps -aq --filter label=ds01.managed=true --filter "label=ds01.user=$user"
      docker ps -aq --filter label=ds01.managed=true --filter "label=ds01.uid=$uid"
    } | sort -u)
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086
      docker rm -f $ids >/dev/null 2>&1 || true
    fi
  done
}

[ "$(id -u)" -eq 0 ] || die "run as root (it creates users and starts ds01d)"

if [ "${1:-}" = clean ]; then
  stop_daemon
  remove_demo_containers
  if [ -f "$CREATED_USERS" ]; then
    while read -r user; do
      [ -n "$user" ] && userdel -f -r "$user" >/dev/null 2>&1 || true
    done <"$CREATED_USERS"
  fi
  rm -rf "$DEMO_DIR"
  exit 0
fi
[ $# -eq 0 ] || die "usage: $0 [clean]"

[ -x "$BIN/ds01d" ] || die "$BIN/ds01d not found: run \`make setup\` first"
docker image inspect "$IMAGE" >/dev/null 2>&1 || die "image $IMAGE missing: run \`make images\`"

# --- a fresh demo world --------------------------------------------------------------------
stop_daemon
remove_demo_containers
rm -rf "$STATE_DIR" "$LOG_DIR" "$RUN_DIR" "$CONFIG_DIR"
mkdir -p "$CONFIG_DIR" "$STATE_DIR" "$LOG_DIR" "$RUN_DIR"
chmod 0755 "$DEMO_DIR" "$RUN_DIR" # users must reach the socket

for user in "${DEMO_USERS[@]}"; do
  if ! id "$user" >/dev/null 2>&1; then
    useradd -m -s /bin/bash -c "ds01 demo user" "$user"
    echo "$user" >>"$CREATED_USERS"
  fi
  runuser -u "$user" -- "$BIN/python" -c pass 2>/dev/null ||
    die "$user cannot run $BIN/python: install ds01 world-readable with \`make setup\`"
done

cat >"$CONFIG_DIR/images.yaml" <<EOF
images:
  - name: busybox
    image: $IMAGE
    framework: none
    description: BusyBox, a 2 MB image built offline for tests and demos
  - name: jupyter
    image: ds01-test/jupyter:latest
    framework: none
    description: JupyterLab, built offline (scripts/build-jupyter-image.sh)
starter: jupyter
EOF

cat >"$CONFIG_DIR/resource-limits.yaml" <<'EOF'
# Demo quotas. GPU counts are GPU-equivalents: a whole GPU is 1, a MIG 2g.10gb on an A100 2/7.
defaults:
  gpu_limit: 1
  max_gpus_per_container: 1
  cpu_limit: 1          # CPUs per container
  memory_limit: 1G
  max_runtime_hours: 48

groups:
  phd:
    members: [demo-alice]
    priority: 80
    gpu_limit: 2
    max_gpus_per_container: 2
    max_runtime_hours: 168

users:
  demo-bob:
    gpu_limit: 1
    allow_full_gpu: false   # MIG slices only
EOF
# gpu-config.yaml is left out on purpose: the embedded default simulates 4 A100s.

# --- the daemon ----------------------------------------------------------------------------
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_daemon
  remove_demo_containers
  echo
  echo "demo: ds01d stopped; its output: $DAEMON_LOG, audit log: $LOG_DIR/events.jsonl"
  echo "demo: \`make clean\` removes $DEMO_DIR and the demo users"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$BIN/ds01d" --config-dir "$CONFIG_DIR" --state-dir "$STATE_DIR" --log-dir "$LOG_DIR" \
  --socket "$SOCKET" </dev/null >"$DAEMON_LOG" 2>&1 &
echo $! >"$PIDFILE"

socket_answers() {
  "$BIN/python" -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' \
    "$SOCKET" 2>/dev/null
}
for _ in $(seq 1 100); do
  socket_answers && break
  kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break
  sleep 0.1
done
if ! socket_answers; then
  tail -n 40 "$DAEMON_LOG" >&2
  die "ds01d did not answer on $SOCKET"
fi
echo "demo: ds01d (pid $(cat "$PIDFILE")) listens on $SOCKET"

# --- the session ---------------------------------------------------------------------------
# as USER CMD ARGS...: echo the command, then run it as USER against the demo daemon
# (stderr into stdout, so messages stay in order when the output is piped).
as() {
  local user=$1 home
  shift
  home=$(getent passwd "$user" | cut -d: -f6)
  printf '\n%s$ %s\n' "$user" "$*"
  (cd "${home:-/}" && runuser -u "$user" -- env DS01_SOCKET="$SOCKET" "$BIN/$1" "${@:2}" 2>&1)
}

# must USER CMD ARGS...: as above; the demo stops if the command fails.
must() {
  local rc=0
  as "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "demo: '$2' failed with exit code $rc; last lines of $DAEMON_LOG:" >&2
    tail -n 20 "$DAEMON_LOG" >&2
    exit 1
  fi
}

must demo-alice container-create thesis --image busybox --gpus 1
must demo-alice container-start thesis
must demo-bob container-create notebook --image busybox --mig 2g.10gb
must demo-bob container-start notebook
must demo-alice container-list
must demo-bob container-list
must demo-alice gpu-status
must demo-alice check-limits --explain
must demo-bob check-limits --explain

# Over quota: alice holds 1 GPU of her 2; two more would make 3.
rc=0
as demo-alice container-create big --image busybox --gpus 2 || rc=$?
echo "-> exit code $rc (3 = over quota or no capacity)"
[ "$rc" -ne 0 ] || die "the request over quota was accepted"
[ "$rc" -eq 3 ] || echo "demo: expected exit code 3 for a quota refusal, got $rc" >&2

# A student's first minutes: one command to a JupyterLab on the smallest device bob may
# have (a MIG slice), then the URL it printed answers with its token.
must demo-bob user-setup --yes --name lab --host demo.example.org
url=$(runuser -u demo-bob -- env DS01_SOCKET="$SOCKET" "$BIN/container-list" --json |
  "$BIN/python" -c 'import json, sys; print(next(c["jupyter_url"] for c in json.load(sys.stdin) if c["name"] == "lab"))')
status=$("$BIN/python" -c '
import sys, urllib.request
base, _, token = sys.argv[1].partition("/lab?token=")
request = urllib.request.Request(base + "/api/status", headers={"Authorization": "token " + token})
print(urllib.request.urlopen(request, timeout=10).status)' "$url")
echo "-> JupyterLab at $url answers: HTTP $status"
[ "$status" = 200 ] || die "JupyterLab did not answer"
must demo-bob container-retire lab --discard --yes

must demo-alice container-stop thesis
must demo-alice container-remove thesis
must demo-bob container-stop notebook
must demo-bob container-remove notebook
must demo-alice container-list

echo
echo "# last 10 events of $LOG_DIR/events.jsonl"
tail -n 10 "$LOG_DIR/events.jsonl" 2>/dev/null || echo "(no events file)"
