"""Validate bodies and stream chunks against the official OpenAI OpenAPI schemas.

The schemas come from ``tests/spec/openai-subset.json`` (extracted by
``scripts/extract_openapi_subset.py`` from the official document). OpenAPI's
``nullable: true`` is turned into JSON Schema's ``null`` type so that a
standard Draft 2020-12 validator can check them.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC = Path(__file__).resolve().parent.parent / "spec" / "openai-subset.json"


def _nullable(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _nullable(v) for k, v in node.items()}
        if node.pop("nullable", False):
            node = {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


@cache
def _document() -> dict[str, Any]:
    return _nullable(json.loads(SPEC.read_text()))


@cache
def validator(schema_name: str) -> Draft202012Validator:
    document = _document()
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry = Registry().with_resource("urn:openai", resource)
    schema = {"$ref": f"urn:openai#/components/schemas/{schema_name}"}
    return Draft202012Validator(schema, registry=registry)


def check(instance: Any, schema_name: str) -> None:
    """Raise AssertionError listing every violation of ``schema_name``."""
    errors = sorted(validator(schema_name).iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        detail = "\n".join(f"  at {'/'.join(map(str, e.path)) or '<root>'}: {e.message[:300]}"
                           for e in errors)
        raise AssertionError(f"not a valid {schema_name}:\n{detail}")
