"""An OpenAI answer translated to a Messages answer says the same streamed or not.

Random answers (reasoning, text or a refusal, tool calls, every finish reason, a matched
stop sequence, cached tokens) are made both as one ``chat.completion`` and as the chunks an
OpenAI-compatible server streams (their text and tool arguments cut at random points). The
completion goes through ``message_response``; the chunks through ``MessageEvents``, whose
events are put back together as a Messages client does (text and thinking deltas joined,
a tool's ``partial_json`` joined and parsed). Both must give the same message.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from llmport.translation.openai_to_messages import message_response
from llmport.translation.openai_to_messages_stream import MessageEvents
from tests.support.messages_shapes import event_problems, message_problems

STOPS = ["###", "END"]


def cut(rng: random.Random, text: str) -> list[str]:
    """``text`` in random pieces (none empty)."""
    points = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 4))))
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


def random_answer(seed: int) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    """(the completion, the same answer as stream chunks, whether thinking is shown)."""
    rng = random.Random(seed)
    reasoning = rng.choice([None, "Let me think: 2 + 2 is 4."])
    content = refusal = None
    if rng.random() < 0.2:
        refusal = "I can't help with that."
    elif rng.random() < 0.8:
        content = rng.choice(["Hello!", "The answer is 4.", "naïve café ☕ — done"])
    calls = [{"id": f"call_{i}abc", "type": "function", "function": {
        "name": rng.choice(["get_weather", "lookup"]),
        "arguments": json.dumps(rng.choice([{}, {"city": "Paris"}, {"q": "a b", "n": [1, 2]}]))}}
        for i in range(rng.choice([0, 0, 1, 2]))]
    finish = "tool_calls" if calls else rng.choice(["stop", "stop", "length", "content_filter"])
    matched = rng.choice([None, *STOPS]) if finish == "stop" else None
    usage = {"prompt_tokens": rng.randint(5, 50), "completion_tokens": rng.randint(1, 40),
             "total_tokens": 0}
    if rng.random() < 0.3:
        usage["prompt_tokens_details"] = {"cached_tokens": rng.randint(0, 5)}
    ident, model = f"chatcmpl-{seed}", "gpt-4o-mini-2024-07-18"

    message: dict[str, Any] = {"role": "assistant", "content": content}
    if refusal is not None:
        message["refusal"] = refusal
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = calls
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
    if matched is not None:
        choice["stop_reason"] = matched
    completion = {"id": ident, "object": "chat.completion", "model": model,
                  "choices": [choice], "usage": usage}

    def chunk(delta: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"id": ident, "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": None, **extra}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    if rng.random() < 0.3:  # a second choice (n=2), which Messages has no room for
        chunks.append({"id": ident, "object": "chat.completion.chunk", "model": model,
                       "choices": [{"index": 1, "delta": {"content": "other"},
                                    "finish_reason": None}]})
    for piece in cut(rng, reasoning) if reasoning else ():
        chunks.append(chunk({"reasoning_content": piece}))
    for piece in cut(rng, content) if content else ():
        chunks.append(chunk({"content": piece}))
    for piece in cut(rng, refusal) if refusal else ():
        chunks.append(chunk({"refusal": piece}))
    for index, call in enumerate(calls):
        function = call["function"]
        chunks.append(chunk({"tool_calls": [{"index": index, "id": call["id"],
                                             "type": "function", "function": {
                                                 "name": function["name"], "arguments": ""}}]}))
        for piece in cut(rng, function["arguments"]):
            chunks.append(chunk({"tool_calls": [{"index": index,
                                                 "function": {"arguments": piece}}]}))
    last = chunk({}, finish_reason=finish)
    if matched is not None:
        last["choices"][0]["stop_reason"] = matched
    chunks += [last, {"id": ident, "object": "chat.completion.chunk", "model": model,
                      "choices": [], "usage": usage}]
    return completion, chunks, rng.random() < 0.5


def assembled(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The message a Messages client builds from the stream's events."""
    message: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for name, data in events:
        if name == "message_start":
            message = {**data["message"], "content": []}
        elif name == "content_block_start":
            assert data["index"] == len(message["content"])
            message["content"].append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block, delta = message["content"][data["index"]], data["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            else:
                partial[data["index"]] = partial.get(data["index"], "") + delta["partial_json"]
        elif name == "message_delta":
            message.update(data["delta"])
            message["usage"] = data["usage"]
    for index, text in partial.items():
        message["content"][index]["input"] = json.loads(text or "{}")
    return message


@pytest.mark.parametrize("seed", range(300))
def test_a_streamed_answer_translates_to_the_same_message(seed: int) -> None:
    completion, chunks, thinking = random_answer(seed)
    whole = message_response(completion, model="fallback", stop_sequences=STOPS,
                             thinking=thinking)
    translator = MessageEvents("fallback", STOPS, thinking)
    events = [event for chunk in chunks for event in translator.feed(chunk)]
    events += translator.close()
    for name, data in events:
        assert data["type"] == name and event_problems(data) == []
    assert message_problems(whole) == []
    assert assembled(events) == whole
