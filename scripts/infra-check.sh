#!/usr/bin/env bash
# The SAM template's checks: `sam validate --lint`, `cfn-lint` and `checkov`
# on infra/template.yaml, every checkov skip carrying its reason, and
# tests/infra/iam_check.py: each function's role allows the S3 requests its
# code makes (run with the SAM venv's Python, whose cfn-lint reads the
# template for it).
#   scripts/infra-check.sh [install|lint]   (no argument: install, then lint)
# The tools come from pinned requirement files, each in its own venv:
# infra/requirements.txt (SAM CLI, cfn-lint) and infra/requirements-checkov.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

sam_venv="${TVETL_SAM_VENV:-$HOME/.cache/tvetl-sam-venv}"
checkov_venv="${TVETL_CHECKOV_VENV:-$HOME/.cache/tvetl-checkov-venv}"
template=infra/template.yaml

source scripts/venv.sh

install() {
  ensure_venv "$sam_venv" infra/requirements.txt infra/constraints.txt
  ensure_venv "$checkov_venv" infra/requirements-checkov.txt infra/constraints-checkov.txt
}

# Every `- id: CKV_…` under a checkov skip must be followed by a non-empty
# `comment:` line.
skips_have_reasons() {
  python3 - "$template" <<'PY'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
bad = [i + 1 for i, line in enumerate(lines)
       if re.match(r"\s*- id: CKV", line)
       and not (i + 1 < len(lines) and re.match(r"\s*comment: \S", lines[i + 1]))]
count = sum(1 for line in lines if re.match(r"\s*- id: CKV", line))
print(f"{count} checkov skips, {len(bad)} without a reason" + (f" (lines {bad})" if bad else ""))
sys.exit(1 if bad else 0)
PY
}

lint() {
  export SAM_CLI_TELEMETRY=0 BC_SKIP_MAPPING=TRUE
  local passed=0 failed=0
  check() {
    local name=$1
    shift
    echo "== $name"
    if "$@"; then
      passed=$((passed + 1))
    else
      echo "FAIL: $name" >&2
      failed=$((failed + 1))
    fi
  }
  check "sam validate --lint" "$sam_venv/bin/sam" validate --lint --template "$template" --region us-east-1
  check "cfn-lint" "$sam_venv/bin/cfn-lint" "$template"
  check "checkov" "$checkov_venv/bin/checkov" --file "$template" --framework cloudformation \
    --compact --quiet --skip-download
  check "checkov skips carry their reasons" skips_have_reasons
  check "roles allow the functions' S3 requests" "$sam_venv/bin/python" tests/infra/iam_check.py "$template"
  echo "infra-check: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

case "${1:-all}" in
  install) install ;;
  lint) lint ;;
  all) install; lint ;;
  *) echo "usage: $0 [install|lint]" >&2; exit 2 ;;
esac
