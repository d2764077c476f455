"""Client connections as Uvicorn serves them for llmport (api/server.py)."""

from __future__ import annotations

import gc
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from llmport.api.server import HTTPProtocol
from tests.conftest import demo_config
from tests.support.servers import GatewayServer


def live_protocols() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, HTTPProtocol))


def test_a_connection_the_client_resets_is_freed_at_once(
        start_gateway: Callable[[dict[str, Any]], GatewayServer]) -> None:
    server = start_gateway(demo_config())
    before = live_protocols()
    clients = []
    for _ in range(5):
        client = socket.create_connection(("127.0.0.1", server.port))
        client.sendall(b"GET /healthz HTTP/1.1\r\nhost: llmport\r\n\r\n")
        assert client.recv(4096).startswith(b"HTTP/1.1 200")
        clients.append(client)
    assert live_protocols() == before + 5  # idle, kept alive for their next request
    for client in clients:  # a reset (RST), as clients and proxies abort idle connections
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
    deadline = time.monotonic() + 2  # well inside the 30 s keep-alive that held them before
    while live_protocols() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live_protocols() == before
