"""The ``anthropic`` provider inside the router's resilience features.

It continues a trailing assistant message (``prefill``), so it can finish a
stream another deployment broke off; and its "prompt is too long" is a
context-length error, which the router's context-window fallbacks act on.
"""

from __future__ import annotations

from typing import Any

import openai

from tests.conftest import MASTER_KEY
from tests.support.fake_anthropic import Fail, FakeAnthropic
from tests.support.fake_openai import Answer, FakeOpenAI

USER: Any = [{"role": "user", "content": "Tell me a story."}]


def gateway(start_gateway: Any, fake: FakeOpenAI, claude: FakeAnthropic,
            router: dict[str, Any]) -> openai.OpenAI:
    server = start_gateway({"auth": {"master_key": MASTER_KEY}, "router": router, "models": [
        {"name": "gpt", "provider": "openai", "api_base": fake.url},
        {"name": "claude", "provider": "anthropic", "model": "claude-sonnet-4-5",
         "api_base": claude.url, "api_key": "sk-ant-upstream"},
        {"name": "demo", "provider": "demo", "first_token_ms": 0, "token_delay_ms": 0}]})
    return openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER_KEY, max_retries=0)


def test_a_broken_stream_is_continued_by_a_messages_model(
        start_gateway: Any, fake: FakeOpenAI, claude_upstream: FakeAnthropic) -> None:
    client = gateway(start_gateway, fake, claude_upstream, {
        "num_retries": 0, "fallbacks": {"gpt": ["claude"]}, "stream_rescue": "continue"})
    fake.enqueue(Answer(tokens=30, cut_after=3))
    stream = client.chat.completions.create(model="gpt", messages=USER, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from the (continued by the fake)"
    assert claude_upstream.history[-1].body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Tell me a story."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello from the"}]}]


def test_prompt_too_long_falls_back_to_a_longer_context(
        start_gateway: Any, fake: FakeOpenAI, claude_upstream: FakeAnthropic) -> None:
    client = gateway(start_gateway, fake, claude_upstream,
                     {"context_window_fallbacks": {"claude": ["gpt"]}})
    claude_upstream.enqueue(Fail(400, "invalid_request_error",
                                 "prompt is too long: 208310 tokens > 200000 maximum"))
    completion = client.chat.completions.create(model="claude", messages=USER)
    assert completion.model == "fake-model-2024"  # answered by the fallback
    assert len(claude_upstream.history) == 1 and len(fake.history) == 1
