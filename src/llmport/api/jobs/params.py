"""Checks of the parameters the files, batches and vector store routes share."""

from __future__ import annotations

from typing import Any

from llmport.db.rag import MIN_EXPIRY_DAYS
from llmport.errors import InvalidRequestError


def unknown_fields(body: dict[str, Any], known: set[str]) -> None:
    """400 for a field this route does not implement (never silently ignored)."""
    unknown = sorted(body.keys() - known)
    if unknown:
        raise InvalidRequestError(f"Unsupported parameter: {unknown[0]}.", param=unknown[0],
                                  code="unsupported_parameter")


def list_page(data: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    """A page of a cursor-paged list, as OpenAI's list routes answer."""
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": more}


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


EXPIRY_SECONDS = (3600, 30 * 86400)  # an hour to 30 days, as OpenAI allows files
STORE_EXPIRY_DAYS = (MIN_EXPIRY_DAYS, 365)  # the purge relies on the least (db/rag.py)


def checked_expiry(value: Any, param: str) -> int | None:
    """The seconds of a file's ``{"anchor": "created_at", "seconds": N}`` (None when
    absent)."""
    return checked_after(value, param, "created_at", "seconds", EXPIRY_SECONDS)


def checked_after(value: Any, param: str, anchor: str, unit: str,
                  bounds: tuple[int, int]) -> int | None:
    """The number of an ``expires_after``-like ``{"anchor": anchor, unit: N}``, N within
    ``bounds`` (None when absent); 400 naming ``param`` otherwise."""
    if value is None:
        return None
    low, high = bounds
    number = value.get(unit) if isinstance(value, dict) else None
    if not (isinstance(value, dict) and value.keys() == {"anchor", unit}
            and value["anchor"] == anchor and isinstance(number, int)
            and not isinstance(number, bool) and low <= number <= high):
        raise InvalidRequestError(f'{param} must be {{"anchor": "{anchor}", "{unit}": '
                                  f"{low}…{high}}}.", param=param)
    return number
