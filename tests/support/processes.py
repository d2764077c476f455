"""A real ``llmport serve`` in a subprocess: the replicas and crashes of the acceptance tests.

Unlike ``servers.GatewayServer`` (a thread of the test process), this is the CLI
as operators run it, so a test can have several replicas that share nothing but
Redis and the database, ``kill -9`` one, and restart it on the same data_dir.
Output goes to a log file (a pipe nobody reads would fill up and block the
server); a failed start shows its tail.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
# Variables the CLI would read in place of what the config leaves out: a test's config must
# say everything itself (an operator's shell settings must not point a test at their database).
_CLEARED_ENV = ("LLMPORT_CONFIG", "LLMPORT_DATA_DIR", "LLMPORT_DATABASE_URL",
                "LLMPORT_REDIS_URL", "LLMPORT_MASTER_KEY", "PROMETHEUS_MULTIPROC_DIR")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LLMPortProcess:
    """``llmport serve --config FILE --port PORT`` with ``config`` written as YAML to ``directory``.

    ``start`` may follow ``stop`` or ``kill``: the same config and data_dir, a fresh port.
    """

    def __init__(self, config: dict[str, Any], directory: Path, name: str = "llmport") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.config = config
        self.config_path = directory / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = directory / f"{name}.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return Path(self.config["data_dir"])

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = READY_TIMEOUT) -> LLMPortProcess:
        """Start and wait until ``GET /readyz`` answers 200."""
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> LLMPortProcess:
        """Start the process on a fresh free port, without waiting for it."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.port = free_port()
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} on port {self.port}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "llmport", "serve", "--config", str(self.config_path),
                 "--port", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self._environment())
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> LLMPortProcess:
        """Wait for the launched process to be ready; fails with its output if it is not."""
        for _ in range(3):  # another program may take the free port before the server binds it
            if self._poll_ready(timeout):
                return self
            if self.running or "address already in use" not in self._this_start_log().lower():
                break
            self.launch()
        returncode = self.process.poll() if self.process is not None else None
        self._reap()
        raise AssertionError(f"{self.name} did not become ready within {timeout:g}s "
                             f"(exit status {returncode}); its output:\n{self.log_tail()}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (a graceful shutdown, as an orchestrator does) and wait; the exit status."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> int:
        """SIGKILL: the crash that gives the process no chance to clean up."""
        return self._signal(signal.SIGKILL, STOP_TIMEOUT)

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def _this_start_log(self) -> str:
        return self.log_tail(1_000_000).rpartition(f"--- start {self.starts} ")[2]

    def __enter__(self) -> LLMPortProcess:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.running:
            self.stop()

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _CLEARED_ENV}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _poll_ready(self, timeout: float) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    if client.get(self.url + "/readyz").status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        return False

    def _signal(self, sig: signal.Signals, timeout: float) -> int:
        process = self.process
        if process is None:
            raise RuntimeError(f"{self.name} was never started")
        if process.poll() is None:
            process.send_signal(sig)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"{self.name} did not exit within {timeout:g}s of {sig.name}; "
                                 f"its output:\n{self.log_tail()}") from None

    def _reap(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_together(*processes: LLMPortProcess,
                   timeout: float = READY_TIMEOUT) -> tuple[LLMPortProcess, ...]:
    """Launch all at once (replicas booting side by side), then wait for each to be ready.

    If one fails, the others are stopped before the failure is raised.
    """
    try:
        for process in processes:
            process.launch()
        for process in processes:
            process.wait_ready(timeout)
    except BaseException:
        for process in processes:
            process._reap()
        raise
    return processes
