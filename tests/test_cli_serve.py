"""`llmport serve` as a newcomer runs it: a real process, the official client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("llmport serve did not start listening")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    processes: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> tuple[int, subprocess.Popen[str]]:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "llmport", "serve", "--port", str(port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
            env={**os.environ, "LLMPORT_MASTER_KEY": "", **(env or {})})
        processes.append(process)
        return port, process

    yield start
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(20)


def test_serve_with_no_config_answers_the_official_client(serve: object) -> None:
    port, process = serve()  # type: ignore[operator]
    wait_listening(port, process)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="anything")
    assert [m.id for m in client.models.list().data] == ["llmport-demo"]
    answer = client.chat.completions.create(
        model="llmport-demo", messages=[{"role": "user", "content": "hello"}])
    assert "demo" in answer.choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="llmport-demo", messages=[{"role": "user", "content": "hello"}], stream=True)
        if c.choices)
    assert streamed == answer.choices[0].message.content
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert "no master key configured" in stderr and "ANY API key" in stderr


def test_open_mode_refuses_a_public_bind(serve: object) -> None:
    _, process = serve("--host", "0.0.0.0")  # type: ignore[operator]
    assert process.wait(30) == 2
    assert "without auth.master_key" in process.stderr.read()  # type: ignore[union-attr]


def test_master_key_from_the_environment_is_required(serve: object) -> None:
    port, process = serve(env={"LLMPORT_MASTER_KEY": "sk-env-master-key"})  # type: ignore
    wait_listening(port, process)
    base = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()
    ok = openai.OpenAI(base_url=base, api_key="sk-env-master-key").models.list()
    assert ok.data[0].id == "llmport-demo"


def test_two_workers_serve(serve: object, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("models:\n  - name: demo\n    provider: demo\n    token_delay_ms: 0\n")
    port, process = serve("--config", str(config), "--workers", "2")  # type: ignore
    wait_listening(port, process)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=3)
    for _ in range(4):
        assert client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "x"}]).choices
