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
# ministack's temporary files: it unpacks each Lambda's code (about 90 MB)
# under the temp dir and never removes it; 24 GB had piled up on this
# machine. So it gets a temp dir of its own, which `stop` removes.
emulator_tmp="$run_dir/ministack-$port.tmp"
endpoint="http://127.0.0.1:$port"

source scripts/venv.sh

install() {
  ensure_venv "$venv" tests/emulator/requirements.txt tests/emulator/constraints.txt
}

# Waits until URL $1 answers while the process in pid file $2 lives; another
# server answering on the same port does not count (ministack exits when its
# port is taken). Logs to $3 on failure.
wait_up() {
  local url=$1 pid_file=$2 log=$3
  for _ in $(seq 1 120); do
    if ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
      break
    fi
    if curl -fsS --max-time 2 "$url" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.5
  done
  echo "error: nothing of ours answered on $url; log: $log" >&2
  tail -20 "$log" >&2 || true
  return 1
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
  rm -rf "$emulator_tmp"
  mkdir -p "$emulator_tmp"
  TMPDIR="$emulator_tmp" BIND_HOST=127.0.0.1 GATEWAY_PORT="$port" MINISTACK_HOST=127.0.0.1 LOG_LEVEL=WARNING \
    setsid "$venv/bin/ministack" >"$run_dir/ministack-$port.log" 2>&1 < /dev/null &
  echo $! >"$pid_file"
  if ! wait_up "$endpoint/_ministack/health" "$pid_file" "$run_dir/ministack-$port.log"; then
    stop
    exit 1
  fi
  echo "$endpoint"
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
  rm -rf "$emulator_tmp"
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
  if ! wait_up "$standin_endpoint/" "$standin_pid" "$run_dir/standin-$standin_port.log"; then
    standin_stop
    exit 1
  fi
  echo "$standin_endpoint"
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
