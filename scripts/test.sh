#!/usr/bin/env bash
# The README's test command: install what is needed (venv, packages, redis-server),
# start a private Redis on 127.0.0.1, then run ruff, mypy --strict and the whole pytest suite.
# Extra arguments go to pytest (e.g. -k cancel).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/venv.sh test
if [ -z "${REDIS_URL:-}" ]; then
  eval "$(bash scripts/redis.sh)"
fi
export REDIS_URL
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest -q "$@"
