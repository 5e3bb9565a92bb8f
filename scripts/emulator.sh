#!/usr/bin/env bash
# The local AWS emulator (ministack, from PyPI) for the tests.
#   scripts/emulator.sh install | start | reset | stop | endpoint
#   scripts/emulator.sh standin-start | standin-stop | standin-endpoint
# The stand-in is tests/redshift_standin/standin.py: the Redshift Data API
# over DuckDB (no emulator executes Data API SQL), reading COPY sources from
# the emulator's S3.
# It runs bound to 127.0.0.1 in its own process group, so `stop` also ends
# the Lambda processes it spawns (they outlive a plain kill).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${TVETL_VENV:-$HOME/.cache/tvetl-venv}"
run_dir="${TVETL_RUN_DIR:-$HOME/.cache/tvetl-run}"
port="${EMULATOR_PORT:-4566}"
pid_file="$run_dir/ministack-$port.pid"
endpoint="http://127.0.0.1:$port"

install() {
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/emulator/requirements.txt; then
    echo "error: could not install tests/emulator/requirements.txt into $venv" >&2
    exit 1
  fi
}

running() {
  [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

start() {
  install
  mkdir -p "$run_dir"
  if running; then
    echo "$endpoint"
    return
  fi
  BIND_HOST=127.0.0.1 GATEWAY_PORT="$port" MINISTACK_HOST=127.0.0.1 LOG_LEVEL=WARNING \
    setsid "$venv/bin/ministack" >"$run_dir/ministack-$port.log" 2>&1 < /dev/null &
  echo $! >"$pid_file"
  for _ in $(seq 1 120); do
    if curl -fsS "$endpoint/_ministack/health" >/dev/null 2>&1; then
      echo "$endpoint"
      return
    fi
    sleep 0.5
  done
  echo "error: ministack did not answer on $endpoint; log: $run_dir/ministack-$port.log" >&2
  tail -20 "$run_dir/ministack-$port.log" >&2 || true
  stop
  exit 1
}

reset() {
  curl -fsS -X POST "$endpoint/_ministack/reset" >/dev/null
}

# Ends the process group whose leader's pid is in file $1 (TERM, then KILL).
stop_group() {
  local pid_file=$1 pid
  [ -f "$pid_file" ] || return 0
  pid=$(cat "$pid_file")
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 20); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pid_file"
}

stop() {
  # The whole process group: ministack and every Lambda runtime it started.
  stop_group "$pid_file"
}

standin_port="${STANDIN_PORT:-4577}"
standin_pid="$run_dir/standin-$standin_port.pid"
standin_endpoint="http://127.0.0.1:$standin_port"

standin_start() {
  install
  mkdir -p "$run_dir"
  standin_stop
  rm -f "$run_dir/standin-$standin_port.duckdb" "$run_dir/standin-$standin_port.duckdb.wal"
  setsid "$venv/bin/python" tests/redshift_standin/standin.py --port "$standin_port" \
    --db "$run_dir/standin-$standin_port.duckdb" --s3-endpoint "$endpoint" --page-size "${STANDIN_PAGE_SIZE:-1000}" \
    >"$run_dir/standin-$standin_port.log" 2>&1 < /dev/null &
  echo $! >"$standin_pid"
  for _ in $(seq 1 60); do
    if curl -fsS "$standin_endpoint/" >/dev/null 2>&1; then
      echo "$standin_endpoint"
      return
    fi
    sleep 0.5
  done
  echo "error: the Data API stand-in did not answer; log: $run_dir/standin-$standin_port.log" >&2
  tail -20 "$run_dir/standin-$standin_port.log" >&2 || true
  exit 1
}

standin_stop() {
  stop_group "$standin_pid"
}

case "${1:-}" in
  standin-start) standin_start ;;
  standin-stop) standin_stop ;;
  standin-endpoint) echo "$standin_endpoint" ;;
  install) install ;;
  start) start ;;
  reset) reset ;;
  stop) stop ;;
  endpoint) echo "$endpoint" ;;
  *) echo "usage: $0 install|start|reset|stop|endpoint|standin-start|standin-stop|standin-endpoint" >&2; exit 2 ;;
esac
