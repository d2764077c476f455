"""An API key's ``last_used_at``: kept by the gateway, shown by the admin API, never lost.

A real llmport (SQLite and PostgreSQL) and the official openai client; the writer's
failure path against a database that refuses the write.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from llmport.db.database import Database
from llmport.tenancy.last_used import LastUsed
from tests.support.admin import Admin, chat, tenancy_config
from tests.support.databases import database_config
from tests.support.servers import GatewayServer

Start = Callable[[dict[str, Any]], GatewayServer]
INTERVAL = 0.05


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, start_gateway: Start) -> Iterator[GatewayServer]:
    with database_config(request.param) as database:
        config = tenancy_config(**database)
        config["auth"]["last_used_interval"] = INTERVAL
        server = start_gateway(config)
        yield server
        server.stop()  # before a PostgreSQL database is dropped


def when(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


def last_used_once_written(admin: Admin, key_id: str, after: dt.datetime | None) -> dt.datetime:
    """The key's last_used_at once it is later than ``after`` (written within an interval)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = when(admin.call("GET", f"/admin/keys/{key_id}")["last_used_at"])
        if found is not None and (after is None or found > after):
            return found
        time.sleep(INTERVAL)
    raise AssertionError("last_used_at was never written")


def test_a_key_shows_when_it_was_last_used(server: GatewayServer) -> None:
    admin = Admin(server.url)
    used, idle = admin.key(name="used"), admin.key(name="idle")
    assert used["last_used_at"] is None and idle["last_used_at"] is None
    before = dt.datetime.now(dt.UTC)
    assert chat(server.url, used["key"]).status_code == 200
    after = dt.datetime.now(dt.UTC)
    first = last_used_once_written(admin, used["id"], None)
    assert before <= first <= after
    listed = {k["id"]: k for k in admin.call("GET", "/admin/keys")["data"]}
    assert when(listed[used["id"]]["last_used_at"]) == first
    assert listed[idle["id"]]["last_used_at"] is None
    time.sleep(0.01)
    assert chat(server.url, used["key"]).status_code == 200
    assert last_used_once_written(admin, used["id"], first) > first
    time.sleep(INTERVAL * 4)
    assert admin.call("GET", f"/admin/keys/{idle['id']}")["last_used_at"] is None


def test_a_refused_key_is_not_used(server: GatewayServer) -> None:
    admin = Admin(server.url)
    revoked = admin.key(name="revoked")
    admin.call("DELETE", f"/admin/keys/{revoked['id']}")
    with pytest.raises(openai.AuthenticationError):
        chat(server.url, revoked["key"])
    expired = admin.key(name="expired", expires_at="2020-01-01T00:00:00Z")
    with pytest.raises(openai.AuthenticationError):
        chat(server.url, expired["key"])
    time.sleep(INTERVAL * 4)
    for key in (revoked, expired):
        assert admin.call("GET", f"/admin/keys/{key['id']}")["last_used_at"] is None


def test_the_last_use_is_written_at_shutdown(start_gateway: Start) -> None:
    config = tenancy_config()
    config["auth"]["last_used_interval"] = 3600  # only the shutdown writes
    server = start_gateway(config)
    key = Admin(server.url).key(name="k")
    assert chat(server.url, key["key"]).status_code == 200
    server.stop()
    restarted = start_gateway(config)
    assert Admin(restarted.url).call("GET", f"/admin/keys/{key['id']}")["last_used_at"]


async def test_a_use_is_never_moved_back_by_an_older_write(db: Database) -> None:
    key = await db.create("keys", {"key_hash": "h" * 64, "prefix": "sk-lp-x", "name": "k"})
    later, earlier = 1_800_000_000.5, 1_700_000_000.0
    await db.mark_keys_used({key.id: later})
    await db.mark_keys_used({key.id: earlier})  # another replica's older news
    stored = await db.get("keys", key.id)
    assert stored.last_used_at == dt.datetime.fromtimestamp(later, dt.UTC)


class RefusingOnce:
    """The database's one method the writer uses, failing its first call as a lost
    connection would (after ``meanwhile``: what happens while the write is under way), then
    storing what it is given."""

    def __init__(self, meanwhile: Callable[[], None]) -> None:
        self.meanwhile = meanwhile
        self.calls = 0
        self.stored: dict[str, float] = {}

    async def mark_keys_used(self, used: dict[str, float]) -> None:
        self.calls += 1
        if self.calls == 1:
            await asyncio.sleep(0.002)
            self.meanwhile()
            raise ConnectionError("database went away")
        self.stored.update(used)


async def test_a_failed_write_loses_no_use_and_keeps_the_newer_one() -> None:
    writer: LastUsed
    db = RefusingOnce(meanwhile=lambda: writer.note("key_b"))  # used again meanwhile
    writer = LastUsed(db, interval=3600)  # type: ignore[arg-type]
    writer.note("key_a")
    writer.note("key_b")
    noted_a, noted_b = writer._used["key_a"], writer._used["key_b"]
    await writer.write()  # refused: both kept, key_b with its newer use
    assert db.stored == {}
    newer_b = writer._used["key_b"]
    assert newer_b > noted_b and writer._used["key_a"] == noted_a
    await writer.write()
    assert db.stored == {"key_a": noted_a, "key_b": newer_b}
    await writer.write()  # nothing new: no call
    assert db.calls == 2


class StallingOnce:
    """A database whose first write never finishes (until cancelled); later ones store."""

    def __init__(self) -> None:
        self.calls = 0
        self.stored: dict[str, float] = {}
        self.stalled = asyncio.Event()

    async def mark_keys_used(self, used: dict[str, float]) -> None:
        self.calls += 1
        if self.calls == 1:
            self.stalled.set()
            await asyncio.Event().wait()
        self.stored.update(used)


async def test_a_shutdown_during_a_write_loses_no_use() -> None:
    db = StallingOnce()
    writer = LastUsed(db, interval=0.01)  # type: ignore[arg-type]
    writer.note("key_a")
    writer.start()
    await asyncio.wait_for(db.stalled.wait(), 5)  # the periodic write is under way
    await writer.aclose()  # cancels it; what it held is written by the last write
    assert set(db.stored) == {"key_a"}
