"""Exact-shape checks of Messages API payloads against the official ``anthropic`` SDK's types.

Requests are checked against the SDK's ``TypedDict`` params (every key known,
every required key present, literals and nested blocks matched); responses
and stream events against its pydantic models, with no field the SDK does not
know. An empty result means the payload has exactly the API's shape.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from typing import Any, Literal, NotRequired, Required, Union, get_args, get_origin

import anthropic.types as t
from anthropic import BaseModel
from anthropic.types import message_count_tokens_params, message_create_params
from pydantic import TypeAdapter
from typing_extensions import (  # the SDK's TypedDicts are typing_extensions ones
    get_type_hints,
    is_typeddict,
)

# Sampling parameters the Messages API reference documents but this SDK's params omit.
SAMPLING = {"temperature": float, "top_p": float, "top_k": int}
SEQUENCES = (list, collections.abc.Iterable, collections.abc.Sequence, typing.Iterable)


def request_problems(body: Any, *, count: bool = False) -> list[str]:
    """What in ``body`` is not a valid Messages request (or count_tokens request)."""
    params = (message_count_tokens_params.MessageCountTokensParams if count
              else message_create_params.MessageCreateParamsNonStreaming)
    problems: list[str] = []
    if isinstance(body, dict):
        for key, kind in SAMPLING.items():
            if key in body and not count:
                _check(body[key], kind, key, problems)
        body = {k: v for k, v in body.items()
                if not (k == "stream" and v is True) and (count or k not in SAMPLING)}
    _check(body, params, "", problems)
    return problems


def _check(value: Any, kind: Any, path: str, problems: list[str]) -> bool:
    """Whether ``value`` matches ``kind``; the first mismatch found is appended to ``problems``."""
    origin = get_origin(kind)
    if kind is Any or kind is object:
        return True
    if origin is typing.Annotated:
        return _check(value, get_args(kind)[0], path, problems)
    if origin in (Union, types.UnionType):
        return _union(value, get_args(kind), path, problems)
    if origin is Literal:
        return _expect(value in get_args(kind), f"{path}: {value!r} not in {get_args(kind)}",
                       problems)
    if is_typeddict(kind):
        return _typed_dict(value, kind, path, problems)
    if origin is dict or kind is dict:
        return _expect(isinstance(value, dict), f"{path}: expected an object", problems)
    if origin in SEQUENCES or (isinstance(origin, type) and issubclass(origin, SEQUENCES)):
        if not _expect(isinstance(value, list), f"{path}: expected a list", problems):
            return False
        item = (get_args(kind) or (Any,))[0]
        return all(_check(v, item, f"{path}.{i}", problems) for i, v in enumerate(value))
    if kind is type(None):
        return _expect(value is None, f"{path}: expected null", problems)
    if kind in (str, bool):
        return _expect(isinstance(value, kind), f"{path}: expected {kind.__name__}", problems)
    if kind in (int, float):
        return _expect(isinstance(value, int | float) and not isinstance(value, bool)
                       and (kind is float or isinstance(value, int)),
                       f"{path}: expected {kind.__name__}", problems)
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        # Response models are accepted by the SDK as a convenience (passing an answer back);
        # on the wire the block must match its TypedDict param.
        return _expect(False, f"{path}: not a {kind.__name__} param", problems)
    if getattr(kind, "__name__", "") == "SequenceNotStr":
        item = get_args(kind)[0] if get_args(kind) else Any
        return _check(value, list[item], path, problems)  # type: ignore[valid-type]
    return True  # file inputs and other SDK conveniences the wire never carries


def _union(value: Any, options: tuple[Any, ...], path: str, problems: list[str]) -> bool:
    attempts = []
    for option in options:
        attempt: list[str] = []
        if _check(value, option, path, attempt):
            return True
        attempts.append(attempt or [f"{path}: matches none of the allowed shapes"])
    # Report the option that got furthest into the value: its problem is the real one.
    problems.extend(max(attempts, key=lambda a: a[0].split(":")[0].count(".")))
    return False


def _typed_dict(value: Any, kind: Any, path: str, problems: list[str]) -> bool:
    if not _expect(isinstance(value, dict), f"{path}: expected an object", problems):
        return False
    hints = _fields(kind)
    unknown = sorted(set(value) - set(hints))
    # The SDK's modules use postponed annotations, so ``__required_keys__`` cannot see
    # ``Required[...]``; it is read from the resolved hints instead.
    required = {k for k, v in get_type_hints(kind, include_extras=True).items()
                if get_origin(v) is Required}
    missing = sorted(required - set(value))
    if not _expect(not unknown and not missing,
                   f"{path}: unknown keys {unknown}, missing keys {missing}", problems):
        return False
    return all(_check(v, hints[k], f"{path}.{k}".lstrip("."), problems)
               for k, v in value.items())


def _fields(kind: Any) -> dict[str, Any]:
    hints = {}
    for key, hint in get_type_hints(kind, include_extras=True).items():
        while get_origin(hint) in (Required, NotRequired, typing.Annotated):
            hint = get_args(hint)[0]
        hints[key] = hint
    return hints


def _expect(condition: bool, problem: str, problems: list[str]) -> bool:
    if not condition:
        problems.append(problem)
    return condition


# -- responses and stream events ---------------------------------------------------------------

_EVENT = TypeAdapter(t.RawMessageStreamEvent)


def message_problems(data: Any) -> list[str]:
    """What in ``data`` is not a Messages ``message`` with exactly the SDK's fields."""
    return _extras(t.Message.model_validate(data), "message")


def event_problems(data: Any) -> list[str]:
    """Likewise for one stream event (``ping`` and ``error`` included)."""
    if data.get("type") == "ping":
        return [] if data == {"type": "ping"} else [f"ping: {data}"]
    return _extras(_EVENT.validate_python(data), data.get("type", "event"))


def _extras(model: Any, path: str) -> list[str]:
    if isinstance(model, list):
        return [p for i, item in enumerate(model) for p in _extras(item, f"{path}.{i}")]
    if not isinstance(model, BaseModel):
        return []
    problems = [f"{path}: unknown field {k!r}" for k in (model.model_extra or {})]
    for name in type(model).model_fields:
        problems += _extras(getattr(model, name), f"{path}.{name}")
    return problems
