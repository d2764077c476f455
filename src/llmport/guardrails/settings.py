"""The ``guardrails:`` config section. Everything is off by default."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Action = Literal["off", "redact", "block"]
Entity = Literal["email", "phone", "credit_card", "us_ssn", "iban", "ipv4"]
ENTITIES: tuple[Entity, ...] = ("email", "phone", "credit_card", "us_ssn", "iban", "ipv4")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _compiles(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
    return patterns


class PIIConfig(_Section):
    input: Action = Field(default="off", description=(
        "personal data in requests: redact it before it goes upstream, or refuse the request"))
    output: Action = Field(default="off", description=(
        "personal data in answers: redact it, or end the answer (finish_reason content_filter)"))
    entities: list[Entity] = Field(default_factory=lambda: list(ENTITIES))
    patterns: dict[str, str] = Field(default_factory=dict, description=(
        "your own kinds of personal data: NAME → regular expression"))

    @field_validator("patterns")
    @classmethod
    def _valid_patterns(cls, patterns: dict[str, str]) -> dict[str, str]:
        for name in patterns:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
                raise ValueError(f"pattern name {name!r}: letters, digits and _ only")
        _compiles(list(patterns.values()))
        return patterns


class InjectionConfig(_Section):
    action: Literal["off", "block"] = Field(default="off", description=(
        "prompt-injection phrases in user and tool messages: refuse the request"))
    phrases: list[str] = Field(default_factory=list, description=(
        "regular expressions (case-insensitive) added to the built-in phrases"))

    @field_validator("phrases")
    @classmethod
    def _valid_phrases(cls, phrases: list[str]) -> list[str]:
        return _compiles(phrases)


class GuardrailsConfig(_Section):
    max_input_chars: int | None = Field(default=None, ge=1, description=(
        "characters of text in a request (all messages, prompts or inputs together)"))
    max_messages: int | None = Field(default=None, ge=1)
    deny_patterns: list[str] = Field(default_factory=list, description=(
        "regular expressions a request's text must not match (refused)"))
    pii: PIIConfig = PIIConfig()
    injection: InjectionConfig = InjectionConfig()
    stream_holdback: int = Field(default=64, ge=0, le=4096, description=(
        "output checks on streams: characters held back until what follows shows whether "
        "they start a match (a match longer than this may be streamed before it is seen)"))

    @field_validator("deny_patterns")
    @classmethod
    def _valid_deny_patterns(cls, patterns: list[str]) -> list[str]:
        return _compiles(patterns)

    @property
    def checks_input(self) -> bool:
        return bool(self.max_input_chars or self.max_messages or self.deny_patterns
                    or self.pii.input != "off" or self.injection.action != "off")

    @property
    def checks_output(self) -> bool:
        return self.pii.output != "off"

    @property
    def enabled(self) -> bool:
        return self.checks_input or self.checks_output
