#!/usr/bin/env python3
"""Compare gateways by switching the load between them every few seconds.

    alternate.py [--windows N] [--seconds S] NAME=CONFIG[@SOURCE][#VARIANT] ...

Every target's gateway (and its own mock) runs from the start, all gateways pinned to
CPU 1 and the mocks and wrk to CPU 0; the load (wrk, 16 connections, non-streaming chat)
then goes to one gateway at a time, for S seconds each, in alternating order, N times.
A target's CPU per request in a window is its process's CPU time over the requests it
answered. This VM's speed drifts by tens of per cent within minutes; targets measured
seconds apart share the drift, so the per-window ratios to the first target are far
steadier than runs minutes apart (what ``compare.py --rounds`` can do). Prints, per target,
the median CPU per request and the median and quartiles of the ratio of the first
target's CPU per request to its own (its throughput on one core relative to the first).

CONFIG is a file in bench/configs (or a path). @SOURCE runs llmport from another source
tree (a ``git worktree`` of another commit: its ``src`` goes first on PYTHONPATH).
#VARIANT runs the gateway through ``variants.py`` with that variant (attribution only).
Used for the observability attribution in the README:
    bench/alternate.py --windows 40 bare=bare.yaml obs=observability.yaml \\
        noop=observability.yaml#noop-subscribers
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from memory_soak import wait_http

HERE = Path(__file__).resolve().parent
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="+", help="NAME=CONFIG[@SOURCE][#VARIANT]")
    parser.add_argument("--windows", type=int, default=30)
    parser.add_argument("--seconds", type=int, default=1)
    parser.add_argument("--api-key", default="sk-llmport-bench")
    parser.add_argument("--base-port", type=int, default=38400)
    args = parser.parse_args()
    if args.windows < 2:
        parser.error("--windows: at least 2 (the quartiles need two ratios)")
    runtime = HERE / ".venv" / "bin"  # the benchmark's interpreter (runtime_venv.sh)
    python = runtime / "python" if runtime.exists() else Path(sys.executable)
    work = Path(tempfile.mkdtemp(prefix="llmport-alternate-"))
    body = work / "body.json"
    body.write_text(json.dumps(BODY))
    wrk_env = dict(os.environ, WRK_BODY_FILE=str(body), WRK_AUTH=f"Bearer {args.api_key}")
    processes: list[subprocess.Popen[bytes]] = []
    targets: list[tuple[str, str, int]] = []  # name, chat URL, gateway pid
    try:
        for index, spec in enumerate(args.targets):
            name, _, rest = spec.partition("=")
            rest, _, variant = rest.partition("#")
            config, _, source = rest.partition("@")
            port = args.base_port + 2 * index
            upstream = f"http://127.0.0.1:{port + 1}/v1"
            env = dict(os.environ, UPSTREAM_BASE=upstream, BENCH_DATA_DIR=str(work / name))
            if source:
                env["PYTHONPATH"] = str(Path(source) / "src")
            if variant:
                env["LLMPORT_VARIANT"] = variant
            processes.append(subprocess.Popen(
                ["taskset", "-c", "0", str(python), str(HERE / "mock_upstream.py"),
                 "--port", str(port + 1)], env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
            path = config if "/" in config else str(HERE / "configs" / config)
            entry = [str(HERE / "variants.py")] if variant else [str(python.parent / "llmport")]
            gateway = subprocess.Popen(
                ["taskset", "-c", "1", str(python), *entry, "serve", "--config", path,
                 "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                stderr=(work / f"{name}.log").open("wb"))
            processes.append(gateway)
            targets.append((name, f"http://127.0.0.1:{port}/v1/chat/completions", gateway.pid))
            wait_http(f"http://127.0.0.1:{port}/healthz")

        def load(url: str, seconds: int) -> int:
            done = subprocess.run(
                ["taskset", "-c", "0", "wrk", "-t1", "-c16", f"-d{seconds}s", "-s",
                 str(HERE / "wrk_post.lua"), url], env=wrk_env, capture_output=True,
                text=True, check=True)
            result = json.loads(done.stdout.split("WRK_JSON ", 1)[1].splitlines()[0])
            if any(result[f"err_{kind}"] for kind in ("connect", "read", "write", "status",
                                                        "timeout")):
                raise SystemExit(f"{url}: error answers under load: {result}")
            return int(result["requests"])

        for _, url, _ in targets:  # warm-up, not measured
            load(url, 2)
        cpu: dict[str, list[float]] = {name: [] for name, _, _ in targets}
        for window in range(args.windows):
            for name, url, pid in (targets if window % 2 == 0 else targets[::-1]):
                before = cpu_seconds(pid)
                answered = load(url, args.seconds)
                cpu[name].append((cpu_seconds(pid) - before) * 1e6 / answered)
        first = targets[0][0]
        print(f"{args.windows} windows of {args.seconds} s; throughput relative to {first}")
        for name, values in cpu.items():
            ratios = [a / b for a, b in zip(cpu[first], values, strict=True)]
            q1, median, q3 = statistics.quantiles(ratios, n=4)
            print(f"{name:24s} {statistics.median(values):7.1f} µs/request   "
                  f"ratio median {median:.3f} (quartiles {q1:.3f}, {q3:.3f})")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
