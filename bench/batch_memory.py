#!/usr/bin/env python3
"""Peak memory of a large batch: upload, run, download, with the official ``openai`` client.

Starts the mock upstream and llmport (``bare.yaml`` with batches on, a fresh data
directory), uploads a batch input file of ``--lines`` requests of about ``--line-kb`` KB
each, runs it, downloads its output, and prints the gateway's RSS before, its peak
(the kernel's high-water mark, VmHWM) during the upload and over the whole run, and the
sizes involved. What it shows: how much memory a file or a batch costs beyond its size.

    python bench/batch_memory.py [--lines 20000] [--line-kb 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from memory_soak import wait_http
from openai import OpenAI

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def memory_mb(pid: int, field: str) -> float:
    """``VmRSS`` or ``VmHWM`` (the peak) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no {field} for {pid}")


def reset_peak(pid: int) -> None:
    """Start VmHWM over from the current RSS (Linux ≥ 4.0: write 5 to clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def input_file(path: Path, lines: int, line_kb: float) -> int:
    filler = "x" * int(line_kb * 1024)
    with path.open("wb") as out:
        for index in range(lines):
            out.write(orjson.dumps({
                "custom_id": f"request-{index}", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [
                    {"role": "user", "content": f"{index} {filler}"}]}},
                option=orjson.OPT_APPEND_NEWLINE))
    return path.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--line-kb", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--port", type=int, default=38390)
    parser.add_argument("--mock-port", type=int, default=38310)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llmport-batch-memory-"))
    upstream = f"http://127.0.0.1:{args.mock_port}/v1"
    config = work / "config.yaml"
    config.write_text((HERE / "configs" / "bare.yaml").read_text().replace(
        "${BENCH_DATA_DIR:-/tmp/llmport-bench/bare}", str(work / "data"))
        + f"batches: {{concurrency: {args.concurrency}, poll_interval: 0.5}}\n")
    env = dict(os.environ, UPSTREAM_BASE=upstream)
    mock = subprocess.Popen([sys.executable, str(HERE / "mock_upstream.py"), "--port",
                             str(args.mock_port), "--tokens", "8"], env=env)
    binary = os.environ.get("LLMPORT_BIN", str(ROOT / ".venv" / "bin" / "llmport"))
    gateway = subprocess.Popen([binary, "serve", "--config", str(config), "--port",
                                str(args.port)], env=env, start_new_session=True)
    try:
        wait_http(upstream.removesuffix("/v1") + "/health")
        wait_http(f"http://127.0.0.1:{args.port}/healthz")
        size = input_file(work / "input.jsonl", args.lines, args.line_kb)
        client = OpenAI(base_url=f"http://127.0.0.1:{args.port}/v1", api_key="sk-llmport-bench",
                        timeout=600)
        idle = memory_mb(gateway.pid, "VmRSS")
        reset_peak(gateway.pid)
        started = time.monotonic()
        with (work / "input.jsonl").open("rb") as handle:
            uploaded = client.files.create(file=handle, purpose="batch")
        upload_s = time.monotonic() - started
        upload_peak = memory_mb(gateway.pid, "VmHWM")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        reset_peak(gateway.pid)
        peaks: dict[str, float] = {}  # the RSS high-water mark over each status's polls
        while batch.status not in ("completed", "failed", "cancelled", "expired"):
            time.sleep(0.5)
            peak = memory_mb(gateway.pid, "VmHWM")
            reset_peak(gateway.pid)
            peaks[batch.status] = max(peaks.get(batch.status, 0.0), peak)
            batch = client.batches.retrieve(batch.id)
        run_s = time.monotonic() - started - upload_s
        if batch.status != "completed" or not batch.output_file_id:
            raise SystemExit(f"batch ended {batch.status}: {batch.errors}")
        output = client.files.content(batch.output_file_id).content
        whole_peak = max(memory_mb(gateway.pid, "VmHWM"), upload_peak, *peaks.values())
        answered = output.count(b"\n")
        print(f"input {size / 2**20:.1f} MB, {args.lines} lines; output {len(output) / 2**20:.1f}"
              f" MB, {answered} lines; counts {batch.request_counts}")
        print(f"RSS idle {idle:.0f} MB; peak during upload {upload_peak:.0f} MB "
              f"(+{upload_peak - idle:.0f}); peak over upload, run and download "
              f"{whole_peak:.0f} MB (+{whole_peak - idle:.0f})")
        print("peak RSS while the batch was " + ", ".join(
            f"{status} {peak:.0f} MB (+{peak - idle:.0f})" for status, peak in peaks.items()))
        print(f"upload {upload_s:.1f} s; run {run_s:.1f} s")
        return 0 if answered == args.lines else 1
    finally:
        gateway.terminate()
        mock.terminate()
        gateway.wait(30)
        mock.wait(30)


if __name__ == "__main__":
    sys.exit(main())
