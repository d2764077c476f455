"""An answer translated between the two APIs says the same streamed or not.

OpenAI → Messages: random answers (reasoning, text or a refusal, tool calls, every finish
reason, a matched stop sequence, cached tokens) are made both as one ``chat.completion`` and
as the chunks an OpenAI-compatible server streams (text and tool arguments cut at random). The
completion goes through ``message_response``; the chunks through ``MessageEvents``, whose
events are put back together as a Messages client does (text and thinking deltas joined,
a tool's ``partial_json`` joined and parsed). Both must give the same message.
Messages → OpenAI, the same way: random Messages answers as one message and as its stream
events, through ``chat_completion`` and ``ChunkStream``, the chunks reassembled as the
``openai`` SDK does.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from llmport.api.anthropic.validation import validate_messages
from llmport.api.openai.validation import validate_chat
from llmport.translation.messages_to_openai import chat_completion, chat_request
from llmport.translation.messages_to_openai_stream import ChunkStream
from llmport.translation.openai_to_messages import message_response, messages_request
from llmport.translation.openai_to_messages_stream import MessageEvents
from tests.support import spec
from tests.support.fake_anthropic import semantic_problems
from tests.support.messages_shapes import event_problems, message_problems, request_problems

STOPS = ["###", "END"]
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5E"
       "rkJggg==")  # one transparent pixel


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


def random_message(seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(a Messages answer, the same answer as the events of its stream)."""
    rng = random.Random(seed)
    blocks: list[dict[str, Any]] = []
    if rng.random() < 0.3:
        blocks.append({"type": "thinking", "thinking": "Two and two: four.", "signature": "sig"})
    if rng.random() < 0.2:  # a server tool (web search): neither API's client sees it
        blocks.append({"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
                       "input": {"query": "weather"}})
    if rng.random() < 0.8:
        blocks.append({"type": "text", "text": rng.choice(["Hi!", "It is 4.", "café ☕ ok"])})
    for i in range(rng.choice([0, 0, 1, 2])):
        blocks.append({"type": "tool_use", "id": f"toolu_0{i}", "name": "get_weather",
                       "input": rng.choice([{}, {"city": "Paris"}, {"q": "a b", "n": [1, 2]}])})
    tools = any(block["type"] == "tool_use" for block in blocks)
    stop = "tool_use" if tools else rng.choice(
        ["end_turn", "max_tokens", "stop_sequence", "refusal", "pause_turn"])
    sequence = "###" if stop == "stop_sequence" else None
    usage = {"input_tokens": rng.randint(1, 50), "output_tokens": rng.randint(1, 40),
             "cache_creation_input_tokens": rng.choice([0, 7]),
             "cache_read_input_tokens": rng.choice([0, 11])}
    message = {"id": f"msg_{seed:04d}", "type": "message", "role": "assistant",
               "model": "claude-sonnet-4-5", "content": blocks, "stop_reason": stop,
               "stop_sequence": sequence, "usage": usage}

    events: list[dict[str, Any]] = [{"type": "message_start", "message": {
        **message, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1}}}, {"type": "ping"}]
    for index, block in enumerate(blocks):
        kind = block["type"]
        start = {"thinking": {"type": "thinking", "thinking": "", "signature": ""},
                 "text": {"type": "text", "text": ""}}.get(kind, {**block, "input": {}})
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        if kind in ("thinking", "text"):
            for piece in cut(rng, block[kind]):
                events.append({"type": "content_block_delta", "index": index,
                               "delta": {"type": f"{kind}_delta", kind: piece}})
            if kind == "thinking":
                events.append({"type": "content_block_delta", "index": index,
                               "delta": {"type": "signature_delta", "signature": "sig"}})
        else:
            arguments = json.dumps(block["input"])
            for piece in ["", *cut(rng, arguments)]:  # the API's first delta is often empty
                events.append({"type": "content_block_delta", "index": index,
                               "delta": {"type": "input_json_delta", "partial_json": piece}})
        events.append({"type": "content_block_stop", "index": index})
    events += [{"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": sequence},
                "usage": {"output_tokens": usage["output_tokens"]}},
               {"type": "message_stop"}]
    return message, events


def reassembled(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """What the ``openai`` SDK's stream helpers build from the chunks (first choice)."""
    content, reasoning = "", ""
    calls: dict[int, dict[str, Any]] = {}
    finish = matched = usage = None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            reasoning += delta.get("reasoning_content") or ""
            for call in delta.get("tool_calls") or ():
                entry = calls.setdefault(call["index"], {"id": None, "name": None, "arguments": ""})
                entry["id"] = call.get("id") or entry["id"]
                function = call.get("function") or {}
                entry["name"] = function.get("name") or entry["name"]
                entry["arguments"] += function.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
            matched = choice.get("stop_reason") or matched
    return {"content": content, "reasoning": reasoning, "finish": finish, "matched": matched,
            "usage": usage, "calls": [(c["id"], c["name"], json.loads(c["arguments"] or "{}"))
                                      for _, c in sorted(calls.items())]}


def flattened(completion: dict[str, Any]) -> dict[str, Any]:
    """The same fields of a ``chat.completion`` (an absent text is an empty one)."""
    choice = completion["choices"][0]
    message = choice["message"]
    return {"content": message.get("content") or "",
            "reasoning": message.get("reasoning_content") or "",
            "finish": choice["finish_reason"], "matched": choice.get("stop_reason"),
            "usage": completion["usage"],
            "calls": [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
                      for c in message.get("tool_calls") or ()]}


@pytest.mark.parametrize("seed", range(200))
def test_a_streamed_messages_answer_translates_to_the_same_completion(seed: int) -> None:
    message, events = random_message(seed)
    whole = chat_completion(message, created=1700000000)
    spec.check(whole, "CreateChatCompletionResponse")
    translator = ChunkStream(created=1700000000)
    chunks = [chunk for event in events for chunk in translator.feed(event)]
    assert translator.done and translator.stopped
    for chunk in chunks:
        spec.check(chunk, "CreateChatCompletionStreamResponse")
        assert (chunk["id"], chunk["model"]) == (whole["id"], whole["model"])
    assert reassembled(chunks) == flattened(whole)


def random_chat_request(seed: int) -> dict[str, Any]:
    """A valid OpenAI chat request: system and developer messages anywhere, user turns of
    text and images, assistant turns with text and tool calls answered by tool messages (in
    any order), a final assistant prefill sometimes, and the sampling and tool parameters."""
    rng = random.Random(seed)
    png = f"data:image/png;base64,{PNG}"
    messages: list[dict[str, Any]] = []
    if rng.random() < 0.6:
        messages.append({"role": rng.choice(["system", "developer"]), "content": "Be brief."})
    calls = 0
    for turn in range(rng.randint(1, 4)):
        if rng.random() < 0.2:
            messages.append({"role": "system", "content": [{"type": "text", "text": "Now."}]})
        user: Any = rng.choice(["Hi", [{"type": "text", "text": "Look:"},
                                      {"type": "image_url", "image_url": {"url": png}}]])
        messages.append({"role": "user", "content": user})
        if rng.random() < 0.3:
            messages.append({"role": "user", "content": "And more."})
        if turn == 0 and rng.random() < 0.1:
            continue
        ids = [f"call_{calls + i}" for i in range(rng.choice([0, 1, 2]))]
        calls += len(ids)
        assistant: dict[str, Any] = {"role": "assistant",
                                     "content": rng.choice([None, "", "Let me check."])
                                     if ids else rng.choice(["Sure.", "Done. "])}
        if ids:
            assistant["tool_calls"] = [{"id": i, "type": "function", "function": {
                "name": "lookup", "arguments": rng.choice(["{}", '{"q": "x"}'])}} for i in ids]
        messages.append(assistant)
        for call_id in rng.sample(ids, len(ids)):
            messages.append({"role": "tool", "tool_call_id": call_id,
                             "content": rng.choice(["42", [{"type": "text", "text": "ok"}]])})
    # Ending with the assistant's text is a prefill (with trailing whitespace, sometimes).
    if messages[-1]["role"] == "assistant" and rng.random() < 0.5:
        messages.append({"role": "user", "content": "Thanks."})
    body: dict[str, Any] = {"model": "gpt-4o", "messages": messages}
    if rng.random() < 0.5:
        body["tools"] = [{"type": "function", "function": {
            "name": "lookup", "description": "Look up.",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
        body["tool_choice"] = rng.choice(["auto", "none", "required",
                                          {"type": "function", "function": {"name": "lookup"}}])
        if rng.random() < 0.3:
            body["parallel_tool_calls"] = False
    for key, value in (("temperature", rng.choice([0, 0.7, 1.5])), ("top_p", 0.9),
                       ("stop", rng.choice(["###", ["a", "b"]])), ("max_tokens", 50),
                       ("max_completion_tokens", 60), ("user", "u-1")):
        if rng.random() < 0.3:
            body[key] = value
    return body


def unanswered_tool_uses(body: dict[str, Any]) -> list[str]:
    """The Messages API's rule ``semantic_problems`` leaves out: every ``tool_use`` is answered
    by a ``tool_result`` in the next message."""
    turns = body["messages"]
    problems = []
    for index, turn in enumerate(turns):
        blocks = turn["content"] if isinstance(turn["content"], list) else []
        uses = {block["id"] for block in blocks if block["type"] == "tool_use"}
        nxt = turns[index + 1]["content"] if index + 1 < len(turns) else []
        answered = {block.get("tool_use_id") for block in nxt if isinstance(nxt, list)
                    and block["type"] == "tool_result"} if isinstance(nxt, list) else set()
        if uses - answered and index + 1 < len(turns):
            problems.append(f"messages.{index}: tool_use without tool_result: {uses - answered}")
    return problems


@pytest.mark.parametrize("seed", range(300))
def test_an_openai_request_becomes_a_valid_messages_request(seed: int) -> None:
    body = random_chat_request(seed)
    spec.check(body, "CreateChatCompletionRequest")
    validate_chat(body)
    result = messages_request(body, model="claude-x", default_max_tokens=1024)
    assert request_problems(result) == [], result
    assert semantic_problems(result) == [], result
    assert unanswered_tool_uses(result) == [], result
    assert result["messages"][0]["role"] == "user"


def random_messages_request(seed: int) -> dict[str, Any]:
    """A valid Messages request: a system prompt (text or blocks), user turns of text, images
    and documents, assistant turns of thinking, text and tool uses, each answered by tool
    results (text, blocks with an image, errors) in the next user turn, maybe with text after
    them; tools, tool choice, stop sequences, sampling, metadata and an output schema."""
    rng = random.Random(seed)
    image = {"type": "image", "source": rng.choice([
        {"type": "base64", "media_type": "image/png", "data": PNG},
        {"type": "url", "url": "https://example.com/a.png"}])}
    document = {"type": "document", "source": rng.choice([
        {"type": "text", "media_type": "text/plain", "data": "Some notes."},
        {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}])}
    messages: list[dict[str, Any]] = []
    pending: list[str] = []  # tool uses the next user turn must answer
    uses = 0
    for turn in range(rng.randint(1, 4)):
        blocks: list[dict[str, Any]] = [
            {"type": "tool_result", "tool_use_id": use_id, "is_error": rng.random() < 0.2,
             "content": rng.choice(["42", [{"type": "text", "text": "ok"}, image]])}
            for use_id in pending]
        if not blocks or rng.random() < 0.5:
            blocks.append(rng.choice([{"type": "text", "text": "Hi"}, image, document]))
        messages.append({"role": "user", "content": rng.choice(["Hello", blocks])
                         if not pending else blocks})
        if turn == 3 or rng.random() < 0.2:
            break
        reply: list[dict[str, Any]] = []
        if rng.random() < 0.3:
            reply.append({"type": "thinking", "thinking": "Hmm.", "signature": "sig"})
        if rng.random() < 0.7:
            reply.append({"type": "text", "text": "Let me look."})
        pending = [f"toolu_{uses + i}" for i in range(rng.choice([0, 1, 2]))]
        uses += len(pending)
        reply += [{"type": "tool_use", "id": use_id, "name": "lookup",
                   "input": rng.choice([{}, {"q": "x"}])} for use_id in pending]
        if not reply:
            reply.append({"type": "text", "text": "Sure."})
        messages.append({"role": "assistant", "content": reply})
    if messages[-1]["role"] == "assistant" and pending:
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": use_id, "content": "done"}
            for use_id in pending]})
    body: dict[str, Any] = {"model": "claude-x", "max_tokens": 100, "messages": messages}
    if rng.random() < 0.6:
        body["system"] = rng.choice(["Be brief.", [{"type": "text", "text": "Be brief."},
                                                   {"type": "text", "text": "Be kind."}]])
    if rng.random() < 0.5:
        body["tools"] = [{"name": "lookup", "description": "Look up.", "input_schema": {
            "type": "object", "properties": {"q": {"type": "string"}}}}]
        body["tool_choice"] = rng.choice([
            {"type": "auto"}, {"type": "any"}, {"type": "none"},
            {"type": "tool", "name": "lookup", "disable_parallel_tool_use": True}])
    for key, value in (("temperature", 0.5), ("top_p", 0.9), ("top_k", 40),
                       ("stop_sequences", ["###"]), ("metadata", {"user_id": "u-1"}),
                       ("stream", True), ("output_config", {"format": {
                           "type": "json_schema", "schema": {
                               "type": "object", "properties": {"a": {"type": "string"}}}}})):
        if rng.random() < 0.3:
            body[key] = value
    return body


def unanswered_tool_calls(messages: list[dict[str, Any]]) -> list[str]:
    """OpenAI's rule: an assistant message's tool calls are each answered by a ``tool``
    message right after it (before any other message), and a ``tool`` message answers one."""
    problems = []
    for index, message in enumerate(messages):
        if message["role"] == "tool":
            before = index - 1
            while before >= 0 and messages[before]["role"] == "tool":
                before -= 1
            ids = {c["id"] for c in messages[before].get("tool_calls") or ()} if before >= 0 \
                else set()
            if message["tool_call_id"] not in ids:
                problems.append(f"messages[{index}] answers no call of the message before")
        if message.get("tool_calls"):
            answers = set()
            for after in messages[index + 1:]:
                if after["role"] != "tool":
                    break
                answers.add(after["tool_call_id"])
            missing = {c["id"] for c in message["tool_calls"]} - answers
            if missing and index + 1 < len(messages):
                problems.append(f"messages[{index}]: calls without answers: {missing}")
    return problems


@pytest.mark.parametrize("seed", range(300))
def test_a_messages_request_becomes_a_valid_openai_request(seed: int) -> None:
    body = random_messages_request(seed)
    assert request_problems(body) == [] and semantic_problems(body) == [], body
    validate_messages(body)
    result = chat_request(body)
    spec.check(result, "CreateChatCompletionRequest")
    assert unanswered_tool_calls(result["messages"]) == [], result["messages"]
