"""Domain types shared by the API layer, the pipeline and the providers.

The request lingua franca is the OpenAI wire form (a parsed JSON ``dict``): it
is what most upstreams speak, so a pass-through costs nothing, and every other
dialect (Anthropic Messages, local models) translates to and from it once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson


class Endpoint(StrEnum):
    CHAT = "chat"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    estimated: bool = False  # the upstream reported none; counted by the gateway

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_openai(cls, usage: Any) -> Usage | None:
        """Read an OpenAI ``usage`` object; ``None`` when there is none."""
        if not isinstance(usage, dict):
            return None
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else 0
        return cls(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int(cached or 0),
        )

    def to_openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }


class Chunk:
    """One streamed event in OpenAI chunk form.

    ``raw`` holds the upstream's exact SSE bytes (``data: …\\n\\n``) while
    ``data`` is unchanged, so a pass-through relays bytes without
    re-serialising; whoever changes ``data`` sets ``raw`` to ``None``.
    """

    __slots__ = ("data", "raw")

    def __init__(self, data: dict[str, Any], raw: bytes | None = None) -> None:
        self.data = data
        self.raw = raw

    def sse(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return b"data: " + orjson.dumps(self.data) + b"\n\n"

    @property
    def usage(self) -> Usage | None:
        return Usage.from_openai(self.data.get("usage"))

    @property
    def has_output(self) -> bool:
        """True once a chunk carries something the client must not see twice."""
        for choice in self.data.get("choices") or ():
            delta = choice.get("delta")
            if delta is None:  # legacy completions chunk
                if choice.get("text"):
                    return True
            elif delta.get("content") or delta.get("tool_calls") or delta.get("refusal") \
                    or delta.get("function_call"):
                return True
            if choice.get("finish_reason"):
                return True
        return False


@dataclass(slots=True)
class JSONResult:
    """A complete (non-streamed) response in OpenAI wire form."""

    data: dict[str, Any]
    raw: bytes | None = None
    status: int = 200

    def body(self) -> bytes:
        return self.raw if self.raw is not None else orjson.dumps(self.data)

    @property
    def usage(self) -> Usage | None:
        return Usage.from_openai(self.data.get("usage"))


@dataclass(slots=True)
class StreamResult:
    """A streamed response: chunks in OpenAI form, produced lazily.

    Policies that must see output wrap ``chunks`` (keeping ``close``); they never
    buffer it. Whoever consumes it calls ``aclose()`` at the end, read or not:
    that returns the upstream connection and the deployment's slot.
    """

    chunks: AsyncIterator[Chunk]
    close: Callable[[], Awaitable[None]] | None = None

    async def aclose(self) -> None:
        await self.chunks.aclose()  # type: ignore[attr-defined]
        if self.close is not None:
            await self.close()


Result = JSONResult | StreamResult


@dataclass(slots=True, frozen=True)
class Quota:
    """The limits and budget of one tenant level (a key, user, team or org); None = unlimited.

    ``scope`` names the level in counter keys (``key:key_3f…``); ``column`` and
    ``entity_id`` find its spend in the spend log (``key_id``, ``key_3f…``).
    """

    scope: str
    column: str
    entity_id: str
    rpm: int | None = None
    tpm: int | None = None
    parallel: int | None = None
    max_budget: float | None = None
    soft_budget: float | None = None
    budget_period: str = "total"  # daily | weekly | monthly | total
    budget_reset_at: float | None = None  # epoch seconds; spend before it does not count

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.rpm, self.tpm, self.parallel, self.max_budget,
                                           self.soft_budget))


@dataclass(slots=True, frozen=True, eq=False)
class Principal:
    """Who is calling: resolved once per request by the auth policy (cached across requests)."""

    id: str
    kind: str = "key"  # "master" | "anonymous" | "key" | "jwt"
    name: str | None = None
    org_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    allowed_models: frozenset[str] | None = None  # None = every model
    is_admin: bool = False
    priority: int = 0  # admission priority of this caller's requests (higher first)
    key_id: str | None = None
    quotas: tuple[Quota, ...] = ()  # key, user, team, org: each level that has a limit
    model_quotas: tuple[tuple[str, Quota], ...] = ()  # per model, for this key
    expires_at: float | None = None  # epoch seconds
    signing_secret: str | None = None  # requests must be HMAC-signed with it
    scopes: frozenset[str] = frozenset()
    # A key's rotation chain's first key: what the key owns is kept under it (files,
    # batches, vector stores…), so a rotated key keeps it. None: ``id`` owns.
    owner_id: str | None = None


ANONYMOUS = Principal(id="anonymous", kind="anonymous")
