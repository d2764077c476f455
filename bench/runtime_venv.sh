#!/usr/bin/env bash
# The benchmark's own virtualenv for the Python gateways (llmport and the thin passthrough):
# built once, on the fastest CPython of this machine (fastest_python.py), with llmport
# installed from this checkout (editable, so it always runs the working tree) and psutil
# for memory_soak.py. Prints the venv's path. BENCH_PYTHON names another interpreter;
# BENCH_RUNTIME_VENV another location (default bench/.venv).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="${BENCH_RUNTIME_VENV:-$here/.venv}"
python="${BENCH_PYTHON:-$(python3 "$here/fastest_python.py" 2>/dev/null)}"
want="$("$python" -c 'import os, sys; print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))')"
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.interpreter" 2>/dev/null)" = "$want" ]; then
  echo "$venv"; exit 0
fi
rm -rf "$venv"
"$want" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' >&2 || true
"$venv/bin/pip" install -q -e "$root" psutil 2>&1 | grep -v '^WARNING: Location' >&2 || true
"$venv/bin/python" -c 'import llmport, psutil'  # the install worked
echo "$want" > "$venv/.interpreter"
echo "$venv"
