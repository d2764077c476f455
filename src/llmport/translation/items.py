"""Responses API items as they are kept and listed (a response's input items, a
conversation's items): every item with an id and a status, message content as parts."""

from __future__ import annotations

from typing import Any

from llmport.translation.chat_to_responses import new_id

PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


def stored_items(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``input`` (a string or items) as kept items; ``reasoning`` items are not kept."""
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": value}]
    items = []
    for given in value:
        item = {"type": "message", **given}
        kind = item["type"]
        if kind == "reasoning":
            continue
        if kind == "message":
            item["content"] = _parts(item.get("role"), item.get("content"))
        items.append({**item, "id": item.get("id") or new_id(PREFIXES.get(kind, "item")),
                      "status": item.get("status") or "completed"})
    return items


def _parts(role: Any, content: Any) -> list[dict[str, Any]]:
    kind = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        content = [{"type": kind, "text": content}]
    parts = []
    for part in content or ():
        if isinstance(part, dict) and part.get("type") == "output_text":
            part = {"annotations": [], "logprobs": [], **part}
        parts.append(part)
    return parts
