"""``BatchRunner``: runs batch jobs in the background, one at a time per replica.

A replica takes the oldest batch with work left that no other replica holds (a lease in
its row, renewed while it runs), checks its input file, then sends its requests through
the gateway as the key that made the batch — the same pipeline as any request: that
key's limits and budget, spend log, metrics, logs — at a low admission priority, a few at
a time. Each answer is kept in the database as it comes, with the batch's counts (those
that come together, in one transaction: ``Recorder``); a replica that stops (or dies: its
lease runs out) leaves the batch to be resumed by any replica from the first unanswered
request. Each request carries an ``Idempotency-Key`` (the batch and line), so with
idempotency on, a request that was answered but not yet kept when its replica died is
replayed, not sent upstream again.
At the end the answers become the output and error files, and the batch is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from llmport.api import internal
from llmport.api.anthropic.dialect import MessagesDialect
from llmport.batches.input import (
    ENDPOINTS,
    InputCheck,
    Line,
    batch_error,
    check_input,
    requests,
)
from llmport.batches.settings import BatchesConfig
from llmport.db.jobs import ACTIVE, MESSAGES, Answered, JobTables, now
from llmport.types import Endpoint

if TYPE_CHECKING:
    from llmport.db.job_models import Batch
    from llmport.gateway.gateway import Gateway

log = structlog.get_logger("llmport.batches")
STOP_GRACE = 10.0  # seconds a stopping replica waits for its batch requests in flight
MAX_ATTEMPTS = 3  # runs of a batch that may fail (a bug, the database away) before it fails
RETRY_AFTER_S = 30.0  # a failed run's batch waits this long times its failures
REFUSALS = frozenset({429, 503})  # the gateway's limits and queues: wait and send again
UPSTREAM_FAILURES = frozenset({502, 504})  # after the router's own retries: twice more
MAX_RETRY_DELAY_S = 60.0
# A line's answer is kept for replay (its Idempotency-Key) this many leases: long enough for
# another replica to take over a dead one's batch and find it, where the configured
# idempotency.ttl (a day) would keep every line's answer a day.
KEEP_ANSWER_LEASES = 10


class BatchRunner:
    def __init__(self, gateway: Gateway, tables: JobTables, config: BatchesConfig) -> None:
        self.gateway = gateway
        self.tables = tables
        self.config = config
        self.id = f"runner_{secrets.token_hex(8)}"
        self._wake = asyncio.Event()
        self._stopping = False
        self._claims = itertools.count(1)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="llmport-batches")

    def wake(self) -> None:
        """A batch was made or cancelled here: look at once instead of at the next poll."""
        self._wake.set()

    async def aclose(self) -> None:
        """Stop: no new request is sent; those in flight have ``STOP_GRACE`` seconds to be
        answered and kept (so a restart sends none of them again), then are cancelled."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_GRACE)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while not self._stopping:
            batch = None
            ran = False
            self._wake.clear()  # before looking: a batch made while we look wakes the next wait
            # A lease token per claim: work of an earlier claim can never record into this one.
            lease = f"{self.id}-{next(self._claims)}"
            try:
                batch = await self.tables.claim_batch(lease, self.config.lease_seconds)
                if batch is not None:
                    await self._run(batch, lease)
                    ran = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a database outage, a bug: held back, then tried again
                log.exception("batch runner failed", batch_id=getattr(batch, "id", None))
                if batch is not None:
                    await asyncio.shield(self._failed(batch, lease, exc))
                    batch = None  # its lease now holds it back for a while
            finally:
                if batch is not None:  # unfinished (stopping): hand it over now, not when
                    # the lease runs out (a finished batch holds no lease)
                    await asyncio.shield(self._release(batch.id, lease))
            if ran or self._stopping:
                continue  # look for the next one at once (or stop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll_interval)

    async def _release(self, batch_id: str, lease: str) -> None:
        try:
            await self.tables.release(batch_id, lease)
        except Exception:  # the lease runs out by itself
            log.exception("releasing a batch failed", batch_id=batch_id)

    async def _failed(self, batch: Batch, lease: str, exc: Exception) -> None:
        """A run failed: the batch waits (longer each time) before another run, and after
        ``MAX_ATTEMPTS`` it fails, so that one batch cannot hold up every other."""
        try:
            attempts = (batch.attempts or 0) + 1
            if attempts < MAX_ATTEMPTS:
                await self.tables.hold(batch.id, lease, attempts, RETRY_AFTER_S * attempts)
                return
            message = f"The batch could not be run ({type(exc).__name__}: {exc})."[:500]
            await self._finish(batch, "failed", lease,
                               [batch_error("server_error", message)])
        except Exception:  # the lease runs out by itself; the next run counts again
            log.exception("recording a failed batch run failed", batch_id=batch.id)

    async def _run(self, batch: Batch, lease: str) -> None:
        if batch.status in ("cancelling", "finalizing"):  # finish as it was to finish
            outcome = "cancelled" if batch.status == "cancelling" else batch.ending
            await self._finish(batch, outcome or "completed", lease)
            return
        check = await self._check(batch)
        if check.errors:  # what was answered (if the file vanished mid-run) is kept
            await self._finish(batch, "failed", lease, check.errors)
            log.info("batch failed", batch_id=batch.id, errors=len(check.errors))
            return
        if batch.status == "validating":
            if not await self.tables.set_state(batch.id, lease, ("validating",),
                                               status="in_progress", in_progress_at=now(),
                                               total=check.count, model=check.model):
                return  # cancelled meanwhile: the next look finishes it
            batch.status = "in_progress"
        outcome = await self._answer(batch, lease)
        if outcome == "lost":
            log.warning("batch lease lost to another replica", batch_id=batch.id)
        if outcome not in ("lost", "stopped"):
            await self._finish(batch, outcome, lease)

    def _input(self, batch: Batch) -> AsyncIterator[bytes]:
        """The batch's input file, a stored part at a time (read afresh each time)."""
        return self.tables.file_parts(batch.owner, batch.input_file_id)

    async def _check(self, batch: Batch) -> InputCheck:
        """The batch's input file checked whole (read part by part), before any request."""
        if not await self.tables.file_exists(batch.owner, batch.input_file_id):
            check = InputCheck()
            check.errors = [batch_error("input_file_missing", "The input file "
                                        f"{batch.input_file_id} no longer exists.")]
            return check
        return await check_input(self._input(batch), batch.endpoint, self.config.max_lines)

    async def _answer(self, batch: Batch, lease: str) -> str:
        """Send the unanswered requests; how it ended: completed, cancelled, expired, lost
        (another replica holds it now) or stopped (this replica is stopping)."""
        answered = await self.tables.answered_lines(batch.id)
        lines = requests(self._input(batch))
        taking = asyncio.Lock()  # the workers share one reader of the file
        stop: list[str] = []  # the first reason to stop, once there is one
        endpoint = ENDPOINTS[batch.endpoint]

        def stopped() -> bool:
            if self._stopping and not stop:
                stop.append("stopped")
            if not stop and _expired(batch.expires_at):
                stop.append("expired")
            return bool(stop)

        async def pending() -> Line | None:
            async with taking:
                async for line in lines:
                    if line.index not in answered:
                        return line
            return None

        keep = Recorder(self.tables, batch.id, lease)

        async def work() -> None:
            while not stopped() and (line := await pending()) is not None:
                answer = await self._call(batch, endpoint, line, stopped)
                if answer is not None and not await keep(answer):
                    stop.append("lost")

        async def watch() -> None:
            renewed = asyncio.get_running_loop().time()
            while not stop:
                await asyncio.sleep(min(self.config.poll_interval, self.config.lease_seconds / 3))
                try:
                    if asyncio.get_running_loop().time() - renewed > \
                            self.config.lease_seconds / 3:
                        current = await self.tables.renew_lease(batch, lease,
                                                                self.config.lease_seconds)
                        renewed = asyncio.get_running_loop().time()
                    else:
                        current = await self.tables.get_batch(None, batch.id)
                except Exception:  # the database is away: look again, the lease may hold
                    log.exception("watching a batch failed", batch_id=batch.id)
                    continue
                if current is None or current.lease_owner != lease:
                    stop.append("lost")
                elif current.status == "cancelling":
                    stop.append("cancelled")

        watcher = asyncio.create_task(watch())
        try:
            # A task group: a worker that fails cancels the others (none keeps sending).
            async with asyncio.TaskGroup() as group:
                for _ in range(self.config.concurrency):
                    group.create_task(work())
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await lines.aclose()
        return stop[0] if stop else "completed"

    async def _call(self, batch: Batch, endpoint: Endpoint, line: Line,
                    stopped: Callable[[], bool]) -> Answered | None:
        """One request's answer. A refusal by the gateway's own limits or queues (429, 503)
        is waited out and sent again until the batch stops (then None: nothing recorded,
        the request is sent when the batch resumes, or counts as never sent); an upstream
        failure (502, 504) is sent again twice more; any other answer is the answer."""
        headers = [(b"idempotency-key", f"{batch.id}:{line.index}".encode()),
                   (b"x-llmport-priority", str(self.config.priority).encode())]
        dialect = MessagesDialect() if batch.endpoint == MESSAGES else None
        delay, upstream_failures = 1.0, 0
        while True:
            answer = await internal.call(self.gateway, endpoint, line.body, batch.run_as,
                                         headers, dialect, keep_answer_s=KEEP_ANSWER_LEASES
                                         * self.config.lease_seconds)
            if answer.status in UPSTREAM_FAILURES:
                upstream_failures += 1
            if answer.status not in REFUSALS and not (
                    answer.status in UPSTREAM_FAILURES and upstream_failures < 3):
                break
            waited = 0.0
            pause = delay * random.uniform(0.5, 1.0)  # jitter: lines do not retry in step
            while waited < pause:
                if stopped():
                    return None
                await asyncio.sleep(min(1.0, pause - waited))
                waited += 1.0
            delay = min(delay * 2, MAX_RETRY_DELAY_S)
        usage = answer.usage
        return Answered(line.index, line.custom_id, answer.status, answer.request_id,
                        answer.body, usage.prompt_tokens if usage else 0,
                        usage.completion_tokens if usage else 0,
                        usage.cached_tokens if usage else 0)

    async def _finish(self, batch: Batch, outcome: str, lease: str,
                      errors: list[dict[str, Any]] | None = None) -> None:
        """Write the output and error files and make the batch final (``errors``: why it
        failed). The outcome is kept first, so a replica resuming it finishes it alike.
        The files are written as the kept answers are read, a page at a time."""
        if not await self.tables.set_state(batch.id, lease, ACTIVE, status="finalizing",
                                           finalizing_at=now(), ending=outcome):
            return
        unsent = await self._unsent(batch) if outcome == "expired" else []
        async with self.tables.finishing(batch.id, lease) as end:
            if end is None:
                return
            output = end.file(batch.owner, "batch_output", f"{batch.id}_output.jsonl",
                              batch.output_expires_in)
            failures = end.file(batch.owner, "batch_output", f"{batch.id}_error.jsonl",
                                batch.output_expires_in)
            completed = failed = 0
            async for answer in end.answers():
                line = _output_line(answer.custom_id, answer.status_code, answer.request_id,
                                    answer.body)
                if 200 <= answer.status_code < 300:
                    completed += 1
                    await output.write(line)
                else:
                    failed += 1
                    await failures.write(line)
            for custom_id in unsent:  # the requests never sent are failures, in the error file
                await failures.write(_expired_line(custom_id))
            fields = end.fields
            fields.update({"status": outcome, f"{outcome}_at": now(), "completed": completed,
                           "failed": failed + len(unsent)})  # exact, from the answers kept
            if outcome == "expired":
                fields["expired"] = len(unsent)
            if errors:
                fields["errors"] = errors
            for column, writer in (("output_file_id", output), ("error_file_id", failures)):
                row = await writer.close()
                if row is not None:
                    fields[column] = row.id
        log.info("batch finished", batch_id=batch.id, status=outcome,
                 answered=completed + failed)

    async def _unsent(self, batch: Batch) -> list[str]:
        """The custom ids of the requests never answered (the input read again)."""
        answered = await self.tables.answered_lines(batch.id)
        if not await self.tables.file_exists(batch.owner, batch.input_file_id):
            return []
        lines = requests(self._input(batch))
        return [line.custom_id async for line in lines if line.index not in answered]


class Recorder:
    """Keeps a batch's answers, as they come, in as few transactions as they allow: the
    answers that arrived while one transaction was being written go in the next, together.
    (A transaction through the async SQLite driver takes a few milliseconds, nearly all of
    it waiting on its thread: one per answer capped a batch at ~200 answers a second.)
    Calling it waits until the answer is kept: True, or False when the lease was lost."""

    def __init__(self, tables: JobTables, batch_id: str, lease: str) -> None:
        self._tables = tables
        self._batch_id = batch_id
        self._lease = lease
        self._waiting: list[tuple[Answered, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None  # held: the loop keeps tasks weakly

    async def __call__(self, answer: Answered) -> bool:
        kept: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((answer, kept))
        if self._writer is None:
            # Its own task: a worker cancelled while waiting does not stop its group's write.
            self._writer = asyncio.get_running_loop().create_task(self._write())
        return await kept

    async def _write(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting, []
                try:
                    result = await self._tables.record(self._batch_id, self._lease,
                                                       [answer for answer, _ in group])
                except Exception as exc:  # each waiting worker raises it
                    for _, kept in group:
                        if not kept.done():
                            kept.set_exception(exc)
                    continue
                for _, kept in group:
                    if not kept.done():
                        kept.set_result(result)
        finally:
            self._writer = None


def _expired(expires_at: datetime) -> bool:
    return now() >= expires_at


def _output_line(custom_id: str, status: int, request_id: str, body: bytes) -> bytes:
    """One line of an output or error file, as OpenAI's Batch API writes them."""
    return orjson.dumps({
        "id": f"batch_req_{secrets.token_hex(12)}", "custom_id": custom_id,
        "response": {"status_code": status, "request_id": request_id,
                     "body": orjson.Fragment(body)},
        "error": None}, option=orjson.OPT_APPEND_NEWLINE)


def _expired_line(custom_id: str) -> bytes:
    return orjson.dumps({
        "id": f"batch_req_{secrets.token_hex(12)}", "custom_id": custom_id, "response": None,
        "error": {"code": "batch_expired",
                  "message": "This request could not be executed before the completion "
                             "window expired."}}, option=orjson.OPT_APPEND_NEWLINE)


def expires_after(window: str) -> timedelta:
    """The completion window (``24h``) as a duration."""
    return timedelta(hours=int(window.removesuffix("h")))
