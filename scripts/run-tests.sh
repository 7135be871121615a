#!/usr/bin/env bash
# The pytest suite as `make test` runs it (after setup, images and slurm).
#
#   scripts/run-tests.sh            the whole suite: tests/unit at the lowest CPU priority
#                                   (nice 19) beside tests/integration and tests/e2e
#   scripts/run-tests.sh ARGS...    one pytest run with ARGS (make test PYTEST_ARGS=...)
#
# Why two runs side by side: the Docker tests spend most of their time waiting on dockerd,
# ds01d's loops and the Slurm daemons, and the unit tests need nothing but a CPU. At nice 19
# the unit tests take only what the Docker tests leave idle, so the suite takes about as long
# as its Docker tests, not the sum of both. The unit run's output is printed when both ended.
#
# Exit status: 0 only when every run passed. pytest's "no tests collected" (5) is a failure.
# JUNIT_DIR=DIR writes DIR/unit.xml and DIR/docker.xml (DIR/all.xml for one run with ARGS).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${VENV:-/opt/ds01/venv}
# Every log lists the slowest tests (those of 2 s or more), to see where the suite's time goes.
pytest_run=("$VENV/bin/pytest" -p no:cacheprovider --durations=40 --durations-min=2)

junit=()  # junit NAME sets it: the --junitxml argument of run NAME, if JUNIT_DIR is set
junit() {
	junit=()
	if [ -n "${JUNIT_DIR:-}" ]; then
		mkdir -p "$JUNIT_DIR" && junit=("--junitxml=$JUNIT_DIR/$1.xml")
	fi
}

verdict() {  # verdict WHAT RC: say what a failed run means; return RC
	if [ "$2" -eq 5 ]; then
		echo "make test: pytest collected no tests in $1; that is a failure" >&2
	elif [ "$2" -ne 0 ]; then
		echo "make test: $1 failed (pytest exit code $2)" >&2
	fi
	return "$2"
}

if [ $# -gt 0 ]; then
	junit all
	rc=0
	"${pytest_run[@]}" "${junit[@]}" "$@" || rc=$?
	verdict "the tests asked for" "$rc"
	exit "$rc"
fi

unit_log=$(mktemp /tmp/ds01-unit-tests.XXXXXX)
junit unit
nice -n 19 "${pytest_run[@]}" "${junit[@]}" tests/unit >"$unit_log" 2>&1 &
unit_pid=$!
# An interrupted suite leaves no unit run behind.
trap 'kill "$unit_pid" 2>/dev/null; rm -f "$unit_log"' EXIT

docker_rc=0
junit docker
"${pytest_run[@]}" "${junit[@]}" tests/integration tests/e2e || docker_rc=$?
unit_rc=0
wait "$unit_pid" || unit_rc=$?
echo
echo "================ tests/unit (run beside the Docker tests, at nice 19) ================"
cat "$unit_log"

rc=0
verdict "tests/integration and tests/e2e" "$docker_rc" || rc=1
verdict "tests/unit" "$unit_rc" || rc=1
exit "$rc"
