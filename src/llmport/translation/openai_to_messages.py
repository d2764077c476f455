"""OpenAI chat → Messages API: requests (outbound) and responses (inbound).

``messages_request`` turns the gateway's OpenAI-form request into a Messages
request for an upstream that speaks it; ``message_response`` turns any
provider's OpenAI answer into what a Messages client expects. Streams go
through ``openai_to_messages_stream``, which shares the helpers below.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from llmport.errors import InvalidRequestError

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "function_call": "tool_use", "content_filter": "refusal"}
DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,(?P<data>.*)", re.S)


# -- requests: OpenAI → Messages ---------------------------------------------------------------

def messages_request(body: dict[str, Any], *, model: str,
                     default_max_tokens: int) -> dict[str, Any]:
    """An OpenAI chat request as a Messages request for the upstream ``model``."""
    if (body.get("n") or 1) != 1:
        raise _unsupported("n", "more than one choice (n > 1)")
    if body.get("logprobs"):
        raise _unsupported("logprobs", "log probabilities")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(body.get("messages") or ()):
        where = f"messages[{index}]"
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), f"{where}.content"))
        elif role == "user":
            _add(turns, "user", _user_blocks(message.get("content"), f"{where}.content"))
        elif role == "assistant":
            _add(turns, "assistant", _assistant_blocks(message, where))
        elif role in ("tool", "function"):  # legacy function results answer "call_legacy"
            _add(turns, "user", [_tool_result(message, where)])
        else:
            raise _unsupported(f"{where}.role", f"the '{role}' role")
    _trim_prefill(turns)
    if not turns:
        raise InvalidRequestError(
            "'messages': a Messages API model needs at least one user or assistant message "
            "with content (system and developer messages become its system prompt).",
            param="messages", code="invalid_value")
    out: dict[str, Any] = {
        "model": model, "messages": turns,
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens")
        or default_max_tokens}
    if system:
        out["system"] = system
    if body.get("stream"):
        out["stream"] = True
    if body.get("temperature") is not None:  # OpenAI allows 0 to 2, Messages 0 to 1
        out["temperature"] = min(float(body["temperature"]), 1.0)
    for key in ("top_p", "top_k"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if body.get("tools"):
        out["tools"] = [_tool(t, f"tools[{i}]") for i, t in enumerate(body["tools"])]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None and body.get("tools"):
        out["tool_choice"] = choice
    response_format = body.get("response_format") or {}
    schema = (response_format.get("json_schema") or {}).get("schema") \
        if response_format.get("type") == "json_schema" else None
    if isinstance(schema, dict):
        out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    return out


def _add(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Append a turn; consecutive turns of one role merge (tool results then the user's text)."""
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _trim_prefill(turns: list[dict[str, Any]]) -> None:
    """The Messages API refuses a final assistant turn that ends in whitespace."""
    if turns and turns[-1]["role"] == "assistant":
        last = turns[-1]["content"][-1]
        if last["type"] == "text":
            last["text"] = last["text"].rstrip()
            if not last["text"]:
                turns[-1]["content"].pop()
                if not turns[-1]["content"]:
                    turns.pop()


def _text_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = [_text_block(part, f"{where}[{index}]") for index, part in enumerate(content or ())]
    return [block for block in blocks if block["text"]]


def _text_block(part: dict[str, Any], where: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind not in ("text", "input_text", "refusal"):
        raise _unsupported(f"{where}.type", f"'{kind}' parts here")
    text = part.get("refusal" if kind == "refusal" else "text")
    return {"type": "text", "text": text if isinstance(text, str) else ""}


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str) or content is None:
        return _text_blocks(content, where)
    blocks = []
    for index, part in enumerate(content):
        kind = part.get("type")
        if kind == "image_url":
            blocks.append(_image(part.get("image_url"), f"{where}[{index}].image_url"))
        elif kind == "file":
            blocks.append(_document(part.get("file") or {}, f"{where}[{index}].file"))
        elif (block := _text_block(part, f"{where}[{index}]"))["text"]:
            blocks.append(block)
    return blocks


def _image(image: Any, where: str) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise InvalidRequestError(f"'{where}.url' must be a string.", param=f"{where}.url",
                                  code="invalid_type")
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    match = DATA_URL.fullmatch(url)
    if match is None:
        raise InvalidRequestError(f"'{where}.url' must be an http(s) URL or a base64 data URL.",
                                  param=f"{where}.url", code="invalid_value")
    return {"type": "image", "source": {"type": "base64", "media_type": match["type"],
                                        "data": match["data"]}}


def _document(file: dict[str, Any], where: str) -> dict[str, Any]:
    match = DATA_URL.fullmatch(file.get("file_data") or "")
    if match is None:
        raise _unsupported(where, "files other than inline base64 data (file_data)")
    block: dict[str, Any] = {"type": "document", "source": {
        "type": "base64", "media_type": match["type"], "data": match["data"]}}
    if file.get("filename"):
        block["title"] = file["filename"]
    return block


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks = _text_blocks(message.get("content"), f"{where}.content")
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise InvalidRequestError(f"'{where}.tool_calls' must be an array.",
                                  param=f"{where}.tool_calls", code="invalid_type")
    calls = list(calls)
    if message.get("function_call"):
        calls.append({"id": "call_legacy", "function": message["function_call"]})
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            param = f"{where}.tool_calls[{index}].function"
            raise InvalidRequestError(f"'{param}' must be an object with a name.", param=param,
                                      code="invalid_value")
        arguments = function.get("arguments") or "{}"
        try:
            parsed = orjson.loads(arguments)
        except (orjson.JSONDecodeError, TypeError):  # not JSON, or not even a string
            parsed = None
        if not isinstance(parsed, dict):
            param = f"{where}.tool_calls[{index}].function.arguments"
            raise InvalidRequestError(f"'{param}' must be a JSON object.", param=param,
                                      code="invalid_value")
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                       "input": parsed})
    return blocks


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result",
                             "tool_use_id": message.get("tool_call_id") or "call_legacy"}
    content = message.get("content")
    if isinstance(content, list):
        content = _text_blocks(content, f"{where}.content")
    if content:
        block["content"] = content
    return block


def _tool(tool: dict[str, Any], where: str) -> dict[str, Any]:
    if tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        raise _unsupported(f"{where}.type", f"'{tool.get('type')}' tools")
    function = tool["function"]
    out: dict[str, Any] = {"name": function.get("name"), "input_schema": function.get(
        "parameters") or {"type": "object", "properties": {}}}
    if function.get("description"):
        out["description"] = function["description"]
    if function.get("strict") is True:
        out["strict"] = True
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None:
        out: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise _unsupported("tool_choice", "a tool choice other than a named function")
        out = {"type": "tool", "name": name}
    elif isinstance(choice, str):
        out = {"type": {"auto": "auto", "required": "any", "none": "none"}.get(choice, "auto")}
    else:
        raise InvalidRequestError("Invalid type for 'tool_choice': expected a string or an "
                                  "object.", param="tool_choice", code="invalid_type")
    if out is not None and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def _unsupported(param: str, what: str) -> InvalidRequestError:
    return InvalidRequestError(f"'{param}': {what} cannot be sent to a Messages API model.",
                               param=param, code="unsupported_parameter")


# -- responses: OpenAI → Messages --------------------------------------------------------------

def message_id(completion_id: Any) -> str:
    text = str(completion_id or "")
    return text if text.startswith("msg_") else "msg_" + text.removeprefix("chatcmpl-")


def message_usage(usage: Any) -> dict[str, int]:
    """OpenAI usage (prompt includes cached tokens) as Messages usage (it excludes them)."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = int((details.get("cached_tokens") if isinstance(details, dict) else 0) or 0)
    return {"input_tokens": max(0, int(usage.get("prompt_tokens") or 0) - cached),
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached,
            "output_tokens": int(usage.get("completion_tokens") or 0)}


def stop_reason(choice: dict[str, Any], stop_sequences: list[str] | None,
                tool_use: bool) -> tuple[str, str | None]:
    """``(stop_reason, stop_sequence)`` for an OpenAI choice.

    OpenAI does not say which stop sequence matched; vLLM-style servers do, in
    ``stop_reason``, and then it is reported. A choice with tool calls is
    ``tool_use`` whatever its finish reason (some servers say ``stop``).
    """
    if tool_use:
        return "tool_use", None
    finish = choice.get("finish_reason")
    matched = choice.get("stop_reason")
    if finish == "stop" and isinstance(matched, str) and matched in (stop_sequences or ()):
        return "stop_sequence", matched
    return STOP_REASONS.get(finish or "stop", "end_turn"), None


def tool_input(arguments: Any) -> dict[str, Any]:
    """Tool-call arguments as a Messages ``input`` object; what is not one is kept, wrapped."""
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"arguments": parsed}


def reasoning_text(message: dict[str, Any]) -> str | None:
    """The reasoning of a reasoning model, as OpenAI-compatible servers name it."""
    text = message.get("reasoning_content") or message.get("reasoning")
    return text if isinstance(text, str) else None


def message_response(completion: dict[str, Any], *, model: str, stop_sequences: list[str] | None,
                     thinking: bool = False) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` (its first choice) as a Messages ``message``.

    With ``thinking`` (the client asked for it) a reasoning model's reasoning
    is a ``thinking`` block; it has no signature, which only Anthropic can make.
    """
    choice = (completion.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    thought = reasoning_text(reply) if thinking else None
    if thought:
        content.append({"type": "thinking", "thinking": thought, "signature": ""})
    text = reply.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if not text and reply.get("refusal"):
        text = reply["refusal"]
    if text:
        content.append({"type": "text", "text": text})
    calls = list(reply.get("tool_calls") or ())
    if reply.get("function_call"):
        calls.append({"id": "call_legacy", "function": reply["function_call"]})
    for index, call in enumerate(calls):
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or f"toolu_{index}",
                        "name": function.get("name") or "",
                        "input": tool_input(function.get("arguments"))})
    reason, sequence = stop_reason(choice, stop_sequences, bool(calls))
    if reply.get("refusal") and reason == "end_turn":
        reason = "refusal"
    return {"id": message_id(completion.get("id")), "type": "message", "role": "assistant",
            "model": completion.get("model") or model, "content": content,
            "stop_reason": reason, "stop_sequence": sequence,
            "usage": message_usage(completion.get("usage"))}

