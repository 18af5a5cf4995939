#!/usr/bin/env bash
# Create (or reuse) the project's virtualenv at .venv and install the project into it from
# the locked requirements (every package pinned, with hashes: scripts/lock.sh refreshes them).
#
# Usage: scripts/venv.sh [runtime|fast|test]      (default runtime)
#   runtime  the service                  requirements/runtime.txt  (./scripts/run.sh)
#   fast     the service + uvloop         requirements/fast.txt
#   test     the service + the test tools requirements/test.txt     (./scripts/test.sh, CI)
#
# Called by run.sh and test.sh; needs only python3 (3.11+), pip, and apt for python3-venv.
# Installs are `pip install --require-hashes`: pip and the build backend from
# requirements/tools.txt first, then the set's lockfile, then the project itself (no
# dependencies, no build isolation: nothing unpinned is fetched), then `pip check`.
# Nothing is reinstalled while pyproject.toml and the lockfiles are unchanged.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
set_name="${1:-runtime}"
py="${PYTHON:-python3}"
case "$set_name" in
  runtime | fast | test) ;;
  *) echo "venv.sh: unknown set '$set_name' (runtime, fast or test)" >&2; exit 2 ;;
esac
lock="$root/requirements/$set_name.txt"
tools="$root/requirements/tools.txt"

if [ ! -x "$root/.venv/bin/python" ]; then
  if ! "$py" -m venv "$root/.venv" 2>/dev/null; then
    # Debian's python3 ships venv separately.
    rm -rf "$root/.venv"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null;
    else sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv >/dev/null; fi
    "$py" -m venv "$root/.venv"
  fi
fi

# What an install of this set depends on; a stamp holding the same digest means it is done.
digest() { cat "$root/pyproject.toml" "$tools" "$root/requirements/$1.txt" | sha256sum | cut -c1-64; }
stamp() { printf '%s/.venv/.installed-%s' "$root" "$1"; }
current() { [ -f "$(stamp "$1")" ] && [ "$(cat "$(stamp "$1")")" = "$(digest "$1")" ]; }
# fast and test hold every runtime package at the same version (lock.sh resolves them so),
# so a venv installed for either already serves run.sh.
if current "$set_name" || { [ "$set_name" = runtime ] && { current test || current fast; }; }; then
  exit 0
fi
pip=("$root/.venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --require-hashes -r "$tools"
"${pip[@]}" install -q --require-hashes -r "$lock"
"${pip[@]}" install -q --no-deps --no-build-isolation -e "$root"
if ! "${pip[@]}" check >&2; then
  echo "venv.sh: $lock does not satisfy pyproject.toml: run scripts/lock.sh and commit requirements/" >&2
  exit 1
fi
rm -f "$root"/.venv/.installed-*
digest "$set_name" > "$(stamp "$set_name")"
