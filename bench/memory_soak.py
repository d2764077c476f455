#!/usr/bin/env python3
"""Memory soak: 100,000 requests (streamed and not) through one llmport worker.

Starts the mock upstream and llmport (a config from bench/configs), sends the
requests in rounds with wrk (non-streamed) and stream_client.py (streamed), and
samples the gateway's RSS after every round. Passes when the RSS at the end is
within 10% of where it settled after the first 10,000 requests.

    python bench/memory_soak.py [--config full-inprocess.yaml] [--requests 100000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BODY = {"model": "gpt-4o-mini", "max_tokens": 64,
        "messages": [{"role": "user", "content": "Write one short sentence about gateways."}]}


def wait_http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, data=data, headers=headers or {})
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def rss_mb(pid: int) -> float:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="full-inprocess.yaml")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--round", type=int, default=10_000, help="requests per round")
    parser.add_argument("--stream-share", type=float, default=0.2)
    parser.add_argument("--port", type=int, default=38380)
    parser.add_argument("--mock-port", type=int, default=38300)
    parser.add_argument("--api-key", default="sk-llmport-bench")
    args = parser.parse_args()
    python = sys.executable
    upstream = f"http://127.0.0.1:{args.mock_port}/v1"
    env = dict(os.environ, UPSTREAM_BASE=upstream, MOCK_API_BASE=upstream)
    mock = subprocess.Popen([python, str(HERE / "mock_upstream.py"), "--port",
                             str(args.mock_port), "--tokens", "32"], env=env)
    # The benchmark's runtime venv (runtime_venv.sh) when it exists, as compare.py uses it.
    runtime = HERE / ".venv" / "bin" / "llmport"
    default = runtime if runtime.exists() else ROOT / ".venv" / "bin" / "llmport"
    binary = os.environ.get("LLMPORT_BIN", str(default))
    gateway = subprocess.Popen([binary, "serve", "--config", str(HERE / "configs" / args.config),
                                "--port", str(args.port)], env=env, start_new_session=True)
    samples: list[tuple[int, float]] = []
    try:
        base = f"http://127.0.0.1:{args.port}"
        auth = {"authorization": f"Bearer {args.api_key}", "content-type": "application/json"}
        wait_http(upstream.removesuffix("/v1") + "/health")
        wait_http(base + "/v1/chat/completions", json.dumps(BODY).encode(), auth)
        body_file = Path("/tmp/llmport-soak-body.json")
        body_file.write_text(json.dumps(BODY))
        sent = 0
        while sent < args.requests:
            streams = int(args.round * args.stream_share)
            plain = args.round - streams
            # wrk's main thread sleeps its whole -d even when the count stops the load, so
            # -d is sized for about 2,000 req/s, and what was really sent is counted.
            load = subprocess.run(
                ["wrk", "-t1", "-c16", f"-d{max(2, math.ceil(plain / 2000))}s", "-s",
                 str(HERE / "wrk_post.lua"), base + "/v1/chat/completions"], check=True,
                capture_output=True, text=True,
                env=dict(env, WRK_BODY_FILE=str(body_file), WRK_AUTH=f"Bearer {args.api_key}",
                         WRK_MAX_REQUESTS=str(plain)))
            plain = json.loads(load.stdout.split("WRK_JSON ", 1)[1].splitlines()[0])["requests"]
            subprocess.run([python, str(HERE / "stream_client.py"), "--url",
                            base + "/v1/chat/completions", "--concurrency", "16",
                            "--duration", "300", "--max-requests", str(streams),
                            "--api-key", args.api_key],
                           check=True, capture_output=True)
            sent += plain + streams
            samples.append((sent, rss_mb(gateway.pid)))
            print(f"{sent:>7} requests: RSS {samples[-1][1]:.1f} MB", flush=True)
    finally:
        os.killpg(gateway.pid, signal.SIGTERM)
        mock.terminate()
        gateway.wait(30)
        mock.wait(30)
    settled = samples[0][1]
    final = samples[-1][1]
    growth = (final - settled) / settled * 100
    verdict = "PASS" if growth <= 10 else "FAIL"
    print(f"{verdict}: RSS {settled:.1f} MB after {samples[0][0]:,} requests, {final:.1f} MB "
          f"after {samples[-1][0]:,} ({growth:+.1f}%)")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
