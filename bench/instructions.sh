#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: deterministic where this VM's
# timings drift by ±15% between identical runs, so two configurations (or two commits) can
# be compared one change at a time. Not a speed: cache misses and syscalls' kernel time are
# not in it. The gateway runs under callgrind (about 50× slower; start-up takes a minute or
# two); after 300 requests to warm it up the counters are zeroed, N requests are sent, and
# the total is divided by N.
#   bench/instructions.sh CONFIG [N]        e.g. bench/instructions.sh observability.yaml 1000
# CONFIG is a file in bench/configs. Needs valgrind (apt-get install valgrind).
# Environment: PORT (gateway, default 38290), MOCK_PORT (default 38291), KEEP (a path: the
# callgrind profile is copied there, for callgrind_annotate --inclusive=no), LLMPORT_VARIANT
# (runs bench/variants.py with that variant instead of llmport: what a part costs),
# CACHE_SIM=1 (callgrind also simulates the CPU's caches — as its host reports them — and
# prints the misses per request and kcachegrind's cycle estimate, Ir + 10 × L1 misses +
# 100 × last-level misses: what instructions alone cannot show, such as a hook that costs
# more where it runs, among the request's own work, than its instructions say).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${LLMPORT_PYTHON:-$root/.venv/bin/python}"
config="$1"; count="${2:-1000}"
port="${PORT:-38290}"; mock_port="${MOCK_PORT:-38291}"
command -v valgrind >/dev/null || { echo "valgrind not found: apt-get install valgrind" >&2; exit 2; }
work="$(mktemp -d)"
"$python" "$here/mock_upstream.py" --port "$mock_port" > "$work/mock.log" 2>&1 &
mock=$!
gateway=""
cleanup() { kill "$mock" ${gateway:+"$gateway"} 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export UPSTREAM_BASE="http://127.0.0.1:$mock_port/v1" BENCH_DATA_DIR="$work/data"
case "$config" in  # the full configurations need their database and tenant key first
  full-inprocess.yaml) "$python" "$here/setup_full.py" full > /dev/null ;;
  full-redis.yaml) "$python" "$here/setup_full.py" full-redis > /dev/null ;;
esac
# Always through variants.py, with the batch timers stretched to callgrind's pace (see there).
entry="$here/variants.py"
export LLMPORT_VARIANT="callgrind-timers${LLMPORT_VARIANT:+,$LLMPORT_VARIANT}"
cache=(); [ -n "${CACHE_SIM:-}" ] && cache=(--cache-sim=yes)
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.%p" --dump-instr=no "${cache[@]}" \
  "$python" "$entry" serve --config "$here/configs/$config" --port "$port" \
  > "$work/gateway.log" 2>&1 &
gateway=$!
for _ in $(seq 600); do
  curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break
  kill -0 "$gateway" 2>/dev/null || { cat "$work/gateway.log" >&2; exit 1; }
  sleep 0.5
done
url="http://127.0.0.1:$port/v1/chat/completions"
"$python" "$here/fixed_load.py" "$url" 300
callgrind_control -z "$gateway" > /dev/null 2>&1
"$python" "$here/fixed_load.py" "$url" "$count"
callgrind_control -d "$gateway" > /dev/null 2>&1
total=$(callgrind_annotate "$work/callgrind.$gateway.1" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
[ -n "${KEEP:-}" ] && cp "$work/callgrind.$gateway.1" "$KEEP"
echo "$config: $((total / count)) instructions per request ($count requests, 4 at a time)"
if [ -n "${CACHE_SIM:-}" ]; then  # events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
  read -r -a e < <(awk '/^summary:|^totals:/ {$1=""; print; exit}' "$work/callgrind.$gateway.1")
  l1=$(( e[3] + e[4] + e[5] )); ll=$(( e[6] + e[7] + e[8] ))
  echo "  per request: I1 misses $(( e[3] / count )), D1 misses $(( (e[4] + e[5]) / count )), LL misses $(( ll / count )); cycle estimate $(( (e[0] + 10 * l1 + 100 * ll) / count ))"
fi
