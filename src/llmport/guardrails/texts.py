"""The pieces of text in a request and in an answer (OpenAI wire form), where each lives.

Requests: chat messages' content (a string, or its text parts), completions' ``prompt`` and
embeddings' ``input`` (strings, or lists of them; token ids are not text). Answers: each
choice's message content (chat) or text (completions). Tool definitions, tool-call
arguments and images are not read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from llmport.types import Endpoint


@dataclass(slots=True)
class Text:
    """A string at ``holder[key]``; ``param`` names it as an error's ``param`` does."""

    param: str
    role: str | None  # the message's role (chat), else None
    holder: Any
    key: Any

    @property
    def value(self) -> str:
        value: str = self.holder[self.key]
        return value

    def replace(self, value: str) -> None:
        self.holder[self.key] = value


def request_texts(endpoint: Endpoint, body: dict[str, Any]) -> Iterator[Text]:
    if endpoint is Endpoint.CHAT:
        for index, message in enumerate(body.get("messages") or ()):
            if not isinstance(message, dict):
                continue
            role = message.get("role")
            role = role if isinstance(role, str) else None
            content = message.get("content")
            if isinstance(content, str):
                yield Text(f"messages[{index}].content", role, message, "content")
            elif isinstance(content, list):
                for number, part in enumerate(content):
                    if isinstance(part, dict) and part.get("type") == "text" \
                            and isinstance(part.get("text"), str):
                        yield Text(f"messages[{index}].content[{number}].text", role, part,
                                   "text")
        return
    name = "prompt" if endpoint is Endpoint.COMPLETIONS else "input"
    value = body.get(name)
    if isinstance(value, str):
        yield Text(name, None, body, name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, str):
                yield Text(f"{name}[{index}]", None, value, index)


def answer_texts(data: dict[str, Any]) -> Iterator[tuple[dict[str, Any], Text]]:
    """Each choice that has text, with its text."""
    for choice in data.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            yield choice, Text("content", "assistant", message, "content")
        elif isinstance(choice.get("text"), str):
            yield choice, Text("text", None, choice, "text")
