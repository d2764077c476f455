"""A batch's input file: JSON lines of ``{custom_id, method, url, body}``, checked whole.

A file with any malformed line fails its batch before any request is made (as OpenAI's
Batch API does): nothing is spent on half a batch. Each request body is checked later,
as the gateway checks any request; a bad body fails that request only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from llmport.db.jobs import MESSAGES  # Anthropic's Message Batches: lines in Messages form
from llmport.types import Endpoint

T = TypeVar("T")
OPENAI_ENDPOINTS = {"/v1/chat/completions": Endpoint.CHAT,
                    "/v1/completions": Endpoint.COMPLETIONS,
                    "/v1/embeddings": Endpoint.EMBEDDINGS}
ENDPOINTS = {**OPENAI_ENDPOINTS, MESSAGES: Endpoint.CHAT}
MAX_ERRORS = 100  # a file's errors reported, at most (a broken file could have thousands)
OFF_LOOP_BYTES = 1 << 20  # larger files are parsed in a worker thread, off the event loop


async def off_loop(size: int, work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` on ``size`` bytes: in a worker thread when large (parsing 200 MB of
    JSON lines would stall every request for seconds), here at once when small."""
    if size > OFF_LOOP_BYTES:
        return await asyncio.to_thread(work, *args)
    return work(*args)


@dataclass(slots=True, frozen=True)
class Line:
    index: int  # 0-based, in the file's order (blank lines not counted)
    custom_id: str
    body: dict[str, Any]


def batch_error(code: str, message: str, line: int | None = None,
                param: str | None = None) -> dict[str, Any]:
    """One entry of a batch's ``errors.data`` (``line`` is 1-based, as editors count)."""
    return {"code": code, "message": message, "param": param, "line": line}


def json_lines(data: bytes, keep: bool = True
               ) -> tuple[list[tuple[int, Any]], list[dict[str, Any]]]:
    """Each non-blank line's number (1-based) and parsed value; errors for the rest.
    ``keep=False`` only checks (an upload: its parsed lines would take several times the
    file's size) and returns no values."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [], [batch_error("invalid_file_encoding",
                                f"The file is not UTF-8 text (byte {exc.start}).")]
    parsed: list[tuple[int, Any]] = []
    errors: list[dict[str, Any]] = []
    for number, text_line in enumerate(text.splitlines(), start=1):
        if not text_line.strip():
            continue
        try:
            value = orjson.loads(text_line)
            parsed.append((number, value if keep else None))
        except orjson.JSONDecodeError:
            errors.append(batch_error("invalid_json_line",
                                      f"Line {number} is not valid JSON.", number))
    if not parsed and not errors:
        errors.append(batch_error("empty_file", "The file has no requests."))
    return parsed, errors


def parse_input(data: bytes, endpoint: str, max_lines: int
                ) -> tuple[list[Line], list[dict[str, Any]]]:
    """The requests of a batch for ``endpoint``, or the reasons the file cannot run."""
    parsed, errors = json_lines(data)
    lines: list[Line] = []
    seen: set[str] = set()
    if len(parsed) > max_lines:
        errors.append(batch_error("too_many_requests", f"The file has {len(parsed)} requests; "
                                  f"a batch may have at most {max_lines}."))
    for number, value in parsed:
        problem = _line_problem(value, endpoint)
        if problem is None and value["custom_id"] in seen:
            problem = ("duplicate_custom_id", "custom_id",
                       f"custom_id {value['custom_id']!r} is used by an earlier line.")
        if problem is not None:
            code, param, message = problem
            errors.append(batch_error(code, f"Line {number}: {message}", number, param))
            continue
        seen.add(value["custom_id"])
        lines.append(Line(len(lines), value["custom_id"], value["body"]))
    return lines, errors[:MAX_ERRORS]


def _line_problem(value: Any, endpoint: str) -> tuple[str, str | None, str] | None:
    if not isinstance(value, dict):
        return "invalid_request", None, "a request must be a JSON object."
    custom_id = value.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return "missing_custom_id", "custom_id", "custom_id must be a non-empty string."
    if value.get("method") != "POST":
        return "invalid_method", "method", "method must be \"POST\"."
    if value.get("url") != endpoint:
        return ("mismatched_url", "url",
                f"url must be the batch's endpoint, {endpoint!r} (it is {value.get('url')!r}).")
    body = value.get("body")
    if not isinstance(body, dict):
        return "invalid_body", "body", "body must be a JSON object."
    if not isinstance(body.get("model"), str):
        return "missing_model", "body.model", "body.model must be a string."
    if body.get("stream") is True:
        return "stream_not_supported", "body.stream", "a batch request cannot be streamed."
    return None
