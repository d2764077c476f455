"""The spend journal's segment files: what one is, its lock, and reading its records back.

See ``journal.py`` for how segments are written, owned across processes and committed.
"""

from __future__ import annotations

import fcntl
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

SEGMENT_NAME = re.compile(r"spend-\d+-\d+\.jsonl")


@dataclass(slots=True, eq=False)
class Segment:
    path: Path
    fd: int
    records: int = 0  # lines in the file (an adopted segment's are known once it was read)
    committed: int = 0  # records at the head of the file already in the sink
    size: int = 0  # bytes written (the active segment's)
    torn: bool = False  # a short write left a partial line that could not be cut off
    warned: bool = False


def lock(fd: int) -> bool:
    """Take the segment's lock without waiting; False if it is held or the file was deleted."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return os.fstat(fd).st_nlink > 0


def read_records(fd: int) -> tuple[list[dict[str, Any]], int]:
    """The segment's records, and how many lines could not be read (a torn last line)."""
    size = os.fstat(fd).st_size
    chunks: list[bytes] = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    records: list[dict[str, Any]] = []
    unreadable = 0
    for line in b"".join(chunks).split(b"\n"):
        if not line:
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            unreadable += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            unreadable += 1
    return records, unreadable
