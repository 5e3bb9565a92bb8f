# Sourced by the scripts: one cargo target dir outside the clone, so DuckDB's
# C++ engine (20-25 minutes on 2 cores) is compiled once per machine, not
# once per checkout.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tvetl-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
