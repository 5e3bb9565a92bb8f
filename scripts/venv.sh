# Sourced by the scripts that install Python tools: one way to make a venv.

# ensure_venv VENV REQUIREMENTS [CONSTRAINTS]: creates VENV if it has no
# working pip, then installs REQUIREMENTS (pinned) with CONSTRAINTS (the
# versions of everything they pull in, as last resolved and tested) into it.
# Everything it prints goes to stderr, so a caller's stdout stays its own.
ensure_venv() {
  local venv=$1 requirements=$2 constraints=${3:-}
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: Python 3.11 or later is needed as python3 (found: $(python3 --version 2>&1))" >&2
    return 1
  fi
  # A venv made without ensurepip (Debian's python3 without python3-venv)
  # has a python but no pip: made again rather than reused broken.
  if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >&2; then
      rm -rf "$venv"
      echo "error: python3 -m venv could not make $venv (on Debian or Ubuntu: apt install python3-venv)" >&2
      return 1
    fi
  fi
  local args=(-r "$requirements")
  [ -z "$constraints" ] || args+=(-c "$constraints")
  if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${args[@]}" >&2; then
    echo "error: could not install $requirements into $venv" >&2
    return 1
  fi
}
