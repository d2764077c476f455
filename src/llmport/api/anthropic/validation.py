"""Checks of Messages API request bodies, with the Messages API's own style of error.

Errors name the field by its dotted path, as the Messages API does
(``messages.0.content.1.source: Field required``), and render as 400
``invalid_request_error`` in the Messages envelope. Everything the
translation reads is checked here, so the translation itself can trust its
input; unknown fields are ignored, as the API does for most of them.
"""

from __future__ import annotations

from typing import Any

from llmport.errors import InvalidRequestError

ROLES = ("user", "assistant", "system")
USER_BLOCKS = frozenset({"text", "image", "document", "tool_result", "thinking",
                         "redacted_thinking", "search_result"})
ASSISTANT_BLOCKS = frozenset({"text", "tool_use", "thinking", "redacted_thinking"})
TOOL_CHOICES = ("auto", "any", "tool", "none")


def validate_messages(body: dict[str, Any], *, count_only: bool = False) -> tuple[str, bool]:
    """Check a ``POST /v1/messages`` body (or a count_tokens one); return (model, stream)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _error("model", "Field required" if model is None else "Input should be a string")
    if not count_only:
        _integer(body, "max_tokens", low=1, required=True)
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _error("messages", "Field required" if messages is None
                     else "Input should be a valid list")
    if not messages:
        raise _error("messages", "at least one message is required")
    for index, message in enumerate(messages):
        _message(message, f"messages.{index}")
    _system(body.get("system"))
    _number(body, "temperature", 0.0, 1.0)
    _number(body, "top_p", 0.0, 1.0)
    _integer(body, "top_k", low=0)
    stops = body.get("stop_sequences")
    if stops is not None and not (isinstance(stops, list)
                                  and all(isinstance(s, str) for s in stops)):
        raise _error("stop_sequences", "Input should be a valid list of strings")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise _error("stream", "Input should be a valid boolean")
    for key in ("metadata", "thinking"):
        if body.get(key) is not None and not isinstance(body[key], dict):
            raise _error(key, "Input should be a valid dictionary")
    _output_config(body.get("output_config"))
    _tools(body.get("tools"))
    _tool_choice(body.get("tool_choice"))
    return model, bool(stream)


def _message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise _error(where, "Input should be a valid dictionary")
    role = message.get("role")
    if role not in ROLES:
        raise _error(f"{where}.role", "Field required" if role is None
                     else "Input should be 'user' or 'assistant'")
    content = message.get("content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _error(f"{where}.content", "Field required" if content is None
                     else "Input should be a valid string or list of content blocks")
    allowed = {"user": USER_BLOCKS, "assistant": ASSISTANT_BLOCKS,
               "system": frozenset({"text"})}[role]
    for index, block in enumerate(content):
        _block(block, f"{where}.content.{index}", allowed)


def _block(block: Any, where: str, allowed: frozenset[str]) -> None:
    if not isinstance(block, dict):
        raise _error(where, "Input should be a valid dictionary")
    kind = block.get("type")
    if kind is None:
        raise _error(f"{where}.type", "Field required")
    if not isinstance(kind, str) or kind not in allowed:  # (a list or object is unhashable)
        raise _error(f"{where}.type", f"'{kind}' is not a content block allowed here")
    if kind == "text":
        _string(block, "text", where)
    elif kind in ("image", "document"):
        _source(block.get("source"), f"{where}.source", kind)
    elif kind == "tool_use":
        _string(block, "id", where)
        _string(block, "name", where)
        if not isinstance(block.get("input"), dict):
            raise _error(f"{where}.input", "Input should be a valid dictionary")
    elif kind == "tool_result":
        _string(block, "tool_use_id", where)
        content = block.get("content")
        if isinstance(content, list):
            for index, part in enumerate(content):
                _block(part, f"{where}.content.{index}", frozenset({"text", "image"}))
        elif content is not None and not isinstance(content, str):
            raise _error(f"{where}.content", "Input should be a valid string or list")


def _source(source: Any, where: str, kind: str) -> None:
    if not isinstance(source, dict):
        raise _error(where, "Field required" if source is None
                     else "Input should be a valid dictionary")
    shape = source.get("type")
    if shape == "base64":
        _string(source, "media_type", where)
        _string(source, "data", where)
    elif shape == "url":
        _string(source, "url", where)
    elif shape == "text" and kind == "document":
        _string(source, "data", where)
    elif shape is None:
        raise _error(f"{where}.type", "Field required")
    # Other source types (file ids, content blocks) are refused by the translation.


def _system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise _error("system", "Input should be a valid string or list of text blocks")
    for index, block in enumerate(system):
        where = f"system.{index}"
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _error(f"{where}.type", "Input should be 'text'")
        _string(block, "text", where)


def _tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _error("tools", "Input should be a valid list")
    for index, tool in enumerate(tools):
        where = f"tools.{index}"
        if not isinstance(tool, dict):
            raise _error(where, "Input should be a valid dictionary")
        _string(tool, "name", where)
        if tool.get("type") in (None, "custom") and not isinstance(tool.get("input_schema"),
                                                                  dict):
            raise _error(f"{where}.input_schema", "Field required")


def _tool_choice(choice: Any) -> None:
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in TOOL_CHOICES:
        raise _error("tool_choice.type", "Input should be 'auto', 'any', 'tool' or 'none'")
    if choice["type"] == "tool":
        _string(choice, "name", "tool_choice")


def _output_config(config: Any) -> None:
    if config is None:
        return
    if not isinstance(config, dict):
        raise _error("output_config", "Input should be a valid dictionary")
    output = config.get("format")
    if output is None:
        return
    if not isinstance(output, dict):
        raise _error("output_config.format", "Input should be a valid dictionary")
    if output.get("schema") is not None and not isinstance(output["schema"], dict):
        raise _error("output_config.format.schema", "Input should be a valid dictionary")


def _string(holder: dict[str, Any], key: str, where: str) -> None:
    value = holder.get(key)
    if not isinstance(value, str):
        raise _error(f"{where}.{key}", "Field required" if value is None
                     else "Input should be a valid string")


def _integer(body: dict[str, Any], key: str, *, low: int, required: bool = False) -> None:
    value = body.get(key)
    if value is None:
        if required:
            raise _error(key, "Field required")
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise _error(key, "Input should be a valid integer")
    if value < low:
        raise _error(key, f"Input should be greater than or equal to {low}")


def _number(body: dict[str, Any], key: str, low: float, high: float) -> None:
    value = body.get(key)
    if value is None:
        return
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _error(key, "Input should be a valid number")
    if not low <= value <= high:
        raise _error(key, f"Input should be between {low:g} and {high:g}")


def _error(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(f"{param}: {message}", param=param, code="invalid_request")
