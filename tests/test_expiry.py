"""Expiry with the official ``openai`` client: files uploaded with ``expires_after`` (their
expiry in the file object, refusals by name; an expired file is gone for its owner at once
and deleted by the next purge, unless a batch that has not finished still reads it), a
batch's ``output_expires_after``, and vector stores' ``expires_after`` (days after their
last activity, which a search moves on)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.admin import MASTER_KEY
from tests.support.fake_openai import Answer, FakeOpenAI
from tests.support.servers import GatewayServer
from tests.support.spec import check
from tests.test_batches import client, config, jsonl, line, wait_final

Start = Callable[[dict[str, Any]], GatewayServer]
HOUR: Any = {"anchor": "created_at", "seconds": 3600}


def stored_ids(tmp_path: Path) -> set[str]:
    with closing(sqlite3.connect(tmp_path / "shared-data" / "llmport.db")) as db:
        files = {row[0] for row in db.execute("SELECT id FROM files")}
        parts = {row[0] for row in db.execute("SELECT file_id FROM file_contents")}
    assert parts <= files  # no part outlives its file
    return files


def database(tmp_path: Path, statement: str, *values: Any) -> None:
    with closing(sqlite3.connect(tmp_path / "shared-data" / "llmport.db")) as db, db:
        db.execute(statement, values)


def expire(tmp_path: Path, *file_ids: str) -> None:
    """As if their hour had passed: each expires when it was made."""
    with closing(sqlite3.connect(tmp_path / "shared-data" / "llmport.db")) as db, db:
        db.executemany("UPDATE files SET expires_at = created_at WHERE id = ?",
                       [(file_id,) for file_id in file_ids])


def test_an_expiring_file_says_when_and_bad_expiries_are_refused(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    server = start_gateway(config(fake, tmp_path))
    api = client(server, MASTER_KEY)
    stored = api.files.create(file=("a.txt", b"alpha"), purpose="user_data", expires_after=HOUR)
    check(stored.model_dump(exclude_unset=True), "OpenAIFile")
    assert stored.expires_at == stored.created_at + 3600
    assert api.files.retrieve(stored.id).expires_at == stored.expires_at
    plain = api.files.create(file=("b.txt", b"beta"), purpose="user_data")
    assert plain.expires_at is None

    for expiry in ({"anchor": "last_active_at", "seconds": 3600},
                   {"anchor": "created_at", "seconds": 60},
                   {"anchor": "created_at", "seconds": 31 * 86400}):
        with pytest.raises(openai.BadRequestError) as refused:
            api.files.create(file=("c.txt", b"c"), purpose="user_data", expires_after=expiry)
        assert refused.value.body["param"] == "expires_after"  # type: ignore[index]
    reply = httpx.post(server.url + "/v1/files", headers={
        "authorization": f"Bearer {MASTER_KEY}"}, files={"file": ("d.txt", b"d")},
        data={"purpose": "user_data", "colour": "red"})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "colour"
    assert {f.id for f in api.files.list()} == {stored.id, plain.id}  # nothing else stored


def test_an_expired_file_is_gone_at_once_and_deleted_unless_a_batch_reads_it(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    settings = config(fake, tmp_path, concurrency=1)
    server = start_gateway(settings)
    api = client(server, MASTER_KEY)
    notes = api.files.create(file=("notes.txt", b"n" * 100), purpose="user_data",
                             expires_after=HOUR)
    kept = api.files.create(file=("kept.txt", b"k"), purpose="user_data")
    fake.default = Answer(ttft=0.3)  # twenty lines, one at a time: the batch runs ~6 s
    requests = api.files.create(file=("in.jsonl", jsonl(*(line(f"r{i}") for i in range(20)))),
                                purpose="batch", expires_after=HOUR)
    batch = api.batches.create(input_file_id=requests.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    expire(tmp_path, notes.id, requests.id)

    for call in (lambda: api.files.retrieve(notes.id), lambda: api.files.content(notes.id),
                 lambda: api.files.delete(notes.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert [f.id for f in api.files.list()] == [kept.id]

    start_gateway(settings)  # a replica starting purges at once (then every five minutes)
    assert fake.wait_for(lambda: notes.id not in stored_ids(tmp_path))
    assert stored_ids(tmp_path) >= {kept.id, requests.id}  # the batch still reads its input
    assert api.batches.retrieve(batch.id).status == "in_progress"  # (as it did at the purge)
    done = wait_final(api, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 20

    start_gateway(settings)  # its batch has ended: now it goes too
    assert fake.wait_for(lambda: requests.id not in stored_ids(tmp_path))
    assert kept.id in stored_ids(tmp_path) and done.output_file_id in stored_ids(tmp_path)


def test_a_batch_can_give_its_output_files_an_expiry(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    server = start_gateway(config(fake, tmp_path))
    api = client(server, MASTER_KEY)
    requests = api.files.create(file=("in.jsonl", jsonl(line("a"), line("b", model="nope"))),
                                purpose="batch")
    batch = api.batches.create(input_file_id=requests.id, endpoint="/v1/chat/completions",
                               completion_window="24h", output_expires_after=HOUR)
    done = wait_final(api, batch.id)
    assert done.output_file_id and done.error_file_id
    for file_id in (done.output_file_id, done.error_file_id):
        stored = api.files.retrieve(file_id)
        assert stored.expires_at == stored.created_at + 3600
    assert api.files.retrieve(requests.id).expires_at is None
    plain = api.batches.create(input_file_id=requests.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    assert api.files.retrieve(wait_final(api, plain.id).output_file_id or "").expires_at is None
    with pytest.raises(openai.BadRequestError) as refused:
        api.batches.create(input_file_id=requests.id, endpoint="/v1/chat/completions",
                           completion_window="24h",
                           output_expires_after={"anchor": "created_at", "seconds": 5})
    assert refused.value.body["param"] == "output_expires_after"  # type: ignore[index]


def test_a_vector_store_expires_days_after_its_last_activity(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    settings = config(fake, tmp_path)
    server = start_gateway(settings)
    api = client(server, MASTER_KEY)
    notes = api.files.create(file=("n.txt", b"alpha beta gamma"), purpose="assistants")
    store = api.vector_stores.create(file_ids=[notes.id],
                                     expires_after={"anchor": "last_active_at", "days": 1})
    check(store.model_dump(exclude_unset=True), "VectorStoreObject")
    assert store.expires_after is not None and store.expires_after.days == 1
    assert store.expires_at == store.last_active_at + 86400
    lasting = api.vector_stores.create(name="lasting")
    assert lasting.expires_at is None and lasting.expires_after is None
    longer = api.vector_stores.update(store.id, expires_after={"anchor": "last_active_at",
                                                               "days": 2})
    # counted from the store's last activity as the update left it (the clock may have
    # passed a second since the store was made)
    assert longer.expires_at == longer.last_active_at + 2 * 86400

    # A search is activity: an hour-old last_active_at moves to now.
    database(tmp_path, "UPDATE vector_stores SET last_active_at = datetime('now', '-1 hour') "
             "WHERE id = ?", store.id)
    hour_ago = api.vector_stores.retrieve(store.id).last_active_at or 0
    api.vector_stores.search(store.id, query="alpha")
    assert (api.vector_stores.retrieve(store.id).last_active_at or 0) >= hour_ago + 3500

    database(tmp_path, "UPDATE vector_stores SET last_active_at = datetime('now', '-3 days') "
             "WHERE id = ?", store.id)
    assert api.vector_stores.retrieve(store.id).status == "expired"
    with pytest.raises(openai.BadRequestError) as refused:
        api.vector_stores.search(store.id, query="alpha")
    assert refused.value.body["code"] == "vector_store_expired"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as refused:
        api.responses.create(model="demo", input="alpha", tools=[
            {"type": "file_search", "vector_store_ids": [store.id]}])
    assert refused.value.body["code"] == "vector_store_expired"  # type: ignore[index]

    start_gateway(settings)  # a replica starting purges expired stores too
    assert fake.wait_for(lambda: [s.id for s in api.vector_stores.list()] == [lasting.id])
    with pytest.raises(openai.NotFoundError):
        api.vector_stores.retrieve(store.id)
