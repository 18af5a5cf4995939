#!/usr/bin/env bash
# Create (or reuse) the project's virtualenv at .venv and install the project into it.
# Usage: scripts/venv.sh [extras]   e.g. scripts/venv.sh test
# Sourced by run.sh and test.sh; needs only python3 (3.11+), pip, and apt for python3-venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-}"
py="${PYTHON:-python3}"

if [ ! -x "$root/.venv/bin/python" ]; then
  if ! "$py" -m venv "$root/.venv" 2>/dev/null; then
    # Debian's python3 ships venv separately.
    rm -rf "$root/.venv"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null;
    else sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv >/dev/null; fi
    "$py" -m venv "$root/.venv"
  fi
fi
target="$root"
[ -n "$extras" ] && target="$root[$extras]"
stamp="$root/.venv/.installed-${extras:-base}"
# Reinstall only when pyproject.toml changed since the last install.
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  "$root/.venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$root/.venv/bin/python" -m pip install -q --disable-pip-version-check -e "$target"
  touch "$stamp"
fi
