# Sourced by the scripts: one cargo target dir outside the clone, so DuckDB's
# C++ engine (20-25 minutes on 2 cores) is compiled once per machine, not
# once per checkout.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tvetl-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The tests build the Lambda crates once, for the triple cargo-lambda names
# (x86_64-unknown-linux-gnu, as an explicit --target), with plain cargo as
# cargo-lambda's compiler. Then `cargo test`, `cargo lambda build`/`watch` and
# `sam build` share one set of artifacts: with zig as the linker, cargo-lambda
# rebuilt every crate a second time (12-16 minutes on a cold cache). The
# emulator runs each bootstrap on this host, so its glibc is the one that
# matters; a deployment (`sam build` without this) still links with zig for
# Amazon Linux 2023.
use_test_lambda_builds() {
  export TVETL_LAMBDA_TARGET=x86_64-unknown-linux-gnu
  export CARGO_LAMBDA_COMPILER=cargo
}

# Cargo records the files a crate reads from outside its package (the tests
# under tests/, the SQL under infra/sql/ that tvetl-core includes) by absolute
# path. With one target dir for several checkouts, a build in one checkout
# then checks the other checkout's copies of those files, and can take a
# binary built from old sources as fresh. So when the target dir was last
# used from another checkout, the build records that name another checkout's
# files are dropped: those workspace crates rebuild, their dependencies
# (DuckDB, the AWS SDK) do not.
forget_other_checkouts() {
  local repo marker
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  marker="$CARGO_TARGET_DIR/.tvetl-checkout"
  [ -d "$CARGO_TARGET_DIR" ] || return 0
  [ "$(cat "$marker" 2>/dev/null)" = "$repo" ] && return 0
  # Under cargo's own locks of the build folders (flock, as cargo takes
  # them), so that a build running from the other checkout is waited for,
  # not pulled from under.
  local lock fd fds=()
  while IFS= read -r -d '' lock; do
    exec {fd}<"$lock"
    if ! flock -n "$fd"; then
      echo "== waiting for the cargo build that holds $lock" >&2
      flock "$fd"
    fi
    fds+=("$fd")
  done < <(find "$CARGO_TARGET_DIR" -maxdepth 3 -name .cargo-lock -print0 2>/dev/null)
  local dep paths
  while IFS= read -r -d '' dep; do
    paths=$(grep -aoE '/[^[:cntrl:]]*/\.\./(\.\./)?(tests|infra)/[^[:cntrl:]]*' "$dep" || true)
    [ -n "$paths" ] || continue
    # Not a pipe into grep -q: under pipefail its early exit fails the pipe.
    if [ -n "$(grep -v "^$repo/" <<<"$paths" || true)" ]; then
      rm -rf "$(dirname "$dep")"
    fi
  done < <(find "$CARGO_TARGET_DIR" -path '*/.fingerprint/*' -name 'dep-*' -print0 2>/dev/null)
  echo "$repo" > "$marker"
  for fd in "${fds[@]}"; do
    exec {fd}<&-
  done
}
forget_other_checkouts
