"""Splitting a document into overlapping chunks of about ``max_tokens`` tokens.

Tokens are counted as the gateway estimates them everywhere (``policies/estimate.py``:
four characters a token), over whole words: a chunk never splits a word, and the next
chunk starts ``overlap`` tokens before the end of the last. The same text and settings
always give the same chunks.
"""

from __future__ import annotations

import math
import re

from llmport.policies.estimate import CHARS_PER_TOKEN

AUTO = (800, 400)  # OpenAI's "auto" strategy: max_chunk_size_tokens, chunk_overlap_tokens
_WORD = re.compile(r"\S+\s*")


def chunk(text: str, max_tokens: int, overlap: int) -> list[str]:
    words = _WORD.findall(text)
    if not words:
        return []
    costs = [math.ceil(len(w.rstrip()) / CHARS_PER_TOKEN) or 1 for w in words]
    chunks: list[str] = []
    start = 0
    while start < len(words):
        end, used = start, 0
        while end < len(words) and (used + costs[end] <= max_tokens or end == start):
            used += costs[end]
            end += 1
        chunks.append("".join(words[start:end]).strip())
        if end == len(words):
            break
        # Step back over ``overlap`` tokens of this chunk, but always move forward.
        back, kept = end, 0
        while back > start + 1 and kept + costs[back - 1] <= overlap:
            back -= 1
            kept += costs[back]
        start = back
    return chunks
