"""Responses API → OpenAI chat: a ``/v1/responses`` request as the gateway's chat form.

``chat_messages`` turns a request's ``input`` (a string, or a list of message,
``function_call`` and ``function_call_output`` items) into chat messages; ``chat_request``
adds the instructions (never carried over from a previous response, as OpenAI's API
does), the earlier turns of a stored conversation, tools, the text format and sampling.
What chat cannot carry is refused by name (``validation.py``), never dropped silently;
``reasoning`` items sent back from an earlier output are skipped (only their own API reads
them).
"""

from __future__ import annotations

from typing import Any

from llmport.errors import InvalidRequestError

ROLES = frozenset({"user", "assistant", "system", "developer"})


def chat_request(body: dict[str, Any], history: list[dict[str, Any]],
                 new_messages: list[dict[str, Any]],
                 context: dict[str, Any] | None = None) -> dict[str, Any]:
    """The chat request of a validated Responses request, after ``history`` (the chat
    messages of the conversation so far; no system message of an earlier turn), with
    ``context`` (a system message: what a file search found) just before the turn."""
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    messages += history
    if context is not None:
        messages.append(context)
    messages += new_messages
    out: dict[str, Any] = {"model": body["model"], "messages": messages}
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    if body.get("max_output_tokens") is not None:  # max_tokens: refused by reasoning models
        out["max_completion_tokens"] = body["max_output_tokens"]
    for key in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if body.get(key) is not None:
            out[key] = body[key]
    effort = (body.get("reasoning") or {}).get("effort")
    if effort is not None:
        out["reasoning_effort"] = effort
    functions = [tool for tool in body.get("tools") or () if tool.get("type") == "function"]
    if functions:  # a file_search tool is the gateway's, run before the model answers
        out["tools"] = [{"type": "function", "function": {
            k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}}
            for tool in functions]
        choice = body.get("tool_choice")
        if isinstance(choice, str):
            out["tool_choice"] = choice
        elif isinstance(choice, dict) and choice.get("type") == "function":
            out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    text_format = (body.get("text") or {}).get("format") or {}
    if text_format.get("type") == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif text_format.get("type") == "json_schema":
        out["response_format"] = {"type": "json_schema", "json_schema": {
            k: text_format[k] for k in ("name", "schema", "strict", "description")
            if k in text_format}}
    return out


def chat_messages(input_value: str | list[Any], param: str = "input") -> list[dict[str, Any]]:
    """A request's ``input`` (or a conversation's items, ``param`` naming them in errors)
    as chat messages; consecutive function calls (and the assistant text before them)
    become one assistant message with ``tool_calls``."""
    if isinstance(input_value, str):
        return [{"role": "user", "content": input_value}]
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(input_value):
        where = f"{param}.{index}"
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ROLES:
                raise InvalidRequestError(f"{where}.role must be one of user, assistant, "
                                          "system, developer.", param=f"{where}.role")
            messages.append({"role": "system" if role == "developer" else role,
                             "content": _content(item.get("content"), f"{where}.content")})
        elif kind == "function_call":
            call = {"id": _text(item, "call_id", where), "type": "function", "function": {
                "name": _text(item, "name", where),
                "arguments": _text(item, "arguments", where)}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": _text(item, "call_id", where),
                             "content": output if isinstance(output, str)
                             else _plain_text(output, f"{where}.output")})
        elif kind not in ("reasoning", "file_search_call"):  # the gateway's own, for its turn
            raise InvalidRequestError(f"{where}: items of type {kind!r} are not supported "
                                      "(message, function_call, function_call_output are).",
                                      param=f"{where}.type", code="unsupported_item")
    return messages


def _content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where} must be a string or a list of parts.", param=where)
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": _text(part, "text", f"{where}.{index}")})
        elif kind == "refusal":
            parts.append({"type": "text", "text": _text(part, "refusal", f"{where}.{index}")})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image = {"url": part["image_url"]}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise InvalidRequestError(f"{where}.{index}: {kind!r} parts are not supported "
                                      "(input_text, output_text and input_image with an "
                                      "image_url are).", param=f"{where}.{index}",
                                      code="unsupported_content")
    if all(p["type"] == "text" for p in parts):  # plain text: what every upstream reads
        return "".join(p["text"] for p in parts)
    return parts


def _plain_text(value: Any, where: str) -> str:
    content = _content(value, where)
    if isinstance(content, str):
        return content
    raise InvalidRequestError(f"{where} must be text.", param=where)


def _text(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise InvalidRequestError(f"{where}.{key} must be a string.", param=f"{where}.{key}")
    return value
