#!/usr/bin/env bash
# The README's run command: install what is needed, then start the orchestrator with the
# three reference agents on 127.0.0.1 and the embedded in-memory state store.
# Extra arguments go to `orchestrator up` (e.g. --port 9000).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/venv.sh"
exec "$root/.venv/bin/orchestrator" up "$@"
