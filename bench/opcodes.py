#!/usr/bin/env python3
"""Python opcodes a request executes, by function: where two configurations differ.

    opcodes.py [--requests N] [--top K] CONFIG_A[#VARIANT] CONFIG_B[#VARIANT]
    e.g. opcodes.py bare.yaml observability.yaml

#VARIANT runs that gateway through ``variants.py`` (as in ``alternate.py``).

Each configuration's gateway runs with a ``sys.settrace`` opcode counter (about 30 times
slower, so timers fire after far fewer requests than at full speed: per-batch work counts
more here than it costs); after 300 requests to warm it up the counter is switched on
(``SIGUSR1``), N requests are sent (4 at a time), it is switched off and its counts written
(``SIGUSR2``). Prints each configuration's opcodes a request, then the functions whose
counts differ most (B minus A, a request) and the C functions called more or less often.
Deterministic to within the timers' share: where ``instructions.sh`` gives one total, this
names the Python code that makes the difference (about 55 of callgrind's instructions per
opcode on this VM's Debian 3.11, C work such as ``orjson.dumps`` not included).
"""

from __future__ import annotations

import argparse
import collections
import os
import pickle
import runpy
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

from memory_soak import wait_http

HERE = Path(__file__).resolve().parent


def serve(config: str, port: str, out: str) -> None:
    """The gateway, counting while switched on (SIGUSR1 toggles, SIGUSR2 writes ``out``)."""
    opcodes: collections.Counter[CodeType] = collections.Counter()
    c_calls: collections.Counter[str] = collections.Counter()

    def each_opcode(frame: FrameType, event: str, _: Any) -> Any:
        if event == "opcode":
            opcodes[frame.f_code] += 1
        return each_opcode

    def each_frame(frame: FrameType, _: str, __: Any) -> Any:
        frame.f_trace_opcodes = True
        return each_opcode

    def each_call(_: FrameType, event: str, called: Any) -> None:
        if event == "c_call":
            c_calls[getattr(called, "__qualname__", repr(called))] += 1

    counting = [False]

    def toggle(*_: Any) -> None:
        counting[0] = not counting[0]
        sys.settrace(each_frame if counting[0] else None)
        sys.setprofile(each_call if counting[0] else None)

    def write(*_: Any) -> None:
        by_function = collections.Counter[str]()
        for code, count in opcodes.items():  # several code objects may share a name
            where = code.co_filename.split("site-packages/")[-1].split("src/")[-1]
            by_function[f"{where}:{code.co_firstlineno} {code.co_name}"] += count
        part = Path(f"{out}.part")  # renamed when whole: the harness waits for ``out``
        part.write_bytes(pickle.dumps((dict(by_function), dict(c_calls))))
        part.replace(out)

    signal.signal(signal.SIGUSR1, toggle)
    signal.signal(signal.SIGUSR2, write)
    sys.argv = ["llmport", "serve", "--config", config, "--port", port]
    if os.environ.get("LLMPORT_VARIANT"):  # variants.py patches, then serves
        runpy.run_path(str(HERE / "variants.py"), run_name="__main__")
        return
    from llmport.cli import main

    main()


def count(python: Path, target: str, requests: int, port: int, work: Path
          ) -> tuple[dict[str, int], dict[str, int]]:
    out = work / f"{port}.pickle"
    config, _, variant = target.partition("#")
    env = dict(os.environ, UPSTREAM_BASE=f"http://127.0.0.1:{port + 1}/v1",
               BENCH_DATA_DIR=str(work / str(port)), LLMPORT_VARIANT=variant)
    mock = subprocess.Popen([str(python), str(HERE / "mock_upstream.py"), "--port",
                             str(port + 1)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    path = config if "/" in config else str(HERE / "configs" / config)
    gateway = subprocess.Popen([str(python), __file__, "--serve", path, str(port), str(out)],
                               env=env, stdout=subprocess.DEVNULL,
                               stderr=(work / f"{port}.log").open("wb"))
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        load = [str(python), str(HERE / "fixed_load.py"), url]
        subprocess.run([*load, "300"], check=True)
        time.sleep(0.5)  # the warm-up's batches and timers go by
        gateway.send_signal(signal.SIGUSR1)
        subprocess.run([*load, str(requests)], check=True)
        time.sleep(1)  # the measured requests' batches are delivered, counted
        gateway.send_signal(signal.SIGUSR1)
        gateway.send_signal(signal.SIGUSR2)
        for _ in range(100):
            if out.exists():
                break
            time.sleep(0.1)
        counts: tuple[dict[str, int], dict[str, int]] = pickle.loads(out.read_bytes())
        return counts
    finally:
        for process in (gateway, mock):
            process.terminate()
            process.wait(30)


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--base-port", type=int, default=38480)
    args = parser.parse_args()
    runtime = HERE / ".venv" / "bin" / "python"  # the benchmark's interpreter, if made
    python = runtime if runtime.exists() else Path(sys.executable)
    n = args.requests
    with tempfile.TemporaryDirectory(prefix="llmport-opcodes-") as work:
        (a, a_calls), (b, b_calls) = (
            count(python, config, n, args.base_port + 2 * index, Path(work))
            for index, config in enumerate((args.first, args.second)))
    print(f"opcodes a request ({n} requests): {args.first} {sum(a.values()) / n:,.0f}, "
          f"{args.second} {sum(b.values()) / n:,.0f}")
    for title, first, second in (("functions", a, b), ("C calls", a_calls, b_calls)):
        print(f"\n{title}, {args.second} minus {args.first}, a request:")
        differences = sorted(((second.get(k, 0) - first.get(k, 0)) / n, k)
                             for k in first.keys() | second.keys())
        differences.sort(key=lambda item: -abs(item[0]))
        for difference, name in differences[:args.top]:
            if abs(difference) >= 0.05:
                print(f"  {difference:+9.1f}  {name}")


if __name__ == "__main__":
    main()
