#!/usr/bin/env bash
# The Redshift Data API stand-in's tests. Installs the emulator's requirements
# and pytest into the venv, starts ministack (scripts/emulator.sh) and the
# stand-in (server.py) on 127.0.0.1, runs pytest, and stops both at exit,
# whatever happened.
#
#   tests/redshift_data_standin/run_tests.sh [pytest arguments]
#
# EMULATOR_PORT (4566), STANDIN_PORT (4577), TVETL_VENV and TVETL_RUN_DIR are
# those of scripts/emulator.sh. STANDIN_PAGE_SIZE (2) is the stand-in's page
# size, small so that every multi-row result is paged. A ministack that already
# answers on EMULATOR_PORT is used and left running; the stand-in's port must
# be free.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv="${TVETL_VENV:-$HOME/.cache/tvetl-venv}"
run_dir="${TVETL_RUN_DIR:-$HOME/.cache/tvetl-run}"
export EMULATOR_PORT="${EMULATOR_PORT:-4566}"
standin_port="${STANDIN_PORT:-4577}"
pytest_version=9.2.0
emulator="http://127.0.0.1:$EMULATOR_PORT"
standin="http://127.0.0.1:$standin_port"
standin_pid_file="$run_dir/redshift-data-standin-$standin_port.pid"
standin_log="$run_dir/redshift-data-standin-$standin_port.log"

scripts/emulator.sh install
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('pytest') != '$pytest_version')" \
  2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "pytest==$pytest_version"
fi
mkdir -p "$run_dir"

stop_standin() {
  [ -f "$standin_pid_file" ] || return 0
  local pid
  pid=$(cat "$standin_pid_file")
  # Only our server: a stale pid file must not end whatever reused the pid.
  if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "redshift_data_standin/server.py"; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$standin_pid_file"
}

own_emulator=0
pytest_pid=
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$pytest_pid" ] && kill -0 "$pytest_pid" 2>/dev/null; then
    kill -TERM "$pytest_pid" 2>/dev/null || true
    wait "$pytest_pid" 2>/dev/null || true
  fi
  stop_standin
  if [ "$own_emulator" = 1 ]; then
    scripts/emulator.sh stop || true
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if curl -fsS "$emulator/_ministack/health" >/dev/null 2>&1; then
  echo "ministack already answers on $emulator: using it and leaving it running"
else
  own_emulator=1
  scripts/emulator.sh start >/dev/null
fi
echo "ministack: $emulator"

stop_standin
if curl -s -o /dev/null "$standin/" 2>/dev/null; then
  echo "error: something already listens on $standin; set STANDIN_PORT to a free port" >&2
  exit 1
fi
setsid "$venv/bin/python" tests/redshift_data_standin/server.py --port "$standin_port" \
  --db "$run_dir/redshift-data-standin-$standin_port.duckdb" --reset-db \
  --s3-endpoint "$emulator" --page-size "${STANDIN_PAGE_SIZE:-2}" \
  >"$standin_log" 2>&1 </dev/null &
echo $! >"$standin_pid_file"
for _ in $(seq 1 120); do
  if curl -fsS "$standin/_standin/health" >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 "$(cat "$standin_pid_file")" 2>/dev/null; then
    break
  fi
  sleep 0.25
done
if ! curl -fsS "$standin/_standin/health" >/dev/null 2>&1; then
  echo "error: the stand-in did not answer on $standin; log: $standin_log" >&2
  tail -20 "$standin_log" >&2 || true
  exit 1
fi
echo "Redshift Data API stand-in: $standin (log: $standin_log)"

export AWS_ENDPOINT_URL="$emulator" STANDIN_ENDPOINT="$standin"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN
# No .pytest_cache or __pycache__ in the work tree. pytest runs in the
# background so that a TERM or INT reaches the trap at once, not after pytest.
PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m pytest -p no:cacheprovider tests/redshift_data_standin "$@" &
pytest_pid=$!
wait "$pytest_pid"
