"""Shared by providers that compute embeddings themselves: input shapes and output encoding."""

from __future__ import annotations

import base64
import struct
from typing import Any

from llmport.errors import InvalidRequestError


def embedding_inputs(value: Any) -> list[str]:
    """The texts of an embeddings ``input``: a string, a list of strings, or token ids."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return value
        if all(isinstance(v, int) for v in value):
            return [" ".join(map(str, value))]
        if all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
            return [" ".join(map(str, v)) for v in value]
    raise InvalidRequestError(
        "`input` must be a non-empty string, array of strings, or array of token arrays.",
        param="input")


def encode_embedding(vector: list[float], encoding_format: str) -> list[float] | str:
    """A vector as OpenAI sends it: a float list, or base64 of little-endian float32."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector
