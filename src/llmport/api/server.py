"""How Uvicorn serves llmport: its options, and its HTTP protocol with one repair."""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HTTPProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol, freeing a connection as soon as the client drops it.

    Uvicorn (0.55) cancels a connection's keep-alive timer on ``connection_lost`` only when
    the connection ended cleanly. When a client resets it instead (clients abort idle
    connections, proxies reset them), the timer keeps the protocol, its transport, its last
    request cycle and response alive for the whole keep-alive timeout: under load hundreds
    of dead connections and their memory at any moment.
    """

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._unset_keepalive_if_required()


# Idle client connections are kept 30 s (Uvicorn's default is 5 s, shorter than clients'
# and proxies' pools usually keep theirs); running streams get 30 s at shutdown.
UVICORN_OPTIONS: dict[str, Any] = {
    "loop": "uvloop", "http": HTTPProtocol, "ws": "none", "log_level": "warning",
    "access_log": False, "timeout_keep_alive": 30, "timeout_graceful_shutdown": 30}
