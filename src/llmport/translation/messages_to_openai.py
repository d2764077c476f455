"""Messages API → OpenAI chat: requests (inbound) and responses (outbound).

``chat_request`` turns a client's (validated) Messages request into the
gateway's OpenAI form; ``chat_completion`` turns an upstream's Messages answer
back into an OpenAI result (streams: ``messages_to_openai_stream``). What
OpenAI cannot say is dropped on purpose and listed in the README:
``cache_control`` markers, thinking blocks sent back in assistant turns,
``is_error`` on tool results.
"""

from __future__ import annotations

from typing import Any

import orjson

from llmport.errors import InvalidRequestError
from llmport.types import Usage

FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
                  "max_tokens": "length", "model_context_window_exceeded": "length",
                  "tool_use": "tool_calls", "refusal": "content_filter"}
IGNORED_BLOCKS = frozenset({"thinking", "redacted_thinking"})  # only their own API reads them


# -- requests: Messages → OpenAI ---------------------------------------------------------------

def chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """A validated Messages request as an OpenAI chat request (same model and stream flag)."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _system_content(system)})
    for index, message in enumerate(body["messages"]):
        messages.extend(_chat_messages(message, f"messages.{index}"))
    out: dict[str, Any] = {"model": body["model"], "messages": messages}
    if body.get("max_tokens") is not None:
        out["max_tokens"] = body["max_tokens"]
    if body.get("stream"):
        out["stream"] = True
    for key in ("temperature", "top_p", "top_k"):  # top_k passes as the common extension
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str):
        out["user"] = user
    if body.get("tools"):
        out["tools"] = [_function_tool(tool, f"tools.{i}") for i, tool in enumerate(body["tools"])]
    if body.get("tool_choice"):
        _tool_choice(body["tool_choice"], out)
    schema = ((body.get("output_config") or {}).get("format") or {}).get("schema")
    if isinstance(schema, dict):
        out["response_format"] = {"type": "json_schema",
                                  "json_schema": {"name": "output", "schema": schema}}
    return out


def _system_content(system: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if isinstance(system, str):
        return system
    parts = [{"type": "text", "text": block["text"]} for block in system]
    return parts[0]["text"] if len(parts) == 1 else parts


def _chat_messages(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """One Messages turn as OpenAI messages: tool results become ``tool`` messages first."""
    role, content = message["role"], message["content"]
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if role == "assistant":
        return [_assistant_message(content, where)]
    if role == "system":
        return [{"role": "system", "content": _system_content(content)}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        kind = block["type"]
        if kind == "tool_result":
            tool_message, images = _tool_message(block, f"{where}.content.{index}")
            out.append(tool_message)
            parts.extend(images)  # OpenAI tool messages carry text only
        elif kind not in IGNORED_BLOCKS:
            parts.append(_user_part(block, f"{where}.content.{index}"))
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant_message(content: list[dict[str, Any]], where: str) -> dict[str, Any]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        kind = block["type"]
        if kind == "text":
            text.append(block["text"])
        elif kind == "tool_use":
            calls.append({"id": block["id"], "type": "function", "function": {
                "name": block["name"], "arguments": orjson.dumps(block["input"]).decode()}})
        elif kind not in IGNORED_BLOCKS:
            raise _unsupported(f"{where}.content.{index}.type", kind)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _user_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": block["text"]}
    source = block.get("source") or {}
    if kind == "image":
        if source.get("type") == "base64":
            url = f"data:{source['media_type']};base64,{source['data']}"
        elif source.get("type") == "url":
            url = source["url"]
        else:
            raise _unsupported(f"{where}.source.type", str(source.get("type")))
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "document":
        if source.get("type") == "text":
            return {"type": "text", "text": source["data"]}
        if source.get("type") == "base64":
            return {"type": "file", "file": {
                "filename": block.get("title") or "document.pdf",
                "file_data": f"data:{source['media_type']};base64,{source['data']}"}}
        raise _unsupported(f"{where}.source.type", str(source.get("type")))
    raise _unsupported(f"{where}.type", kind)


def _tool_message(block: dict[str, Any],
                  where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    content = block.get("content", "")
    images: list[dict[str, Any]] = []
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if part["type"] == "text":
                texts.append(part["text"])
            else:
                images.append(_user_part(part, f"{where}.content.{index}"))
        content = "\n".join(texts)
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": content}, images


def _function_tool(tool: dict[str, Any], where: str) -> dict[str, Any]:
    if tool.get("type") not in (None, "custom"):
        raise _unsupported(f"{where}.type", str(tool["type"]),
                           "only client tools (name, description, input_schema) translate")
    function: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    if tool.get("strict") is True:
        function["strict"] = True
    return {"type": "function", "function": function}


def _tool_choice(choice: dict[str, Any], out: dict[str, Any]) -> None:
    kind = choice["type"]
    if kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False


def _unsupported(param: str, kind: str, hint: str = "") -> InvalidRequestError:
    return InvalidRequestError(f"{param}: '{kind}' cannot be translated for this model"
                               + (f" ({hint})." if hint else "."), param=param,
                               code="unsupported_content")


# -- responses: Messages → OpenAI --------------------------------------------------------------

def usage(data: dict[str, Any]) -> Usage:
    """Messages usage (input excludes cache reads and writes) as the gateway's usage."""
    cache_read = int(data.get("cache_read_input_tokens") or 0)
    prompt = int(data.get("input_tokens") or 0) + cache_read \
        + int(data.get("cache_creation_input_tokens") or 0)
    return Usage(prompt_tokens=prompt, completion_tokens=int(data.get("output_tokens") or 0),
                 cached_tokens=cache_read)


def chat_completion(message: dict[str, Any], created: int) -> dict[str, Any]:
    """A Messages response as an OpenAI ``chat.completion``."""
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "thinking":
            reasoning.append(block.get("thinking", ""))
        elif kind == "tool_use":
            calls.append({"id": block["id"], "type": "function", "function": {
                "name": block["name"], "arguments": orjson.dumps(block.get("input") or {})
                .decode()}})
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls
                             else None, "refusal": None, "annotations": []}
    if calls:
        reply["tool_calls"] = calls
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)  # the de-facto extension (vLLM, DeepSeek)
    choice = {"index": 0, "message": reply, "logprobs": None,
              "finish_reason": FINISH_REASONS.get(message.get("stop_reason") or "", "stop")}
    if message.get("stop_sequence"):
        choice["stop_reason"] = message["stop_sequence"]  # which one matched, as vLLM says it
    return {"id": message.get("id") or "msg", "object": "chat.completion", "created": created,
            "model": message.get("model") or "", "choices": [choice],
            "usage": usage(message.get("usage") or {}).to_openai()}

