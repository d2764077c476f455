"""Attribute filters of a vector store search (OpenAI's comparison and compound filters).

``{"type": "eq"|"ne"|"gt"|"gte"|"lt"|"lte"|"in"|"nin", "key", "value"}`` and
``{"type": "and"|"or", "filters": [...]}``. A comparison of a missing attribute, or of
values that cannot be ordered (a string and a number), is false.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from llmport.errors import InvalidRequestError

Attributes = dict[str, Any]
Predicate = Callable[[Attributes], bool]
ORDERED = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
MAX_DEPTH = 8


def compile_filter(spec: Any, depth: int = 0) -> Predicate:
    """A predicate over a file's attributes; 400 for a malformed filter."""
    if not isinstance(spec, dict) or depth > MAX_DEPTH:
        raise _invalid("a filter must be an object (nested at most 8 deep)")
    kind = spec.get("type")
    if kind in ("and", "or"):
        parts = spec.get("filters")
        if not isinstance(parts, list) or not parts:
            raise _invalid(f"an '{kind}' filter needs a non-empty 'filters' list")
        predicates = [compile_filter(part, depth + 1) for part in parts]
        join = all if kind == "and" else any
        return lambda attributes: join(p(attributes) for p in predicates)
    key, value = spec.get("key"), spec.get("value")
    if not isinstance(key, str):
        raise _invalid("a comparison filter needs a string 'key'")
    if kind in ("in", "nin"):
        if not isinstance(value, list):
            raise _invalid(f"an '{kind}' filter needs a list 'value'")
        members = list(value)
        inside = kind == "in"
        return lambda attributes: key in attributes and (attributes[key] in members) == inside
    if not isinstance(value, str | int | float | bool):
        raise _invalid("a comparison filter's 'value' must be a string, number or boolean")
    if kind == "eq":
        return lambda attributes: key in attributes and attributes[key] == value
    if kind == "ne":
        return lambda attributes: key in attributes and attributes[key] != value
    compare = ORDERED.get(str(kind))
    if compare is None:
        raise _invalid(f"unknown filter type {kind!r}")

    def ordered(attributes: Attributes) -> bool:
        found = attributes.get(key)
        if found is None or isinstance(found, bool) != isinstance(value, bool) \
                or isinstance(found, str) != isinstance(value, str):
            return False
        return bool(compare(found, value))

    return ordered


def _invalid(message: str) -> InvalidRequestError:
    return InvalidRequestError(f"filters: {message}.", param="filters", code="invalid_filter")
