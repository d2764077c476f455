"""Checks of a ``/v1/responses`` request: what chat can carry, and nothing silently dropped.

A parameter this gateway cannot honour is refused with 400 and its name (hosted tools other
than ``file_search``, background mode, reusable prompts…); ``stream_options``,
``service_tier``, ``safety_identifier``, ``prompt_cache_key``, ``reasoning.summary`` and
``include`` values other than ``file_search_call.results`` are accepted and have no effect
(they ask for extras no chat upstream returns, or only tune OpenAI's own service).
"""

from __future__ import annotations

from typing import Any

from llmport.api.jobs.params import checked_metadata
from llmport.api.openai.validation import BOOL, INT, NUM, STR, check_fields, require_model
from llmport.api.responses.file_search import SearchTool, checked_tool
from llmport.errors import InvalidRequestError

KNOWN = frozenset({
    "model", "input", "instructions", "stream", "store", "previous_response_id",
    "max_output_tokens", "temperature", "top_p", "tools", "tool_choice", "parallel_tool_calls",
    "text", "reasoning", "metadata", "user", "truncation", "include", "stream_options",
    "service_tier", "safety_identifier", "prompt_cache_key", "background", "conversation"})
# field -> (accepted types, minimum, maximum), checked as chat's fields are
FIELDS = {
    "instructions": (STR, None, None), "previous_response_id": (STR, None, None),
    "user": (STR, None, None), "stream": (BOOL, None, None), "store": (BOOL, None, None),
    "parallel_tool_calls": (BOOL, None, None), "temperature": (NUM, 0, 2),
    "top_p": (NUM, 0, 1), "max_output_tokens": (INT, 1, None)}
FORMATS = frozenset({"text", "json_object", "json_schema"})
CHOICES = frozenset({"auto", "none", "required"})


def validate_response(body: dict[str, Any]) -> tuple[str, bool, SearchTool | None]:
    """(model, stream, its file_search tool if any) of a valid request; 400 naming the
    first problem."""
    unknown = sorted(body.keys() - KNOWN)
    if unknown:
        raise _invalid(f"Unsupported parameter: {unknown[0]}.", unknown[0],
                       "unsupported_parameter")
    model = require_model(body)
    value = body.get("input")
    if not (isinstance(value, str) and value) and not (isinstance(value, list) and value and all(
            isinstance(item, dict) for item in value)):
        raise _invalid("input must be a non-empty string or list of items.", "input")
    conversation = body.get("conversation")
    if conversation is not None:
        if not (isinstance(conversation, str) or (isinstance(conversation, dict)
                                                  and isinstance(conversation.get("id"), str))):
            raise _invalid("conversation must be a conversation id or {\"id\": …}.",
                           "conversation")
        if body.get("previous_response_id"):
            raise _invalid("conversation and previous_response_id cannot be used together.",
                           "conversation")
    if body.get("background"):
        raise _invalid("background mode is not supported.", "background",
                       "unsupported_parameter")
    check_fields(body, FIELDS)
    if body.get("truncation") not in (None, "disabled", "auto"):
        raise _invalid("truncation must be 'disabled' or 'auto'.", "truncation")
    checked_metadata(body.get("metadata"))
    search = _tools(body.get("tools"))
    _tool_choice(body.get("tool_choice"))
    _text(body.get("text"))
    reasoning = body.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, dict):
        raise _invalid("reasoning must be an object.", "reasoning")
    return model, bool(body.get("stream")), search


def _tools(tools: Any) -> SearchTool | None:
    """The request's file_search tool, if it has one, once every tool is checked."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise _invalid("tools must be a list.", "tools")
    search = None
    for index, tool in enumerate(tools):
        where = f"tools.{index}"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "file_search":
            if search is not None:
                raise _invalid("Give at most one file_search tool.", where)
            search = checked_tool(tool, where)
            continue
        if kind != "function":
            raise _invalid(f"{where}: only function and file_search tools are supported "
                           f"(not {kind!r}).", where, "unsupported_tool")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _invalid(f"{where}.name is required.", f"{where}.name")
        if tool.get("parameters") is not None and not isinstance(tool["parameters"], dict):
            raise _invalid(f"{where}.parameters must be a JSON schema object.",
                           f"{where}.parameters")
    return search


def _tool_choice(choice: Any) -> None:
    if choice is None or (isinstance(choice, str) and choice in CHOICES):
        return
    if isinstance(choice, dict) and choice.get("type") == "function" \
            and isinstance(choice.get("name"), str):
        return
    if choice == {"type": "file_search"}:  # the gateway searches every turn anyway
        return
    raise _invalid("tool_choice must be auto, none, required, {\"type\": \"function\", "
                   "\"name\": …} or {\"type\": \"file_search\"}.", "tool_choice")


def _text(text: Any) -> None:
    if text is None:
        return
    text_format = text.get("format") if isinstance(text, dict) else None
    if text_format is None:
        return
    if not isinstance(text_format, dict) or text_format.get("type") not in FORMATS:
        raise _invalid("text.format.type must be text, json_object or json_schema.",
                       "text.format")
    if text_format["type"] == "json_schema" and not (
            isinstance(text_format.get("name"), str)
            and isinstance(text_format.get("schema"), dict)):
        raise _invalid("a json_schema format needs a name and a schema.", "text.format")


def _invalid(message: str, param: str, code: str | None = None) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)
