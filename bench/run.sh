#!/usr/bin/env bash
# The project's benchmark: every gateway against one fast mock upstream, one table.
#   bench/run.sh [compare.py arguments]   e.g. --targets llmport-bare,llmport-full --reps 1
# Needs wrk (apt-get install wrk) and taskset; the harness venv is created on first use.
# The gateway is pinned to CPU 1, load generator and mock to CPU 0 (see bench/README.md).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${LLMPORT_PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || { echo "install llmport first: make install" >&2; exit 2; }
exec "$python" "$here/compare.py" "$@"
