#!/usr/bin/env bash
# Refresh the locked installs in requirements/ from pyproject.toml (and requirements/tools.in):
#
#   requirements/runtime.txt   the service                         (scripts/venv.sh, Dockerfile)
#   requirements/fast.txt      the service + the `fast` extra (uvloop)  (scripts/venv.sh fast)
#   requirements/test.txt      the service + the `test` extra       (scripts/venv.sh test, CI)
#   requirements/tools.txt     pip and the build backend            (installed before the above)
#
# Every file pins every package, transitive ones included, with the sha256 of each of its
# files on PyPI, so `pip install --require-hashes -r requirements/X.txt` installs exactly
# that on any platform (universal resolution for Python 3.11). Shared packages get the same
# version in every file: test.txt is resolved first and constrains the others.
#
# Usage:
#   scripts/lock.sh                      add what pyproject.toml now asks for, keep other pins
#   scripts/lock.sh --upgrade            move every package to its newest allowed version
#   scripts/lock.sh --upgrade-package X  move only X (repeatable)
#
# Needs python3 and PyPI (pip installs a pinned uv into a throw-away venv); nothing else.
# Run it after changing a dependency in pyproject.toml, and commit requirements/ with it
# (tests/test_lock.py fails while a lockfile and pyproject.toml disagree).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
uv_version="0.13.9"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"${PYTHON:-python3}" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check "uv==$uv_version"
uv="$tmp/venv/bin/uv"

compile() {  # $1 = output file; the rest: inputs and options
  local out="$1"; shift
  "$uv" pip compile --quiet --universal --python-version 3.11 --generate-hashes \
    --no-config --index-url https://pypi.org/simple \
    --custom-compile-command "scripts/lock.sh" --output-file "$out" "$@"
}

compile requirements/test.txt pyproject.toml --extra test "$@"
# The pins of test.txt, without hashes, constrain the smaller sets to the same versions.
grep -E '^[A-Za-z0-9_.-]+(\[[^]]*\])?==' requirements/test.txt | sed 's/ *\\$//; s/ *;.*$//' \
  > "$tmp/pins.txt"
compile requirements/runtime.txt pyproject.toml --constraint "$tmp/pins.txt" "$@"
compile requirements/fast.txt pyproject.toml --extra fast --constraint "$tmp/pins.txt" "$@"
compile requirements/tools.txt requirements/tools.in "$@"
# The constraint file is a temporary one: drop it from the "# via" notes, so a refresh that
# changes nothing changes no line.
sed -i '/^    #   -c .*\/pins\.txt$/d' requirements/runtime.txt requirements/fast.txt
echo "lock.sh: requirements/{runtime,fast,test,tools}.txt refreshed with uv $uv_version" >&2
