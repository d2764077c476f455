"""OpenAI chat → Responses API: a chat completion as a ``response`` object.

``response_frame`` is what a response echoes of its request (model, instructions, tools,
sampling…); ``finished`` completes it from a chat result: the answer's text as a
``message`` item, each tool call as a ``function_call`` item, the usage, and the status
(``incomplete`` when the answer was cut by the token limit or a content filter). Streams:
``chat_to_responses_stream``.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from llmport.types import Usage

INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def response_frame(body: dict[str, Any], response_id: str, created_at: int) -> dict[str, Any]:
    """The response before any output: ``in_progress``, with the request's settings."""
    text_format = (body.get("text") or {}).get("format") or {"type": "text"}
    tools = [{"type": "function", "name": t["name"], "description": t.get("description"),
              "parameters": t.get("parameters"), "strict": t.get("strict", True)}
             if t.get("type") == "function" else _search_tool(t)
             for t in body.get("tools") or ()]
    frame = {
        "id": response_id, "object": "response", "created_at": created_at,
        "status": "in_progress", "completed_at": None, "error": None,
        "incomplete_details": None, "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"), "model": body["model"],
        "output": [], "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
        "text": {"format": text_format}, "tool_choice": body.get("tool_choice", "auto"),
        "tools": tools, "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"), "metadata": body.get("metadata") or {}}
    if body.get("user") is not None:
        frame["user"] = body["user"]
    if isinstance(body.get("conversation"), dict):
        frame["conversation"] = {"id": body["conversation"]["id"]}
    return frame


def _search_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A ``file_search`` tool as a response echoes it."""
    ranking = tool.get("ranking_options") or {}
    return {"type": "file_search", "vector_store_ids": tool["vector_store_ids"],
            "max_num_results": tool.get("max_num_results", 10), "filters": tool.get("filters"),
            "ranking_options": {"ranker": ranking.get("ranker", "auto"),
                                "score_threshold": ranking.get("score_threshold", 0.0)}}


def message_item(item_id: str, text: str, status: str,
                 annotations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status,
            "content": [text_part(text, annotations)] if status != "in_progress" else []}


def text_part(text: str, annotations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": annotations or [],
            "logprobs": []}


def call_item(item_id: str, call_id: str, name: str, arguments: str,
              status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id,
            "name": name, "arguments": arguments}


def response_usage(usage: Usage | None) -> dict[str, Any]:
    usage = usage or Usage()
    return {"input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens,
                                     "cache_write_tokens": 0},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.total_tokens}


def finish(frame: dict[str, Any], output: list[dict[str, Any]], finish_reason: str | None,
           usage: Usage | None) -> dict[str, Any]:
    """The frame, done: its output, usage and final status."""
    reason = INCOMPLETE.get(finish_reason or "")
    return {**frame, "output": output, "usage": response_usage(usage),
            "status": "incomplete" if reason else "completed",
            "incomplete_details": {"reason": reason} if reason else None,
            "completed_at": int(time.time())}


def finished(frame: dict[str, Any], result: dict[str, Any]) -> tuple[dict[str, Any],
                                                                     dict[str, Any]]:
    """The complete response for a chat result, and the assistant's chat message (what a
    later turn's history holds)."""
    choice = (result.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    finish_reason = choice.get("finish_reason")
    text = message.get("content") or message.get("refusal") or ""
    output: list[dict[str, Any]] = []
    if text:
        output.append(message_item(new_id("msg"), text,
                                   "incomplete" if finish_reason in INCOMPLETE else "completed"))
    calls = [(call.get("id") or new_id("call"), (call.get("function") or {}).get("name", ""),
              (call.get("function") or {}).get("arguments") or "")
             for call in message.get("tool_calls") or ()]
    output += [call_item(new_id("fc"), call_id, name, arguments, "completed")
               for call_id, name, arguments in calls]
    response = finish(frame, output, finish_reason, Usage.from_openai(result.get("usage")))
    return response, assistant_message(text, calls)


def assistant_message(text: str, calls: list[tuple[str, str, str]]) -> dict[str, Any]:
    """The chat message of an answer: its text and its tool calls (id, name, arguments)."""
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = [{"id": call_id, "type": "function",
                                  "function": {"name": name, "arguments": arguments}}
                                 for call_id, name, arguments in calls]
    return message
