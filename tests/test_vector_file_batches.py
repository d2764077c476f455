"""Vector store file batches with the official ``openai`` client: many files added at once
(``upload_and_poll``, per-file attributes), their counts and listing, cancellation that
stores nothing of a file being indexed, and refusals by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.admin import Admin
from tests.support.fake_openai import FakeOpenAI, Hang
from tests.support.servers import GatewayServer
from tests.support.spec import check
from tests.test_vector_stores import client, rag_config, upload, wait_indexed

Start = Callable[[dict[str, Any]], GatewayServer]
TEXTS = {"alpha.txt": "alpha " * 50, "beta.txt": "beta " * 60, "gamma.txt": "gamma " * 70}


def test_upload_and_poll_indexes_every_file_and_lists_the_batchs_own(
        start_gateway: Start, tmp_path: Path) -> None:
    server = start_gateway(rag_config(tmp_path))
    api = client(server)
    store = api.vector_stores.create(name="batched")
    earlier = upload(api, "earlier.txt", "added on its own, before the batch")
    api.vector_stores.files.create(vector_store_id=store.id, file_id=earlier)

    batch = api.vector_stores.file_batches.upload_and_poll(
        store.id, files=[(name, text.encode()) for name, text in TEXTS.items()],
        poll_interval_ms=50)
    check(batch.model_dump(exclude_unset=True), "VectorStoreFileBatchObject")
    assert batch.id.startswith("vsfb_") and batch.vector_store_id == store.id
    assert batch.status == "completed"
    assert (batch.file_counts.completed, batch.file_counts.total) == (3, 3)

    listed = api.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id)
    check(listed.model_dump(exclude_unset=True), "ListVectorStoreFilesResponse")
    assert sorted(f.status for f in listed.data) == ["completed"] * 3
    assert earlier not in {f.id for f in listed.data}  # the store's, not the batch's
    paged = api.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id,
                                                      limit=2, order="asc")
    assert len(paged.data) == 2 and paged.has_more
    assert len([f.id for f in paged]) == 3  # the client follows `after` to the last page

    store = wait_indexed(api, store.id)
    assert store.file_counts.completed == 4
    assert store.usage_bytes == sum(len(t) for t in TEXTS.values()) + len(
        "added on its own, before the batch")
    assert api.vector_stores.file_batches.retrieve(
        batch.id, vector_store_id=store.id).model_dump() == batch.model_dump()


def test_per_file_attributes_and_a_file_already_in_the_store(start_gateway: Start,
                                                             tmp_path: Path) -> None:
    server = start_gateway(rag_config(tmp_path))
    api = client(server)
    ids = {name: upload(api, name, text) for name, text in TEXTS.items()}
    store = api.vector_stores.create(file_ids=[ids["alpha.txt"]])
    wait_indexed(api, store.id)
    batch = api.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, poll_interval_ms=50,
        files=[{"file_id": ids["alpha.txt"], "attributes": {"kept": "as it was"}},
               {"file_id": ids["beta.txt"], "attributes": {"year": 2024}},
               {"file_id": ids["gamma.txt"], "chunking_strategy": {
                   "type": "static", "static": {"max_chunk_size_tokens": 100,
                                                "chunk_overlap_tokens": 0}}}])
    assert batch.status == "completed" and batch.file_counts.total == 3
    files = {f.id: f for f in api.vector_stores.files.list(store.id)}
    assert files[ids["alpha.txt"]].attributes == {}  # there already: left as it was
    assert files[ids["beta.txt"]].attributes == {"year": 2024}
    assert files[ids["gamma.txt"]].model_dump()["chunking_strategy"]["static"] == {
        "max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}
    hits = api.vector_stores.search(store.id, query="beta", filters={
        "type": "eq", "key": "year", "value": 2024})
    assert {hit.file_id for hit in hits.data} == {ids["beta.txt"]}

    shared = api.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=[ids["alpha.txt"], ids["beta.txt"], ids["alpha.txt"]],
        attributes={"batch": "second"}, poll_interval_ms=50)
    assert shared.file_counts.total == 2  # each file once


def test_cancel_stores_nothing_of_the_files_not_indexed(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    settings = rag_config(tmp_path, embedding_model="remote")
    settings["models"].append({"name": "remote", "provider": "openai", "api_base": fake.url,
                               "api_key": "sk-up"})
    server = start_gateway(settings)
    api = client(server)
    store = api.vector_stores.create()
    ids = [upload(api, name, text) for name, text in TEXTS.items()]
    fake.enqueue(Hang(seconds=1.0))  # the first file's embeddings take a second
    batch = api.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=ids)
    assert batch.status == "in_progress" and batch.file_counts.in_progress == 3
    assert fake.wait_for(lambda: len(fake.history) == 1)  # one file is being indexed

    cancelled = api.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)
    assert cancelled.status == "cancelled"
    assert (cancelled.file_counts.cancelled, cancelled.file_counts.in_progress) == (3, 0)
    # The indexer takes one file at a time: once a file added after the cancel is indexed,
    # it is done with the cancelled one, whose embeddings came back meanwhile.
    later = upload(api, "later.txt", "delta " * 10)
    api.vector_stores.files.create(vector_store_id=store.id, file_id=later)
    store = wait_indexed(api, store.id)
    assert store.usage_bytes == len("delta " * 10)  # the later file's bytes alone
    assert (store.file_counts.cancelled, store.file_counts.completed) == (3, 1)
    for file in api.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id):
        assert file.status == "cancelled" and file.usage_bytes == 0
    hits = api.vector_stores.search(store.id, query="alpha")
    assert {hit.file_id for hit in hits.data} == {later}  # no chunk of a cancelled file
    # Embeddings requests: the cancelled file's, the later file's, the search's; no other.
    assert [r.path.rsplit("/", 1)[-1] for r in fake.history] == ["embeddings"] * 3
    again = api.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)
    assert again.status == "cancelled"


def test_refusals_name_their_parameter_and_nothing_is_added(start_gateway: Start,
                                                            tmp_path: Path) -> None:
    server = start_gateway(rag_config(tmp_path))
    admin = Admin(server.url)
    api, other = client(server), client(server, admin.key()["key"])
    store = api.vector_stores.create()
    file_id = upload(api, "a.txt", "alpha")
    theirs = upload(other, "b.txt", "beta")
    batches = api.vector_stores.file_batches
    refusals: list[tuple[Callable[[], Any], str]] = [
        (lambda: batches.create(vector_store_id=store.id), "file_ids"),
        (lambda: batches.create(vector_store_id=store.id, file_ids=[]), "file_ids"),
        (lambda: batches.create(vector_store_id=store.id, file_ids=[file_id],
                                files=[{"file_id": file_id}]), "file_ids"),
        (lambda: batches.create(vector_store_id=store.id, files=[{"file_id": file_id}],
                                attributes={"a": "b"}), "files"),
        (lambda: batches.create(vector_store_id=store.id, files=[{"id": file_id}]),  # type: ignore[typeddict-item]
         "files"),
        (lambda: batches.create(vector_store_id=store.id, file_ids=[file_id],
                                chunking_strategy={"type": "static", "static": {
                                    "max_chunk_size_tokens": 10,
                                    "chunk_overlap_tokens": 0}}), "chunking_strategy"),
        (lambda: batches.create(vector_store_id=store.id, file_ids=[file_id],
                                attributes={"k": ["a"]}), "attributes"),  # type: ignore[dict-item]
    ]
    for call, param in refusals:
        with pytest.raises(openai.BadRequestError) as refused:
            call()
        assert refused.value.body["param"] == param, refused.value.body  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as missing:  # another key's file
        batches.create(vector_store_id=store.id, file_ids=[file_id, theirs])
    assert missing.value.body["code"] == "file_not_found"  # type: ignore[index]
    assert api.vector_stores.files.list(store.id).data == []  # nothing of that batch added

    batch = batches.create_and_poll(vector_store_id=store.id, file_ids=[file_id],
                                    poll_interval_ms=50)
    for call in (lambda: other.vector_stores.file_batches.retrieve(
                     batch.id, vector_store_id=store.id),
                 lambda: other.vector_stores.file_batches.cancel(
                     batch.id, vector_store_id=store.id),
                 lambda: other.vector_stores.file_batches.list_files(
                     batch.id, vector_store_id=store.id),
                 lambda: batches.retrieve("vsfb_nope", vector_store_id=store.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    second = api.vector_stores.create()  # a batch is found only under its own store
    with pytest.raises(openai.NotFoundError):
        batches.retrieve(batch.id, vector_store_id=second.id)
