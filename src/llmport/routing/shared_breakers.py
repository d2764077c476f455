"""Circuit-breaker state shared between replicas through the store.

When a deployment's breaker opens on one replica, the others stop sending it
traffic too, instead of each paying its own ``failure_threshold`` failures; when
a probe succeeds somewhere, every replica closes it. A change is published on the
``breakers`` channel, and an open breaker is also written to the store (expiring
when it would half-open), so a replica that starts later begins with it open.
Only used with a shared store (Redis); one process needs none of this.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

import orjson
import structlog

from llmport.observability.events import BreakerStateChanged
from llmport.routing.breaker import BreakerState

if TYPE_CHECKING:
    from llmport.routing.deployment import Deployment
    from llmport.stores.base import StateStore

CHANNEL = "breakers"
log = structlog.get_logger("llmport.breakers")


class SharedBreakers:
    handles = (BreakerStateChanged,)

    def __init__(self, store: StateStore, deployments: list[Deployment]) -> None:
        self.store = store
        self.deployments = {d.name: d for d in deployments}
        self.origin = uuid.uuid4().hex  # this replica, to ignore its own messages
        self._applying: str | None = None  # a remote change being applied: not re-published
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.store.subscribe(CHANNEL, self._on_message)
        now = time.time()
        for name, deployment in self.deployments.items():
            until = await self.store.get_value(f"breaker:{name}")
            if until is not None and float(until) > now:
                self._apply(deployment, "open", float(until) - now)

    def __call__(self, event: BreakerStateChanged) -> None:
        """A local breaker changed: tell the other replicas (in the background)."""
        if event.deployment == self._applying or event.state == BreakerState.HALF_OPEN:
            return
        deployment = self.deployments.get(event.deployment)
        if deployment is None:
            return
        seconds = deployment.breaker.retry_after() if event.state == BreakerState.OPEN else 0.0
        task = asyncio.get_running_loop().create_task(self._publish(event.deployment,
                                                                    event.state, seconds))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, name: str, state: str, seconds: float) -> None:
        try:
            if state == BreakerState.OPEN:
                await self.store.set_value(f"breaker:{name}", b"%f" % (time.time() + seconds),
                                           ttl_s=max(seconds, 0.001))
            else:
                await self.store.delete(f"breaker:{name}")
            await self.store.publish(CHANNEL, orjson.dumps(
                {"deployment": name, "state": state, "seconds": seconds, "origin": self.origin}))
        except Exception as exc:  # sharing is best effort: each replica still has its own
            log.warning("could not share a breaker change", deployment=name, error=str(exc))

    def _on_message(self, message: bytes) -> None:
        try:
            change = orjson.loads(message)
            deployment = self.deployments.get(change["deployment"])
            if deployment is None or change["origin"] == self.origin:
                return
            self._apply(deployment, change["state"], float(change["seconds"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("ignored a malformed breaker message")

    def _apply(self, deployment: Deployment, state: str, seconds: float) -> None:
        self._applying = deployment.name
        try:
            if state == BreakerState.OPEN:
                deployment.breaker.force_open(seconds)
            elif deployment.breaker.state is not BreakerState.CLOSED:
                deployment.breaker.force_close()
        finally:
            self._applying = None
