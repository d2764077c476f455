#!/usr/bin/env python3
"""Print the path of the fastest CPython (3.11 or newer) on this machine.

How a CPython was built changes what every Python gateway costs: on the benchmark
machine the distribution's python3.11 (built with profile-guided and link-time
optimisation) runs the same code in about 0.6 of the time of a plain source build
(pyenv's default). compare.py runs every Python gateway (llmport, the thin passthrough,
LiteLLM) on the interpreter printed here, so they are compared on equal terms, and says
which one it was. Candidates: every python3.x on PATH and in /usr/bin, and python3;
each times the same small workload (calls, attribute access, dicts, floats) three times,
in five rounds that take the candidates in turn (so a spell of load elsewhere on the
machine cannot make one of them lose: with three rounds it once picked the slower build while
an install ran, and once just after the test suite had run), and its best time counts.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

WORKLOAD = """
import sys, time
if sys.version_info < (3, 11):
    raise SystemExit(3)
class Item:
    __slots__ = ("a", "b")
    def __init__(self, a, b):
        self.a = a
        self.b = b
def price(rate, tokens):
    return (tokens if tokens > 0 else 0) * rate / 1_000_000
def work():
    total = 0.0
    for i in range(200_000):
        item = Item(i, 2.5)
        total += price(item.b, i) + len({"a": i, "b": item.a, "c": "x"})
    return total
best = float("inf")
for _ in range(3):
    started = time.perf_counter()
    work()
    best = min(best, time.perf_counter() - started)
print(best)
"""


def candidates() -> list[str]:
    names = ["python3", *(f"python3.{minor}" for minor in range(11, 20))]
    found = [shutil.which(name) for name in names]
    found += glob.glob("/usr/bin/python3.1[1-9]")
    unique: dict[str, str] = {}
    for path in filter(None, found):
        unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())


ROUNDS = 5


def timed(python: str) -> float | None:
    try:
        done = subprocess.run([python, "-c", WORKLOAD], capture_output=True, text=True,
                              timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return float(done.stdout) if done.returncode == 0 else None


def has_venv(python: str) -> bool:
    return subprocess.run([python, "-c", "import venv, ensurepip"],
                          capture_output=True).returncode == 0


def main() -> int:
    pythons = [python for python in candidates() if has_venv(python)]
    times: dict[str, list[float]] = {python: [] for python in pythons}
    for _ in range(ROUNDS):
        for python in pythons:
            t = timed(python)
            if t is not None:
                times[python].append(t)
    usable = {python: min(ts) for python, ts in times.items() if ts}
    for python, t in sorted(usable.items(), key=lambda item: item[1]):
        print(f"{python}: {t * 1000:.0f} ms", file=sys.stderr)
    if not usable:
        print("no CPython 3.11+ with venv support found", file=sys.stderr)
        return 2
    print(min(usable, key=lambda python: usable[python]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
