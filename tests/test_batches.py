"""Files and Batch APIs end to end, with the official ``openai`` client against a real gateway
and a fake upstream: every request of a batch sent once, through the gateway's pipeline
(limits, budgets, spend), its answers in OpenAI-shaped output and error files."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.support.admin import MASTER_KEY, Admin, priced_upstream, tenancy_config
from tests.support.databases import fresh_postgres
from tests.support.fake_openai import Answer, FakeOpenAI
from tests.support.processes import LLMPortProcess
from tests.support.servers import GatewayServer
from tests.support.spec import check

Start = Callable[[dict[str, Any]], GatewayServer]
FINAL = ("completed", "failed", "cancelled", "expired")


def config(fake: FakeOpenAI, tmp_path: Path, **batches: Any) -> dict[str, Any]:
    settings = tenancy_config(batches={"poll_interval": 0.05, **batches})
    settings["models"].append(priced_upstream(fake.url))
    settings["data_dir"] = str(tmp_path / "shared-data")  # the same database across restarts
    return settings


def client(server: GatewayServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def line(custom_id: str, content: str = "Hi", model: str = "gpt-4o-mini",
         **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": content}], **body}}


def jsonl(*values: Any) -> bytes:
    return b"".join(orjson.dumps(v) + b"\n" for v in values)


def wait_final(api: openai.OpenAI, batch_id: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = api.batches.retrieve(batch_id)
        if batch.status in FINAL:
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} still {batch.status} after {timeout} s")


def chat_calls(fake: FakeOpenAI) -> list[Any]:
    return [r for r in fake.history if r.path.endswith("/chat/completions")]


def read_lines(api: openai.OpenAI, file_id: str) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in api.files.content(file_id).content.splitlines()]


def test_a_batch_sends_each_request_once_and_writes_openai_shaped_files(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    server = start_gateway(config(fake, tmp_path))
    admin = Admin(server.url)
    key = admin.key()
    api = client(server, key["key"])
    requests = [line(f"ok-{i}", f"Question {i}") for i in range(4)]
    requests.append({**line("bad-body"), "body": {"model": "gpt-4o-mini", "messages": "no"}})
    requests.append(line("unknown-model", model="no-such-model"))
    uploaded = api.files.create(file=("requests.jsonl", jsonl(*requests)), purpose="batch")
    check(uploaded.model_dump(exclude_none=True), "OpenAIFile")
    created = api.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                 completion_window="24h", metadata={"job": "nightly"})
    assert created.status == "validating"
    check(created.model_dump(exclude_none=True), "Batch")

    done = wait_final(api, created.id)
    assert done.status == "completed", done
    check(done.model_dump(exclude_none=True), "Batch")
    assert (done.request_counts.total, done.request_counts.completed,
            done.request_counts.failed) == (6, 4, 2)
    assert done.metadata == {"job": "nightly"} and done.model == "gpt-4o-mini"
    assert done.in_progress_at and done.finalizing_at and done.completed_at

    output = read_lines(api, done.output_file_id)
    assert sorted(o["custom_id"] for o in output) == [f"ok-{i}" for i in range(4)]
    for entry in output:
        assert entry["response"]["status_code"] == 200 and entry["error"] is None
        assert entry["id"].startswith("batch_req_")
        check(entry["response"]["body"], "CreateChatCompletionResponse")
    errors = {e["custom_id"]: e["response"] for e in read_lines(api, done.error_file_id)}
    assert errors["bad-body"]["status_code"] == 400
    assert errors["bad-body"]["body"]["error"]["param"] == "messages"
    assert errors["unknown-model"]["status_code"] == 404
    assert errors["unknown-model"]["body"]["error"]["code"] == "model_not_found"
    check(errors["unknown-model"]["body"], "ErrorResponse")

    # Each valid request reached the upstream once, with its own question.
    asked = sorted(r.body["messages"][0]["content"] for r in chat_calls(fake))
    assert asked == [f"Question {i}" for i in range(4)]
    # Every request went through the pipeline as the key: six spend records, four charged.
    logs = admin.logs(key_id=key["id"])
    assert len(logs) == 6
    assert sorted(r["status"] for r in logs) == [200, 200, 200, 200, 400, 404]
    assert sum(r["prompt_tokens"] for r in logs) == done.usage.input_tokens > 0
    assert sum(r["completion_tokens"] for r in logs) == done.usage.output_tokens > 0
    assert admin.usage(key_id=key["id"])["cost"] == pytest.approx(sum(r["cost"] for r in logs))
    assert all(r["cost"] > 0 for r in logs if r["status"] == 200)

    for file_id in (done.output_file_id, done.error_file_id):
        stored = api.files.retrieve(file_id)
        assert stored.purpose == "batch_output"
        check(stored.model_dump(exclude_none=True), "OpenAIFile")
    listed = api.batches.list()
    assert [b.id for b in listed.data] == [created.id]
    check(listed.model_dump(exclude_none=True), "ListBatchesResponse")


def test_a_malformed_input_file_fails_its_batch_before_any_request(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    server = start_gateway(config(fake, tmp_path))
    api = client(server, MASTER_KEY)
    content = jsonl(line("a"), {**line("b"), "url": "/v1/embeddings"}, line("a"),
                    {**line("c"), "method": "GET"}, {"custom_id": "d"},
                    line("e", stream=True), line("f"))
    uploaded = api.files.create(file=("bad.jsonl", content), purpose="batch")
    batch = wait_final(api, api.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions",
        completion_window="24h").id)
    assert batch.status == "failed" and batch.failed_at
    check(batch.model_dump(exclude_none=True), "Batch")
    found = [(e.line, e.code) for e in batch.errors.data]
    assert found == [(2, "mismatched_url"), (3, "duplicate_custom_id"), (4, "invalid_method"),
                     (5, "invalid_method"), (6, "stream_not_supported")]
    assert batch.output_file_id is None and batch.error_file_id is None
    assert chat_calls(fake) == []


def test_a_file_that_is_not_json_lines_is_refused_at_upload(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    server = start_gateway(config(fake, tmp_path))
    api = client(server, MASTER_KEY)
    with pytest.raises(openai.BadRequestError) as refused:
        api.files.create(file=("x.jsonl", jsonl(line("a")) + b"{not json\n"), purpose="batch")
    assert refused.value.body["code"] == "invalid_file_format"  # type: ignore[index]
    assert "Line 2" in refused.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as wrong:
        api.files.create(file=("x.jsonl", b"\xff\xfe"), purpose="batch")
    assert wrong.value.body["code"] == "invalid_file_format"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as purpose:
        api.files.create(file=("x.txt", b"hello"), purpose="homework")  # type: ignore[arg-type]
    assert purpose.value.body["param"] == "purpose"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as empty:
        api.files.create(file=("x.txt", b""), purpose="user_data")
    assert empty.value.body["code"] == "empty_file"  # type: ignore[index]
    assert api.files.list().data == []  # nothing refused was kept


def test_files_upload_list_page_download_and_delete(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    server = start_gateway(config(fake, tmp_path, max_file_mb=0.01))  # 10,485 bytes
    api = client(server, MASTER_KEY)
    names = ["one.txt", "two.txt", "three.jsonl"]
    made = [api.files.create(file=(names[0], b"first"), purpose="user_data"),
            api.files.create(file=(names[1], "second \u00e9".encode()), purpose="user_data"),
            api.files.create(file=(names[2], jsonl(line("x"))), purpose="batch")]
    listed = api.files.list()
    check(listed.model_dump(exclude_none=True), "ListFilesResponse")
    assert [f.id for f in listed.data] == [f.id for f in reversed(made)]  # newest first
    assert [f.id for f in api.files.list(purpose="user_data")] == [made[1].id, made[0].id]
    page = api.files.list(limit=1, order="asc")
    assert [f.id for f in page.data] == [made[0].id] and page.has_more
    rest = api.files.list(limit=5, order="asc", after=made[0].id)
    assert [f.id for f in rest.data] == [made[1].id, made[2].id] and not rest.has_more
    assert api.files.content(made[1].id).content == "second \u00e9".encode()
    assert api.files.retrieve(made[1].id).bytes == len("second \u00e9".encode())

    deleted = api.files.delete(made[0].id)
    assert deleted.deleted and deleted.id == made[0].id
    check(deleted.model_dump(), "DeleteFileResponse")
    with pytest.raises(openai.NotFoundError):
        api.files.retrieve(made[0].id)
    with pytest.raises(openai.NotFoundError):
        api.files.delete(made[0].id)

    with pytest.raises(openai.BadRequestError) as large:  # over the limit, within the form
        api.files.create(file=("big.txt", b"x" * 20_000), purpose="user_data")
    assert large.value.body["code"] == "file_too_large"  # type: ignore[index]
    huge = httpx.post(server.url + "/v1/files", headers={"authorization": f"Bearer {MASTER_KEY}"},
                      files={"file": ("huge.txt", b"x" * 200_000)}, data={"purpose": "user_data"})
    assert huge.status_code == 413, huge.text  # refused as it arrives
    assert huge.json()["error"]["code"] == "request_too_large"
    raw = httpx.post(server.url + "/v1/files", headers={"authorization": f"Bearer {MASTER_KEY}"},
                     json={"purpose": "user_data"})
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_content_type"
    assert len(api.files.list().data) == 2


def test_files_and_batches_belong_to_the_key_that_made_them(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    server = start_gateway(config(fake, tmp_path))
    admin = Admin(server.url)
    alice, bob = client(server, admin.key()["key"]), client(server, admin.key()["key"])
    stored = alice.files.create(file=("a.jsonl", jsonl(line("a"))), purpose="batch")
    batch = alice.batches.create(input_file_id=stored.id, endpoint="/v1/chat/completions",
                                 completion_window="24h")
    for other in (bob, client(server, MASTER_KEY)):
        assert other.files.list().data == [] and other.batches.list().data == []
        for call in (lambda o: o.files.retrieve(stored.id),
                     lambda o: o.files.content(stored.id),
                     lambda o: o.files.delete(stored.id),
                     lambda o: o.batches.retrieve(batch.id),
                     lambda o: o.batches.cancel(batch.id),
                     lambda o: o.batches.create(input_file_id=stored.id, completion_window="24h",
                                                endpoint="/v1/chat/completions")):
            with pytest.raises(openai.NotFoundError):
                call(other)
    assert wait_final(alice, batch.id).status == "completed"
    unauthenticated = httpx.get(server.url + "/v1/files")
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["code"] == "missing_api_key"


def test_batch_creation_checks_its_parameters(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    server = start_gateway(config(fake, tmp_path))
    api = client(server, MASTER_KEY)
    batch_file = api.files.create(file=("a.jsonl", jsonl(line("a"))), purpose="batch")
    other_file = api.files.create(file=("a.txt", b"notes"), purpose="user_data")
    good = {"input_file_id": batch_file.id, "endpoint": "/v1/chat/completions",
            "completion_window": "24h"}
    for change, param in [({"endpoint": "/v1/images/generations"}, "endpoint"),
                          ({"completion_window": "48h"}, "completion_window"),
                          ({"input_file_id": other_file.id}, "input_file_id"),
                          ({"metadata": {"k": "v" * 513}}, "metadata"),
                          ({"output_expires_after": {"anchor": "created_at", "seconds": 60}},
                           "output_expires_after"),  # (supported: an hour at least)
                          ({"output_expires_after": {"anchor": "completed_at",
                                                     "seconds": 3600}}, "output_expires_after")]:
        with pytest.raises(openai.BadRequestError) as refused:
            api.batches.create(**{**good, **change})  # type: ignore[arg-type]
        assert refused.value.body["param"] == param, refused.value.body  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        api.batches.create(**{**good, "input_file_id": "file-nope"})  # type: ignore[arg-type]
    assert api.batches.list().data == []
    batch = wait_final(api, api.batches.create(**good).id)  # type: ignore[arg-type]
    with pytest.raises(openai.ConflictError) as final:
        api.batches.cancel(batch.id)
    assert final.value.body["code"] == "batch_not_cancellable"  # type: ignore[index]
    with_body = httpx.post(f"{server.url}/v1/batches/{batch.id}/cancel", json={},
                           headers={"authorization": f"Bearer {MASTER_KEY}"})
    assert with_body.status_code == 409  # a body on a cancel is read and ignored


def test_a_cancelled_batch_keeps_what_was_answered_and_sends_nothing_more(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    server = start_gateway(config(fake, tmp_path, concurrency=1))
    fake.default = Answer(ttft=0.1)
    api = client(server, MASTER_KEY)
    stored = api.files.create(file=("a.jsonl", jsonl(*(line(f"r{i}") for i in range(30)))),
                              purpose="batch")
    batch = api.batches.create(input_file_id=stored.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    assert fake.wait_for(lambda: api.batches.retrieve(batch.id).request_counts.completed >= 2, 10)
    cancelling = api.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    done = wait_final(api, batch.id)
    assert done.status == "cancelled" and done.cancelled_at
    answered = read_lines(api, done.output_file_id)
    assert done.request_counts.completed == len(answered) < 30
    assert len(chat_calls(fake)) == len(answered)  # nothing sent after, nothing lost
    time.sleep(0.3)
    assert len(chat_calls(fake)) == len(answered)
    assert api.batches.cancel(batch.id).status == "cancelled"  # again: no change, no error


def test_a_batch_is_resumed_by_the_next_gateway_and_each_request_answered_once(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    settings = config(fake, tmp_path, concurrency=2)
    first = start_gateway(settings)
    fake.default = Answer(ttft=0.05)
    api = client(first, MASTER_KEY)
    stored = api.files.create(file=("a.jsonl", jsonl(*(line(f"r{i}", f"Q{i}")
                                                         for i in range(80)))), purpose="batch")
    batch = api.batches.create(input_file_id=stored.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    assert fake.wait_for(lambda: api.batches.retrieve(batch.id).request_counts.completed >= 5, 10)
    first.stop()  # mid-batch: it sends nothing more, keeps what is in flight, hands over
    stopped_at = len(chat_calls(fake))
    assert stopped_at < 80

    second = start_gateway(settings)
    api = client(second, MASTER_KEY)
    done = wait_final(api, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 80
    output = read_lines(api, done.output_file_id)
    assert sorted(o["custom_id"] for o in output) == sorted(f"r{i}" for i in range(80))
    calls = chat_calls(fake)
    # Every question asked once: the requests in flight at the stop were answered and kept.
    assert sorted(r.body["messages"][0]["content"] for r in calls) == sorted(
        f"Q{i}" for i in range(80))
    assert not any(r.disconnected for r in calls)


def test_a_batch_whose_gateway_was_killed_is_taken_over_when_its_lease_runs_out(
        fake: FakeOpenAI, tmp_path: Path) -> None:
    settings = config(fake, tmp_path, concurrency=2, lease_seconds=1.5)
    settings["logging"] = {"access_log": False}
    fake.default = Answer(ttft=0.05)
    first = LLMPortProcess(settings, tmp_path / "first", "first").start()
    second = None
    try:
        api = openai.OpenAI(base_url=first.url + "/v1", api_key=MASTER_KEY, max_retries=0)
        stored = api.files.create(file=("a.jsonl", jsonl(*(line(f"r{i}", f"Q{i}")
                                                             for i in range(40)))),
                                  purpose="batch")
        batch = api.batches.create(input_file_id=stored.id, endpoint="/v1/chat/completions",
                                   completion_window="24h")
        assert fake.wait_for(
            lambda: api.batches.retrieve(batch.id).request_counts.completed >= 5, 15)
        first.kill()  # SIGKILL: no hand-over; the lease in the database says it is taken
        second = LLMPortProcess(settings, tmp_path / "second", "second").start()
        api = openai.OpenAI(base_url=second.url + "/v1", api_key=MASTER_KEY, max_retries=0)
        done = wait_final(api, batch.id)
        assert done.status == "completed" and done.request_counts.completed == 40, done
        output = read_lines(api, done.output_file_id)
        assert sorted(o["custom_id"] for o in output) == sorted(f"r{i}" for i in range(40))
        asked = [r.body["messages"][0]["content"] for r in chat_calls(fake)]
        assert set(asked) == {f"Q{i}" for i in range(40)}
        # At most the two in flight when it died were sent again (the in-process store's
        # idempotency records died with it; with Redis they would be replayed).
        assert len(asked) - 40 <= 2
    finally:
        for process in (first, second):
            if process is not None and process.running:
                process.stop()


def test_a_batch_runs_within_its_keys_budget(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    server = start_gateway(config(fake, tmp_path, concurrency=1))
    admin = Admin(server.url)
    key = admin.key(max_budget=0.00001)  # less than one request's cost
    api = client(server, key["key"])
    stored = api.files.create(file=("a.jsonl", jsonl(*(line(f"r{i}") for i in range(5)))),
                              purpose="batch")
    done = wait_final(api, api.batches.create(
        input_file_id=stored.id, endpoint="/v1/chat/completions", completion_window="24h").id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 4)
    refused = read_lines(api, done.error_file_id)
    assert {e["response"]["status_code"] for e in refused} == {402}
    assert {e["response"]["body"]["error"]["code"] for e in refused} == {"budget_exceeded"}
    assert len(chat_calls(fake)) == 1


def test_replicas_on_postgresql_share_the_batches_and_send_each_request_once(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    with fresh_postgres() as database_url:
        replicas = [start_gateway({**config(fake, tmp_path / name, concurrency=2),
                                   "database_url": database_url}) for name in ("a", "b")]
        fake.default = Answer(ttft=0.01)
        apis = [client(server, MASTER_KEY) for server in replicas]
        batches = []
        for n in range(4):
            api = apis[n % 2]  # made on either replica, run by whichever takes it
            stored = api.files.create(file=(f"{n}.jsonl", jsonl(
                *(line(f"r{i}", f"B{n} Q{i}") for i in range(10)))), purpose="batch")
            batches.append(api.batches.create(input_file_id=stored.id,
                                              endpoint="/v1/chat/completions",
                                              completion_window="24h").id)
        for n, batch_id in enumerate(batches):
            done = wait_final(apis[(n + 1) % 2], batch_id)  # readable from the other replica
            assert done.status == "completed" and done.request_counts.completed == 10
            output = read_lines(apis[n % 2], done.output_file_id)
            assert sorted(o["custom_id"] for o in output) == sorted(f"r{i}" for i in range(10))
        asked = sorted(r.body["messages"][0]["content"] for r in chat_calls(fake))
        assert asked == sorted(f"B{n} Q{i}" for n in range(4) for i in range(10))
        for server in replicas:
            server.stop()


@pytest.mark.parametrize(("endpoint", "body", "schema"), [
    ("/v1/embeddings", {"model": "demo", "input": ["one", "two"]}, "CreateEmbeddingResponse"),
    ("/v1/completions", {"model": "demo", "prompt": "Once upon", "max_tokens": 5},
     "CreateCompletionResponse"),
])
def test_embeddings_and_completions_batches(fake: FakeOpenAI, start_gateway: Start,
                                            tmp_path: Path, endpoint: str, body: dict[str, Any],
                                            schema: str) -> None:
    server = start_gateway(config(fake, tmp_path))
    api = client(server, MASTER_KEY)
    lines = [{"custom_id": f"c{i}", "method": "POST", "url": endpoint, "body": body}
             for i in range(3)]
    stored = api.files.create(file=("a.jsonl", jsonl(*lines)), purpose="batch")
    done = wait_final(api, api.batches.create(input_file_id=stored.id, endpoint=endpoint,
                                              completion_window="24h").id)
    assert done.status == "completed" and done.request_counts.completed == 3, done
    for entry in read_lines(api, done.output_file_id):
        check(entry["response"]["body"], schema)


def test_large_files_are_checked_off_the_event_loop_with_the_same_results(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    server = start_gateway(config(fake, tmp_path))
    api = client(server, MASTER_KEY)
    padding = "x" * 500
    many = [line(f"r{i}", padding) for i in range(2500)]  # ~1.5 MB: parsed in a worker thread
    assert len(jsonl(*many)) > 1 << 20
    with pytest.raises(openai.BadRequestError) as refused:
        api.files.create(file=("big.jsonl", jsonl(*many) + b"{oops\n"), purpose="batch")
    assert "Line 2501" in refused.value.body["message"]  # type: ignore[index]
    stored = api.files.create(file=("big.jsonl", jsonl(*many, {**line("last"), "url": "/x"})),
                              purpose="batch")
    batch = wait_final(api, api.batches.create(
        input_file_id=stored.id, endpoint="/v1/chat/completions", completion_window="24h").id)
    assert batch.status == "failed"
    assert [(e.line, e.code) for e in batch.errors.data] == [(2501, "mismatched_url")]
    assert chat_calls(fake) == []


def test_requests_refused_by_the_keys_limits_wait_and_are_sent_again(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    server = start_gateway(config(fake, tmp_path, concurrency=4))
    fake.default = Answer(ttft=0.05)
    key = Admin(server.url).key(max_parallel_requests=1)  # the batch runs 4 at a time
    api = client(server, key["key"])
    stored = api.files.create(file=("a.jsonl", jsonl(*(line(f"r{i}", f"Q{i}")
                                                         for i in range(8)))), purpose="batch")
    done = wait_final(api, api.batches.create(
        input_file_id=stored.id, endpoint="/v1/chat/completions", completion_window="24h").id)
    assert (done.request_counts.completed, done.request_counts.failed) == (8, 0)
    assert done.error_file_id is None
    asked = sorted(r.body["messages"][0]["content"] for r in chat_calls(fake))
    assert asked == sorted(f"Q{i}" for i in range(8))  # each sent upstream once


async def test_a_batch_whose_runs_keep_failing_is_held_back_then_failed(tmp_path: Path) -> None:
    from llmport.batches.runner import BatchRunner
    from llmport.batches.settings import BatchesConfig
    from llmport.db.database import Database
    from llmport.db.job_models import Batch
    from llmport.db.jobs import JobTables, NewFile, new_batch_id, now

    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    await database.upgrade()
    try:
        tables = JobTables(database.sessions)
        stored = await tables.create_file("me", NewFile("batch", "a.jsonl", jsonl(line("a"))))
        created = now()
        await tables.create_batch(Batch(
            id=new_batch_id(), owner="me", run_as={"kind": "master"},
            endpoint="/v1/chat/completions", input_file_id=stored.id, completion_window="24h",
            status="in_progress", created_at=created, expires_at=created, total=1, completed=0,
            failed=0, input_tokens=0, output_tokens=0, cached_tokens=0))
        runner = BatchRunner(None, tables, BatchesConfig())  # type: ignore[arg-type]
        batch = await tables.claim_batch("lease-1", 60)
        assert batch is not None
        await runner._failed(batch, "lease-1", RuntimeError("boom"))
        held = await tables.get_batch("me", batch.id)
        assert held is not None and held.attempts == 1 and held.status == "in_progress"
        assert await tables.claim_batch("lease-2", 60) is None  # held back, not retried at once
        held.attempts = 2  # its third run fails too
        await runner._failed(held, "lease-1", RuntimeError("boom again"))
        failed = await tables.get_batch("me", batch.id)
        assert failed is not None and failed.status == "failed" and failed.failed_at
        assert failed.errors is not None and failed.errors[0]["code"] == "server_error"
        assert "boom again" in failed.errors[0]["message"]
        assert failed.lease_owner is None  # final: no replica takes it again
    finally:
        await database.aclose()


def test_a_signing_key_signs_the_files_routes_over_the_path_and_query(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    from llmport.tenancy.signing import sign

    server = start_gateway(config(fake, tmp_path))
    created = Admin(server.url).key(require_signature=True)

    def listed(signed_target: str | None) -> httpx.Response:
        headers = {"authorization": f"Bearer {created['key']}"}
        if signed_target is not None:
            stamp = int(time.time())
            headers["x-llmport-timestamp"] = str(stamp)
            headers["x-llmport-signature"] = sign(created["signing_secret"], "GET",
                                                  signed_target, b"", stamp)
        return httpx.get(server.url + "/v1/files?purpose=batch&limit=5", headers=headers)

    assert listed(None).status_code == 401
    assert listed("/v1/files").status_code == 401  # the query is signed too
    assert listed("/v1/files?purpose=batch&limit=5").status_code == 200


def test_an_input_file_cannot_be_deleted_while_its_batch_runs(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    server = start_gateway(config(fake, tmp_path, concurrency=1))
    fake.default = Answer(ttft=0.2)
    api = client(server, MASTER_KEY)
    stored = api.files.create(file=("a.jsonl", jsonl(line("a"), line("b"))), purpose="batch")
    batch = api.batches.create(input_file_id=stored.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    with pytest.raises(openai.ConflictError) as refused:
        api.files.delete(stored.id)
    assert refused.value.body["code"] == "file_in_use"  # type: ignore[index]
    assert wait_final(api, batch.id).status == "completed"
    assert api.files.delete(stored.id).deleted  # once it has finished


def test_a_rotated_key_keeps_its_files_and_its_running_batch(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    server = start_gateway(config(fake, tmp_path, concurrency=1))
    fake.default = Answer(ttft=0.1)
    admin = Admin(server.url)
    old = admin.key()
    api = client(server, old["key"])
    stored = api.files.create(file=("a.jsonl", jsonl(*(line(f"r{i}") for i in range(30)))),
                              purpose="batch")  # ~3 s of work: the rotation comes mid-batch
    batch = api.batches.create(input_file_id=stored.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    assert fake.wait_for(lambda: api.batches.retrieve(batch.id).request_counts.completed >= 2, 10)
    new = admin.call("POST", f"/admin/keys/{old['id']}/rotate", 201, json={"grace_seconds": 0})
    with pytest.raises(openai.AuthenticationError):
        api.files.list()  # the old key is revoked at once
    api = client(server, new["key"])
    done = wait_final(api, batch.id)  # visible to the new key, and run on as it
    assert done.status == "completed" and done.request_counts.completed == 30
    assert [f.id for f in api.files.list(purpose="batch")] == [stored.id]
    logs = admin.logs(key_id=new["id"])
    assert logs and all(r["status"] == 200 for r in logs)  # the rest was charged to it
    assert len(admin.logs(key_id=old["id"])) + len(logs) == 30


def test_a_keys_files_are_bounded_by_its_storage_quota(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    server = start_gateway(config(fake, tmp_path, max_storage_mb=0.01))  # 10,485 bytes
    api = client(server, MASTER_KEY)
    first = api.files.create(file=("a.txt", b"a" * 6000), purpose="user_data")
    with pytest.raises(openai.APIStatusError) as refused:
        api.files.create(file=("b.txt", b"b" * 6000), purpose="user_data")
    assert refused.value.status_code == 413
    assert refused.value.body["code"] == "storage_quota_exceeded"  # type: ignore[index]
    other = client(server, Admin(server.url).key()["key"])
    assert other.files.create(file=("c.txt", b"c" * 6000), purpose="user_data").bytes == 6000
    api.files.delete(first.id)
    assert api.files.create(file=("b.txt", b"b" * 6000), purpose="user_data").bytes == 6000


def test_a_file_larger_than_one_stored_part_comes_back_whole(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    from llmport.db.jobs import PART

    server = start_gateway(config(fake, tmp_path))
    api = client(server, MASTER_KEY)
    data = bytes(range(256)) * ((PART + PART // 2) // 256)  # a part and a half
    stored = api.files.create(file=("big.bin", data), purpose="user_data")
    assert stored.bytes == len(data)
    downloaded = httpx.get(f"{server.url}/v1/files/{stored.id}/content", timeout=60,
                           headers={"authorization": f"Bearer {MASTER_KEY}"})
    assert downloaded.status_code == 200 and downloaded.content == data
    assert downloaded.headers["content-length"] == str(len(data))
    assert api.files.content(stored.id).content == data
    with closing(sqlite3.connect(tmp_path / "shared-data" / "llmport.db")) as db:
        parts = db.execute("SELECT part, length(data) FROM file_contents WHERE file_id = ? "
                           "ORDER BY part", (stored.id,)).fetchall()
    assert parts == [(0, PART), (1, len(data) - PART)]  # kept in two parts
