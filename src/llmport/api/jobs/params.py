"""Checks of the parameters the files, batches and vector store routes share."""

from __future__ import annotations

from typing import Any

from llmport.errors import InvalidRequestError


def unknown_fields(body: dict[str, Any], known: set[str]) -> None:
    """400 for a field this route does not implement (never silently ignored)."""
    unknown = sorted(body.keys() - known)
    if unknown:
        raise InvalidRequestError(f"Unsupported parameter: {unknown[0]}.", param=unknown[0],
                                  code="unsupported_parameter")


def checked_metadata(metadata: Any) -> dict[str, str] | None:
    """OpenAI's metadata: at most 16 string pairs, keys up to 64 characters, values 512."""
    if metadata is None:
        return None
    if not (isinstance(metadata, dict) and len(metadata) <= 16 and all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
            for k, v in metadata.items())):
        raise InvalidRequestError("metadata must be at most 16 string pairs (keys up to 64 "
                                  "characters, values up to 512).", param="metadata")
    return metadata
