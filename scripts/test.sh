#!/usr/bin/env bash
# The README's test command: install what is needed (venv and packages from the lockfile,
# redis-server, curl for the README's examples, and Debian's chromium for the ops page's
# browser test), start a private Redis and a 3-master Redis Cluster on 127.0.0.1, then run
# ruff, mypy --strict and the whole pytest suite.
# Extra arguments go to pytest (e.g. -k cancel).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/venv.sh test
# Headless Chromium renders the docs page (tests/integration/test_openapi.py) and drives
# the ops page (tests/integration/test_ops_browser.py).
if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing chromium (apt-get)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium >/dev/null
fi
# curl runs the README's examples (tests/test_readme.py), as a reader would.
if ! command -v curl >/dev/null 2>&1; then
  echo "== installing curl (apt-get)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq curl >/dev/null
fi
if [ -z "${REDIS_URL:-}" ]; then
  eval "$(bash scripts/redis.sh)"
fi
# A local 3-master Redis Cluster: the store contract suite runs on it too.
if [ -z "${REDIS_CLUSTER_URL:-}" ]; then
  eval "$(bash scripts/redis-cluster.sh)"
fi
export REDIS_URL REDIS_CLUSTER_URL
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest -q "$@"
