"""The spend log across crashes: nothing lost, nothing doubled.

A real ``llmport serve`` answers 1,000 requests; then it is killed with SIGKILL
the moment the last answer arrived (and restarted on the same data_dir), or
stopped with SIGTERM. Every answered request must be in the database exactly
once, read back both through the admin API and straight from the database, for
the embedded SQLite and for PostgreSQL. The journal's own flushes are put out of
reach here (once a minute, or per 5,000 records); halfway through, a report
flushes it, so when the process dies exactly half of the records are in the
database and half only in the journal: the test depends on the journal's replay
(or its flush on shutdown), and on the two halves not overlapping.
"""

from __future__ import annotations

import concurrent.futures
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from llmport.accounting.journal_segments import SEGMENT_NAME
from llmport.observability.events import AttemptFinished, AttemptStarted, RequestFinished
from tests.support.admin import MASTER_KEY, Admin, tenancy_config
from tests.support.databases import fresh_postgres, postgres_query
from tests.support.processes import LLMPortProcess
from tests.support.servers import GatewayServer

REQUESTS = 1000
THREADS = 16
HALF = REQUESTS // 2


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None: the embedded SQLite file in data_dir; else a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    with fresh_postgres() as url:
        yield url


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory,
            database_url: str | None) -> Iterator[LLMPortProcess]:
    """One replica (config, data_dir, database) per database kind, shared by its tests to
    save start-ups; each test uses its own key, and `gateway` starts it when it is down."""
    directory = tmp_path_factory.mktemp("durable")
    config = tenancy_config(logging={"access_log": False}, data_dir=str(directory / "data"),
                            spend_log={"flush_interval": 60, "batch_size": 5000})
    if database_url is not None:
        config["database_url"] = database_url
    process = LLMPortProcess(config, directory, "durable")
    yield process
    if process.running:
        process.stop()


@pytest.fixture
def gateway(replica: LLMPortProcess) -> LLMPortProcess:
    return replica if replica.running else replica.start()


def answer(gateway: LLMPortProcess, key: str, indices: range) -> set[str]:
    """One chat request per index, from THREADS threads; every one must be answered 200."""
    limits = httpx.Limits(max_connections=THREADS, max_keepalive_connections=THREADS)
    with httpx.Client(base_url=gateway.url, timeout=30, limits=limits,
                      headers={"authorization": f"Bearer {key}"}) as client:
        def one(index: int) -> tuple[int, str]:
            response = client.post("/v1/chat/completions", headers={
                "x-request-id": f"durable-{index}"}, json={
                "model": "demo", "messages": [{"role": "user", "content": f"Request {index}"}]})
            return response.status_code, response.headers["x-request-id"]

        with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
            outcomes = list(pool.map(one, indices))
    assert [status for status, _ in outcomes] == [200] * len(indices)
    ids = {request_id for _, request_id in outcomes}
    assert len(ids) == len(indices)
    return ids


def answer_in_two_halves(gateway: LLMPortProcess, admin: Admin, key: dict[str, Any]
                         ) -> set[str]:
    """All requests answered; the first half flushed to the database, the second not."""
    answered = answer(gateway, key["key"], range(HALF))
    admin.logs(key_id=key["id"], limit=1)  # a report flushes this replica's journal
    answered |= answer(gateway, key["key"], range(HALF, REQUESTS))
    return answered


def stored_request_ids(gateway: LLMPortProcess, key_id: str) -> list[str]:
    """The request ids of the key's spend records, read from the database itself."""
    url = gateway.config.get("database_url")
    if url is not None:
        rows = postgres_query(url, "SELECT request_id FROM spend_log WHERE key_id = $1", key_id)
        return [row["request_id"] for row in rows]
    with closing(sqlite3.connect(gateway.data_dir / "llmport.db")) as db:
        return [row[0] for row in db.execute(
            "SELECT request_id FROM spend_log WHERE key_id = ?", (key_id,))]


def segments(gateway: LLMPortProcess) -> list[str]:
    journal = gateway.data_dir / "journal"
    return sorted(p.name for p in journal.iterdir() if SEGMENT_NAME.fullmatch(p.name))


def assert_exactly_once(stored: list[str], answered: set[str]) -> None:
    assert len(stored) == REQUESTS, f"{len(stored)} records for {REQUESTS} answers"
    assert set(stored) == answered  # each answered request once: none lost, none doubled


def test_kill_9_right_after_the_last_answer_loses_and_doubles_nothing(
        gateway: LLMPortProcess) -> None:
    admin = Admin(gateway.url)
    key = admin.key(name="durable")
    answered = answer_in_two_halves(gateway, admin, key)
    gateway.kill()
    admin.http.close()

    left = segments(gateway)
    assert left  # the second half waits in the dead process's segment
    assert len(stored_request_ids(gateway, key["id"])) == HALF

    gateway.start()  # same config, same data_dir: the journal replays before it is ready
    assert_exactly_once(stored_request_ids(gateway, key["id"]), answered)
    assert not set(left) & set(segments(gateway))  # the dead process's segments are gone

    admin = Admin(gateway.url)
    logs = admin.logs(key_id=key["id"])
    assert len(logs) == REQUESTS
    assert {r["request_id"] for r in logs} == answered
    assert all(r["status"] == 200 and r["cost"] > 0 for r in logs)
    usage = admin.usage(key_id=key["id"])
    assert (usage["requests"], usage["errors"]) == (REQUESTS, 0)
    assert usage["cost"] == pytest.approx(sum(r["cost"] for r in logs), abs=1e-9)
    assert_exactly_once(stored_request_ids(gateway, key["id"]), answered)  # still once


def test_sigterm_flushes_the_journal_to_the_database_before_exiting(
        gateway: LLMPortProcess) -> None:
    admin = Admin(gateway.url)
    key = admin.key(name="durable")
    answered = answer_in_two_halves(gateway, admin, key)
    admin.http.close()
    assert segments(gateway)
    assert len(stored_request_ids(gateway, key["id"])) == HALF  # the rest is in the journal

    # Uvicorn re-raises the SIGTERM it handled once it has shut down gracefully.
    assert gateway.stop() in (0, -signal.SIGTERM)
    assert segments(gateway) == []
    assert_exactly_once(stored_request_ids(gateway, key["id"]), answered)


@pytest.mark.parametrize("outcome", ["answer", "stream", "error"])
def test_the_record_is_in_the_journal_before_the_answer_can_be_read(
        start_gateway: Callable[[dict[str, Any]], GatewayServer], tmp_path: Path,
        outcome: str) -> None:
    """The kill -9 test above loses a record only when the process dies between the answer
    leaving and its record being written, a race it rarely hits. This makes the order
    visible: a subscriber behind the spend recorder notes what the journal's files hold and
    then holds the event loop for a moment; the client must not have its whole answer (the
    body, the stream's last event, the error) before the hold ends."""
    server = start_gateway(tenancy_config(data_dir=str(tmp_path / "data"),
                                          spend_log={"flush_interval": 60}))
    journal = Path(server.gateway.journal.directory)
    seen: list[tuple[str, bytes, float]] = []

    def hold(event: RequestFinished) -> None:
        written = b"".join(p.read_bytes() for p in journal.iterdir()
                           if SEGMENT_NAME.fullmatch(p.name))
        time.sleep(0.3)  # the answer's last bytes, sent after this, wait with it
        seen.append((event.ctx.request_id, written, time.monotonic()))

    server.gateway.events.subscribe(hold, RequestFinished)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER_KEY, max_retries=0)
    messages: Any = [{"role": "user", "content": "Hello there"}]
    if outcome == "error":
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model="nope", messages=messages)
        request_id = caught.value.response.headers["x-request-id"]
    else:
        raw = client.chat.completions.with_raw_response.create(
            model="demo", messages=messages, stream=outcome == "stream")
        request_id = raw.headers["x-request-id"]
        parsed = raw.parse()
        if outcome == "stream":
            assert "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)
        else:
            assert parsed.choices[0].message.content
    received = time.monotonic()

    [(reported_id, written, held_until)] = seen
    assert reported_id == request_id
    assert f'"request_id":"{request_id}"'.encode() in written  # in the file a kill -9 leaves
    assert received >= held_until  # nothing whole reached the client before the report


def test_a_failing_subscriber_costs_neither_the_answer_nor_the_spend_record(
        start_gateway: Callable[[dict[str, Any]], GatewayServer], tmp_path: Path) -> None:
    """Requests are reported before their last bytes go out; a subscriber that raises
    (a bug in a log or metrics hook), of finished requests or of the router's attempts, is
    logged and skipped: the client still gets its answer, and the subscribers after it
    still run."""
    server = start_gateway(tenancy_config(data_dir=str(tmp_path / "data")))
    bus = server.gateway.events
    reached: list[str] = []

    def broken(event: RequestFinished) -> None:
        raise RuntimeError("a hook with a bug")

    bus.listeners(RequestFinished).insert(0, broken)  # before the spend recorder
    for kind in (AttemptStarted, AttemptFinished):  # and on the router's events too
        bus.listeners(kind).insert(0, broken)
    bus.subscribe(lambda event: reached.append(event.ctx.request_id), RequestFinished)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER_KEY, max_retries=0)
    messages: Any = [{"role": "user", "content": "Hello there"}]
    answer = client.chat.completions.with_raw_response.create(model="demo", messages=messages)
    assert answer.parse().choices[0].message.content
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in
                       client.chat.completions.create(model="demo", messages=messages,
                                                      stream=True) if chunk.choices)
    assert streamed
    assert len(reached) == 2 and reached[0] == answer.headers["x-request-id"]
    assert server.gateway.journal.pending == 2  # both spend records, behind the broken hook
