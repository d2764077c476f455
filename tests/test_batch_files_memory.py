"""Large files and batches in bounded memory: a file is stored, checked, run and written out
a part at a time, never whole; and its lines are JSON lines, split on newlines only."""

from __future__ import annotations

import random
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from llmport.batches.input import LineSplitter
from llmport.db.jobs import PART
from tests.support.admin import MASTER_KEY, Admin
from tests.support.fake_openai import Answer, FakeOpenAI
from tests.test_batches import Start, chat_calls, client, config, jsonl, line, wait_final

LINES = 400
PADDING = 120_000  # spaces inside each line's JSON: a large file (~46 MB) of small requests
ANSWER = "x" * 25_000  # each answer's text: a large output file (~10 MB) too


def test_a_large_file_and_its_batch_never_sit_whole_in_memory(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    settings = config(fake, tmp_path, concurrency=4)
    settings["idempotency"] = {"enabled": False}  # it would keep every answer (measured apart)
    server = start_gateway(settings)
    fake.default = Answer(words=(ANSWER,))
    api = client(server, MASTER_KEY)
    path = tmp_path / "input.jsonl"
    with path.open("wb") as out:
        for index in range(LINES):
            request = orjson.dumps(line(f"r{index}", f"Question {index}"))
            out.write(request[:-1] + b" " * PADDING + b"}\n")  # whitespace is valid JSON
    size = path.stat().st_size
    assert size > 40 * PART

    tracemalloc.start()
    try:
        with path.open("rb") as handle:  # the client streams it from disk
            stored = api.files.create(file=("input.jsonl", handle), purpose="batch")
        batch = wait_final(api, api.batches.create(
            input_file_id=stored.id, endpoint="/v1/chat/completions",
            completion_window="24h").id, timeout=120)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert stored.bytes == size
    assert batch.status == "completed" and batch.request_counts.completed == LINES, batch
    assert len(chat_calls(fake)) == LINES
    # The whole file read, parsed or joined at once took several times its size; read a
    # part at a time, and written a page of answers at a time, it takes a few parts.
    assert peak < size / 3, f"peak {peak / 2**20:.1f} MB for a {size / 2**20:.1f} MB file"
    with httpx.stream("GET", f"{server.url}/v1/files/{batch.output_file_id}/content",
                      headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=60) as got:
        output = b"".join(got.iter_bytes())
    answers = [orjson.loads(raw) for raw in output.splitlines()]
    assert sorted(a["custom_id"] for a in answers) == sorted(f"r{i}" for i in range(LINES))
    assert all(a["response"]["body"]["choices"][0]["message"]["content"] == ANSWER
               for a in answers)
    assert len(output) > 8 * PART  # written in many parts


def test_json_lines_split_on_newlines_only_whatever_the_pieces() -> None:
    text = (b'{"a": "line\xe2\x80\xa8separator inside a string"}\r\n'  # raw U+2028: valid JSON
            b"\n   \n"  # blank lines: counted, not given
            b'{"b": 2}\n'
            b'{"c": "\xc3\xa9t\xc3\xa9"}')  # no newline at the end
    expected = [(1, b'{"a": "line\xe2\x80\xa8separator inside a string"}'), (4, b'{"b": 2}'),
                (5, b'{"c": "\xc3\xa9t\xc3\xa9"}')]
    rng = random.Random(7)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, 8)))
        splitter = LineSplitter()
        found = []
        for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True):
            found += splitter.feed(text[start:end])
        found += splitter.end()
        assert found == expected, cuts


@pytest.mark.parametrize("content", ["line\u2028separator", "para\u2029graph", "next\x85line"])
def test_a_request_with_a_unicode_line_separator_in_a_string_runs_intact(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path, content: str) -> None:
    server = start_gateway(config(fake, tmp_path))
    api = client(server, MASTER_KEY)
    raw = orjson.dumps(line("only", content)) + b"\n"
    assert content.encode() in raw  # orjson writes these characters raw
    stored = api.files.create(file=("input.jsonl", raw), purpose="batch")
    batch = wait_final(api, api.batches.create(
        input_file_id=stored.id, endpoint="/v1/chat/completions", completion_window="24h").id)
    assert batch.status == "completed", batch.errors
    assert chat_calls(fake)[0].body["messages"][0]["content"] == content


def test_a_line_that_is_not_utf8_is_named_in_the_batch_errors(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    server = start_gateway(config(fake, tmp_path))
    api = client(server, MASTER_KEY)
    bad = jsonl(line("a")) + b'{"custom_id": "b\xff"}\n' + jsonl(line("c"))
    with pytest.raises(openai.BadRequestError) as refused:
        api.files.create(file=("input.jsonl", bad), purpose="batch")
    body: Any = refused.value.body
    assert body["code"] == "invalid_file_format"
    assert "Line 2 is not UTF-8 text (byte 17)" in body["message"]
    assert chat_calls(fake) == []


def test_a_signing_keys_upload_is_checked_over_the_body_as_it_streams_in(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    from llmport.tenancy.signing import sign

    server = start_gateway(config(fake, tmp_path))
    created = Admin(server.url).key(require_signature=True)
    content = jsonl(*(line(f"r{i}", "x" * 2000) for i in range(2000)))  # ~4 MB: many pieces
    request = httpx.Request("POST", server.url + "/v1/files", data={"purpose": "batch"},
                            files={"file": ("input.jsonl", content)})
    body = request.read()
    headers = {"authorization": f"Bearer {created['key']}",
               "content-type": request.headers["content-type"]}

    def signed(over: bytes) -> dict[str, str]:
        stamp = int(time.time())
        return {**headers, "x-llmport-timestamp": str(stamp),
                "x-llmport-signature": sign(created["signing_secret"], "POST", "/v1/files",
                                            over, stamp)}

    def upload(sent_headers: dict[str, str]) -> httpx.Response:
        return httpx.post(server.url + "/v1/files", content=body, headers=sent_headers,
                          timeout=60)

    assert upload(headers).json()["error"]["code"] == "invalid_signature"  # no signature
    tampered = upload(signed(body.replace(b"r1999", b"r1998")))  # signed over another body
    assert tampered.status_code == 401
    assert tampered.json()["error"]["code"] == "invalid_signature"
    stamp = int(time.time())
    listing = {"authorization": f"Bearer {created['key']}", "x-llmport-timestamp": str(stamp),
               "x-llmport-signature": sign(created["signing_secret"], "GET", "/v1/files", b"",
                                           stamp)}
    assert httpx.get(server.url + "/v1/files", headers=listing).json()["data"] == []
    good = signed(body)
    accepted = upload(good)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["bytes"] == len(content)
    replayed = upload(good)  # the very same signed request again
    assert replayed.status_code == 401
    assert "replay" in replayed.json()["error"]["message"]


def test_a_batch_lines_answer_is_kept_for_replay_ten_leases_not_a_day(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    server = start_gateway(config(fake, tmp_path, lease_seconds=6))
    api = client(server, MASTER_KEY)
    stored = api.files.create(file=("input.jsonl", jsonl(line("a"), line("b"))), purpose="batch")
    batch = wait_final(api, api.batches.create(
        input_file_id=stored.id, endpoint="/v1/chat/completions", completion_window="24h").id)
    assert batch.status == "completed"
    store = server.gateway.store
    kept = [record.expires - store._clock() for key, record in store._records.items()
            if key.startswith("idem:")]
    assert len(kept) == 2 and all(0 < left <= 60 for left in kept), kept  # ten leases of 6 s
    # A client's own Idempotency-Key keeps its answer the configured day.
    api.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}],
                                extra_headers={"Idempotency-Key": "client-key"})
    kept = [record.expires - store._clock() for key, record in store._records.items()
            if key.startswith("idem:")]
    assert len(kept) == 3 and max(kept) > 86_000
