"""When each API key was last used: noted in memory per request, written in batches.

A request costs a dict store; every ``interval`` seconds (and at shutdown) the keys used
since the last write get their ``last_used_at`` in one statement. Replicas write their own
uses; the database keeps the latest, so a replica with older news never moves it back.
A write that fails is retried with the next one: a use is never lost, only late.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from llmport.db.database import Database

log = structlog.get_logger("llmport.keys")


class LastUsed:
    def __init__(self, db: Database, interval: float) -> None:
        self.db = db
        self.interval = interval
        self._used: dict[str, float] = {}  # key id → epoch seconds of its latest use
        self._task: asyncio.Task[None] | None = None

    def note(self, key_id: str) -> None:
        self._used[key_id] = time.time()

    def start(self) -> None:
        self._task = asyncio.create_task(self._write_every_interval())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.write()

    async def write(self) -> None:
        """Store the uses noted since the last write; on failure keep them for the next."""
        if not self._used:
            return
        used, self._used = self._used, {}
        try:
            await self.db.mark_keys_used(used)
        except BaseException as exc:  # also a cancel (shutdown): aclose writes them then
            for key_id, when in used.items():  # a use noted meanwhile is newer: it stays
                if self._used.get(key_id, 0.0) < when:
                    self._used[key_id] = when
            if not isinstance(exc, Exception):
                raise
            log.warning("recording when keys were last used failed; retried later",
                        keys=len(used), error=str(exc))

    async def _write_every_interval(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.write()
