#!/usr/bin/env python3
"""One command, every gateway, one table: llmport (bare; with all observability on; full
in-process; full on Redis + PostgreSQL), a thin FastAPI + aiohttp passthrough, the
LiteLLM proxy and the Portkey gateway, each measured by run_bench.py against the same
mock upstream.

    bench/run.sh                       # everything (about 25 minutes)
    bench/run.sh --targets llmport-full,litellm --reps 1
    bench/run.sh --targets llmport-bare,llmport-observability --rounds 3 --scenarios ns:16

``--rounds N`` runs the whole list of targets N times, one after the other (A B A B …),
and each figure is the median over the rounds: this VM's speed drifts by 10-20% over
minutes, so two configurations measured once each, minutes apart, can differ by more
than what separates them; interleaved rounds share the drift.

Each target runs in its own run_bench.py invocation (mock restarted, gateway pinned to
CPU 1, load and mock on CPU 0; direct and gateway measured back to back, ABBA); the
results are medians over the repetitions. The table is printed and written, with the
raw per-target JSON files, to bench/results/compare-<time>.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
EVENTS_PER_STREAM = 35  # role + 32 tokens + finish + usage events, as the mock sends them
KEY = "sk-llmport-bench"


def runtime_bin() -> Path:
    """The bin folder of the venv every Python gateway runs from (runtime_venv.sh)."""
    if "BENCH_RUNTIME_BIN" not in os.environ:
        venv = subprocess.run([str(HERE / "runtime_venv.sh")], check=True, text=True,
                              stdout=subprocess.PIPE).stdout.strip().splitlines()[-1]
        os.environ["BENCH_RUNTIME_BIN"] = str(Path(venv) / "bin")
    return Path(os.environ["BENCH_RUNTIME_BIN"])


def interpreter() -> str:
    """Which CPython the Python gateways ran on, and its version."""
    python = runtime_bin() / "python"
    return subprocess.run([str(python), "-c", "import sys, platform; print("
                           "open(sys.prefix + '/.interpreter').read().strip(), "
                           "platform.python_version())"],
                          check=True, text=True, stdout=subprocess.PIPE).stdout.strip()


def packages() -> dict[str, str]:
    """The Python gateways' installed distributions and their versions: every session
    installs afresh, so a result says what it ran on (with ``interpreter()``, which alone
    changes instructions a request by 10%)."""
    found = subprocess.run([str(runtime_bin() / "python"), "-c",
                            "import json, importlib.metadata as m; print(json.dumps(sorted("
                            "(d.metadata['Name'], d.version) for d in m.distributions())))"],
                           check=True, text=True, stdout=subprocess.PIPE).stdout
    return dict(json.loads(found))


def llmport(config: str) -> dict[str, object]:
    binary = os.environ.get("LLMPORT_BIN", str(runtime_bin() / "llmport"))
    return {"cmd": f"exec {binary} serve --config {HERE / 'configs' / config} --port {{port}}",
            "api_key": KEY}


def targets() -> dict[str, dict[str, object]]:
    venv_bin = runtime_bin()
    litellm_venv = os.environ.get("LITELLM_VENV", "/tmp/litellm-venv")
    portkey_root = os.environ.get("PORTKEY_ROOT", "/tmp/portkey-gateway")
    return {
        "thin-fastapi-aiohttp": {
            "cmd": f"cd {HERE / 'gateways'} && exec {venv_bin / 'uvicorn'} thin_aiohttp:app "
                   "--host 127.0.0.1 --port {port} --loop uvloop --http httptools "
                   "--no-access-log --log-level warning"},
        "llmport-bare": llmport("bare.yaml"),
        "llmport-observability": llmport("observability.yaml"),
        "llmport-observability-otlp": {
            **llmport("observability-otlp.yaml"),
            "cmd": "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT={upstream_base}/traces "
                   + str(llmport("observability-otlp.yaml")["cmd"])},
        "llmport-observability-metrics": llmport("observability-metrics.yaml"),
        "llmport-observability-logs": llmport("observability-logs.yaml"),
        "llmport-observability-tracing": llmport("observability-tracing.yaml"),
        "llmport-full": {**llmport("full-inprocess.yaml"), "setup": "full"},
        "llmport-full-redis": {**llmport("full-redis.yaml"), "setup": "full-redis"},
        # Two workers on the gateway's CPUs (--gateway-cpus): CPU a request against one
        # worker's says what a second worker costs; on two CPUs, what it adds.
        "llmport-full-redis-2w": {**llmport("full-redis.yaml"), "setup": "full-redis",
                                  "cmd": str(llmport("full-redis.yaml")["cmd"])
                                  + " --workers 2"},
        "litellm": {
            "install": [str(HERE / "install_litellm.sh"), litellm_venv],
            "env": {"BENCH_PYTHON": str(venv_bin / "python"),
                    "LITELLM_LOG": "ERROR", "LITELLM_MODE": "PRODUCTION",
                    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                    "LITELLM_MASTER_KEY": "sk-" + "5" * 48},
            "api_key": "sk-" + "5" * 48,
            "cmd": f"exec {litellm_venv}/bin/litellm --config {HERE / 'gateways' / 'litellm.yaml'}"
                   " --host 127.0.0.1 --port {port} --num_workers 1"},
        "portkey": {
            "install": [str(HERE / "install_portkey.sh"), portkey_root],
            "api_key": "sk-mock",
            "headers": ["x-portkey-provider: openai", "x-portkey-custom-host: {upstream_base}"],
            "cmd": f"exec node --require {HERE / 'gateways' / 'node-loopback.cjs'} "
                   f"{portkey_root}/node_modules/@portkey-ai/gateway/build/start-server.js "
                   "--port={port} --headless"},
    }


def run_target(name: str, spec: dict[str, object], args: argparse.Namespace,
               stamp: str) -> dict[str, object] | None:
    env = dict(os.environ, **spec.get("env", {}))  # type: ignore[arg-type]
    if "install" in spec:
        installed = subprocess.run(spec["install"], env=env, capture_output=True,  # type: ignore
                                   text=True)
        if installed.returncode != 0:
            print(f"[compare] {name}: install failed, skipped\n{installed.stderr[-2000:]}",
                  file=sys.stderr)
            return None
    if spec.get("setup"):
        subprocess.run([sys.executable, str(HERE / "setup_full.py"), str(spec["setup"])],
                       check=True, env=env)
    out = RESULTS / f"{name}-{stamp}.json"
    argv = [str(HERE / "run_bench.sh"), "--name", name, "--out", str(out),
            "--gateway-cmd", str(spec["cmd"]), "--reps", str(args.reps),
            "--duration", str(args.duration), "--scenarios", args.scenarios,
            "--gateway-cpus", args.gateway_cpus]
    if spec.get("api_key"):
        argv += ["--api-key", str(spec["api_key"])]
    for header in spec.get("headers", []):  # type: ignore[attr-defined]
        argv += ["--header", header]
    print(f"[compare] {name}: {' '.join(argv[:3])} …", file=sys.stderr, flush=True)
    done = subprocess.run(argv, env=env, cwd=HERE)
    if done.returncode != 0 or not out.exists():
        print(f"[compare] {name}: run failed (exit {done.returncode})", file=sys.stderr)
        return None
    return json.loads(out.read_text())


def row(name: str, result: dict[str, object]) -> dict[str, object]:
    summary: dict[str, dict[str, dict[str, float]]] = result["summary"]  # type: ignore
    ns16 = summary.get("ns:16", {})
    ns1 = summary.get("ns:1", {})
    st = summary.get("st:16", {})
    stream_cpu = st.get("gateway", {}).get("gw_cpu_s_per_1k")
    return {
        "target": name,
        "cpu_ms_per_request": ns16.get("gateway", {}).get("gw_cpu_s_per_1k"),
        "rps_ns16": ns16.get("gateway", {}).get("rps"),
        "cores_ns16": ns16.get("gateway", {}).get("gw_cores"),
        "added_p50_ms_ns1": ns1.get("added", {}).get("p50_ms"),
        "streams_pct_of_direct": None if "added" not in st
        else 100 * st["added"].get("rps_ratio_gw_over_direct", 0),
        "added_ttft_ms_st16": st.get("added", {}).get("ttft_p50_ms"),
        "cpu_us_per_chunk": None if stream_cpu is None else stream_cpu * 1000 / EVENTS_PER_STREAM,
        "rss_mb": max(s.get("gateway", {}).get("gw_rss_peak_mb", 0) for s in summary.values()),
        "errors": sum(s.get("gateway", {}).get("errors", 0) for s in summary.values()),
        "smoke": result.get("smoke"),
    }


def median_row(name: str, rounds: list[dict[str, object]]) -> dict[str, object]:
    """One row from the rows of several rounds: each number is their median."""
    merged: dict[str, object] = {"target": name, "rounds": len(rounds)}
    for key, value in rounds[0].items():
        if key == "target":
            continue
        values = [r[key] for r in rounds if isinstance(r.get(key), int | float)]
        if key == "errors":
            merged[key] = sum(values)  # type: ignore[arg-type]
        elif isinstance(value, int | float) and values:
            merged[key] = statistics.median(values)  # type: ignore[type-var]
        else:
            merged[key] = value
    return merged


def fmt(value: object, spec: str, unit: str = "", sign: str = "") -> str:
    return "-" if value is None else f"{sign}{format(value, spec)}{unit}"


def table(rows: list[dict[str, object]], args: argparse.Namespace) -> str:
    rounds = f", in each of {args.rounds} interleaved rounds (medians over rounds)" \
        if args.rounds > 1 else ""
    lines = [
        f"Medians of {args.reps} repetitions x {args.duration:g} s{rounds}; gateway pinned to "
        f"CPU(s) {args.gateway_cpus!r}, load generator and mock on CPU 0; ns:C = wrk with C "
        "connections, st:16 = 16 streams of 32 tokens 2 ms apart. Python gateways on "
        f"{interpreter()} (bench/fastest_python.py).",
        "",
        "| target | CPU per request (ns:16) | req/s, 1 core (ns:16) | added p50 (ns:1) "
        "| streams vs direct | added TTFT (st:16) | CPU per relayed chunk | RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {fmt(r['cpu_ms_per_request'], '.3f', ' ms')} "
            f"| {fmt(r['rps_ns16'], ',.0f')} | {fmt(r['added_p50_ms_ns1'], '.2f', ' ms', '+')} "
            f"| {fmt(r['streams_pct_of_direct'], '.0f', '%')} "
            f"| {fmt(r['added_ttft_ms_st16'], '.2f', ' ms', '+')} "
            f"| {fmt(r['cpu_us_per_chunk'], '.0f', ' µs')} | {fmt(r['rss_mb'], '.0f', ' MB')} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default=",".join(targets()))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the target list this many times, interleaved")
    parser.add_argument("--duration", type=float, default=7.0)
    parser.add_argument("--scenarios", default="ns:1,ns:16,ns:64,st:16")
    parser.add_argument("--gateway-cpus", default="1")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    known = targets()
    names = args.targets.split(",")
    measured: dict[str, list[dict[str, object]]] = {name: [] for name in names}
    for round_ in range(args.rounds):
        for name in names:
            suffix = f"{stamp}-r{round_ + 1}" if args.rounds > 1 else stamp
            result = run_target(name, known[name], args, suffix)
            if result is not None:
                measured[name].append(row(name, result))
    rows = [median_row(name, found) for name, found in measured.items() if found]
    text = table(rows, args)
    print(text)
    (RESULTS / f"compare-{stamp}.md").write_text(text + "\n")
    (RESULTS / f"compare-{stamp}.json").write_text(json.dumps(
        {"args": vars(args), "rows": rows, "interpreter": interpreter(),
         "packages": packages()}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
