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
