"""Attach the observability subscribers a config asks for, and run their background parts."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from llmport.config import Config
from llmport.gateway.gateway import Gateway
from llmport.observability.logging import AccessLog, BodyLog, JSONLines, resolved_format
from llmport.observability.metrics import Metrics, multiprocess_dir

REFRESH_SECONDS = 1.0


class Observability:
    def __init__(self, gateway: Gateway, config: Config) -> None:
        settings = config.observability
        self.events = gateway.events
        self.metrics: Metrics | None = None
        self.tracing: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._metrics_port = settings.metrics.port
        self._host = config.server.host
        if settings.tracing.enabled:
            from llmport.observability.tracing import Tracing  # OpenTelemetry only when on

            self.tracing = Tracing(settings.tracing)
            gateway.events.subscribe(self.tracing)  # first: it names the trace others log
        if settings.metrics.enabled:
            self.metrics = Metrics(gateway.live_state, settings.metrics.tenant_labels)
            gateway.events.subscribe(self.metrics)
        self.access_lines: JSONLines | None = None
        if config.logging.access_log and config.logging.level in ("debug", "info"):
            if resolved_format(config.logging.format) == "json":
                self.access_lines = JSONLines()
            gateway.events.subscribe(AccessLog(self.access_lines))
        if config.logging.log_bodies:
            gateway.events.subscribe(BodyLog(config.logging.redact))

    async def start(self) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        shared = multiprocess_dir() is not None
        if shared or self._metrics_port is not None:
            # Scrapes that do not pass through Metrics.exposition on this loop (other
            # workers', the metrics port's server thread) see gauges refreshed once a second.
            self._tasks.append(asyncio.create_task(self._refresh(metrics)))
        if not shared and self._metrics_port is not None:
            from prometheus_client import start_http_server

            start_http_server(self._metrics_port, self._host, registry=metrics.registry)

    async def stop(self) -> None:
        self.events.drain()  # the last requests' lines, counts and spans
        if self.access_lines is not None:
            self.access_lines.flush()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.metrics is not None:
            self.metrics.tallies.flush()
            if multiprocess_dir() is not None:
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
        if self.tracing is not None:
            self.tracing.shutdown()

    @staticmethod
    async def _refresh(metrics: Metrics) -> None:
        """Keep the gauges of live state current for scrapes made elsewhere."""
        while True:
            metrics.refresh()
            await asyncio.sleep(REFRESH_SECONDS)
