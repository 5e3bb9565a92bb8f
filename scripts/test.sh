#!/usr/bin/env bash
# Every test of the workspace: unit, property, SQL dialect and end-to-end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo test --workspace "$@"
