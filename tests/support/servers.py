"""Run llmport for real: a Uvicorn server on a loopback port, in a background thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from llmport.api.server import uvicorn_options
from llmport.app import create_app
from llmport.config import load_config


class GatewayServer:
    def __init__(self, config: dict[str, Any], tmp_path: Path) -> None:
        path = tmp_path / f"llmport-{id(self)}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.config = load_config(path)
        self.app = create_app(self.config)
        self.server = uvicorn.Server(uvicorn.Config(  # as `llmport serve` runs it
            self.app, host="127.0.0.1", port=0, lifespan="on", **uvicorn_options(self.config)))
        self._thread = threading.Thread(target=self.server.run, name="llmport", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway(self) -> Any:
        return self.app.gateway

    def start(self) -> GatewayServer:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("llmport did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(15)
