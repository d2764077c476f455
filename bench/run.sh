#!/usr/bin/env bash
# The project's benchmark: llmport against a fast mock upstream, beside a direct call.
#   bench/run.sh [extra run_bench.py arguments]   e.g. --reps 1 --duration 5
# Needs wrk (apt-get install wrk) and taskset; the harness venv is created on first use.
# The gateway is pinned to CPU 1, load generator and mock to CPU 0 (see bench/README.md).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
llmport="${LLMPORT_BIN:-$root/.venv/bin/llmport}"
[ -x "$llmport" ] || { echo "install llmport first: make install" >&2; exit 2; }
cd "$here"
exec ./run_bench.sh --name "${BENCH_NAME:-llmport-bare}" --api-key sk-llmport-bench \
  --scenarios ns:1,ns:16,ns:64,st:16 \
  --gateway-cmd "exec $llmport serve --config $here/configs/bare.yaml --port {port}" "$@"
