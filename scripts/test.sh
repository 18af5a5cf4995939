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
# The whole suite measures coverage and holds its floor ([tool.coverage] in pyproject.toml);
# a run narrowed by arguments (-k cancel) cannot reach the floor, so it skips coverage, and
# ORCH_TEST_COVERAGE=0 skips it for a quicker local run (the tracer costs ~1.8x; CI keeps it).
cov=()
if [ "$#" -eq 0 ] && [ "${ORCH_TEST_COVERAGE:-1}" != 0 ]; then cov=(--cov); fi
# The whole suite runs on every core (pytest-xdist, at most 4 workers): tests share nothing
# but the machine (a key prefix per test, bind-checked ports), and the tracer's cost is paid
# in parallel. A narrowed run (arguments given) stays in one process, easier to debug.
workers=()
if [ "$#" -eq 0 ]; then workers=(--numprocesses "${ORCH_TEST_WORKERS:-auto}" --maxprocesses 4); fi
.venv/bin/python -m pytest -q ${workers[@]+"${workers[@]}"} ${cov[@]+"${cov[@]}"} "$@"
