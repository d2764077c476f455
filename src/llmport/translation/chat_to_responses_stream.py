"""OpenAI chat stream → Responses API stream events, chunk by chunk.

The events come in the order OpenAI's API sends them: ``response.created`` and
``response.in_progress`` first; then, for a file search the gateway made before the
answer, its ``output_item.added``, ``file_search_call.in_progress``, ``…searching``,
``…completed`` and ``output_item.done``; for the answer's text, ``output_item.added`` (a message),
``content_part.added``, each ``output_text.delta`` (each followed by the annotations it
makes final, ``output_text.annotation.added``: citations of the files a search found),
then the last annotations, ``output_text.done``,
``content_part.done`` and ``output_item.done``; for each tool call, ``output_item.added``
(a function call), each ``function_call_arguments.delta``, then ``…arguments.done`` and
``output_item.done``; last ``response.completed`` (or ``response.incomplete``) with the
whole response and its usage. Every event carries the next ``sequence_number``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from llmport.translation.chat_to_responses import (
    assistant_message,
    call_item,
    finish,
    message_item,
    new_id,
    text_part,
)
from llmport.types import Usage

Event = tuple[str, dict[str, Any]]


class Citing(Protocol):
    """Annotations of a message's text as it grows (``file_search.Citations``)."""

    def start(self) -> None: ...
    def feed(self, piece: str) -> list[dict[str, Any]]: ...
    def rest(self) -> list[dict[str, Any]]: ...


@dataclass(slots=True)
class _Call:
    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)


class ResponseEvents:
    def __init__(self, frame: dict[str, Any], searches: list[dict[str, Any]] | None = None,
                 citing: Citing | None = None) -> None:
        self.frame = frame
        self.searches = searches or []  # file_search_call items done before the answer
        self.citing = citing  # finds the open message's annotations (file citations)
        self.annotations: list[dict[str, Any]] = []  # the open message's, so far
        self.sequence = 0
        self.started = False
        self.output: list[dict[str, Any] | None] = []  # by output index; None while open
        self.text_id: str | None = None  # the message item open now, if any
        self.text_index = 0
        self.text: list[str] = []  # its text so far
        self.all_text: list[str] = []  # every message item's text, for the history
        self.calls: dict[int, _Call] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.response: dict[str, Any] | None = None  # the final response, once closed
        self.message: dict[str, Any] | None = None  # its chat message, for the history

    def _event(self, kind: str, /, **data: Any) -> Event:
        data = {"type": kind, **data, "sequence_number": self.sequence}
        self.sequence += 1
        return kind, data

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        events = self._start()
        usage = chunk.get("usage")
        if usage:
            self.usage = Usage.from_openai(usage)
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("refusal")
            if text:
                events += self._text(text)
            for call in delta.get("tool_calls") or ():
                events += self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _start(self) -> list[Event]:
        if self.started:
            return []
        self.started = True
        events = [self._event("response.created", response=self.frame),
                  self._event("response.in_progress", response=self.frame)]
        for item in self.searches:
            events += self._search_call(item)
        return events

    def _search_call(self, item: dict[str, Any]) -> list[Event]:
        """A file search the gateway made before the model answered, as OpenAI streams one."""
        index = len(self.output)
        self.output.append(item)
        ids = {"item_id": item["id"], "output_index": index}
        return [
            self._event("response.output_item.added", output_index=index,
                        item={**item, "status": "in_progress", "results": None}),
            self._event("response.file_search_call.in_progress", **ids),
            self._event("response.file_search_call.searching", **ids),
            self._event("response.file_search_call.completed", **ids),
            self._event("response.output_item.done", output_index=index, item=item)]

    def _text(self, text: str) -> list[Event]:
        events: list[Event] = []
        if self.text_id is None:
            events += self._close_calls()
            self.text_id, self.text_index = new_id("msg"), len(self.output)
            self.output.append(None)
            events += [
                self._event("response.output_item.added", output_index=self.text_index,
                            item=message_item(self.text_id, "", "in_progress")),
                self._event("response.content_part.added", item_id=self.text_id,
                            output_index=self.text_index, content_index=0,
                            part=text_part(""))]
            if self.citing is not None:
                self.citing.start()
        self.text.append(text)
        self.all_text.append(text)
        events.append(self._event("response.output_text.delta", item_id=self.text_id,
                                  output_index=self.text_index, content_index=0, delta=text,
                                  logprobs=[]))
        if self.citing is not None:
            events += self._annotated(self.citing.feed(text))
        return events

    def _annotated(self, annotations: list[dict[str, Any]]) -> list[Event]:
        """The open message's new annotations, as events."""
        events = []
        for annotation in annotations:
            events.append(self._event(
                "response.output_text.annotation.added", item_id=self.text_id,
                output_index=self.text_index, content_index=0,
                annotation_index=len(self.annotations), annotation=annotation))
            self.annotations.append(annotation)
        return events

    def _call(self, delta: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        position = delta.get("index", 0)
        function = delta.get("function") or {}
        call = self.calls.get(position)
        if call is None:
            events += self._close_text()  # items follow each other, as OpenAI sends them
            call = self.calls[position] = _Call(new_id("fc"), len(self.output),
                                                 delta.get("id") or new_id("call"),
                                                 function.get("name") or "")
            self.output.append(None)
            events.append(self._event("response.output_item.added",
                                      output_index=call.output_index,
                                      item=call_item(call.item_id, call.call_id, call.name, "",
                                                     "in_progress")))
        arguments = function.get("arguments")
        if arguments:
            call.arguments.append(arguments)
            events.append(self._event("response.function_call_arguments.delta",
                                      item_id=call.item_id, output_index=call.output_index,
                                      delta=arguments))
        return events

    def _close_calls(self) -> list[Event]:
        """The done events of the function call items still open."""
        events: list[Event] = []
        for call in self.calls.values():
            if self.output[call.output_index] is None:
                arguments = "".join(call.arguments)
                item = call_item(call.item_id, call.call_id, call.name, arguments, "completed")
                self.output[call.output_index] = item
                events += [
                    self._event("response.function_call_arguments.done", item_id=call.item_id,
                                output_index=call.output_index, name=call.name,
                                arguments=arguments),
                    self._event("response.output_item.done", output_index=call.output_index,
                                item=item)]
        return events

    def _close_text(self) -> list[Event]:
        """The done events of the open message item (none when none is open)."""
        if self.text_id is None:
            return []
        text = "".join(self.text)
        incomplete = self.finish_reason in ("length", "content_filter")
        events = self._annotated(self.citing.rest()) if self.citing is not None else []
        annotations, self.annotations = self.annotations, []
        item = message_item(self.text_id, text, "incomplete" if incomplete else "completed",
                            annotations)
        self.output[self.text_index] = item
        events += [
            self._event("response.output_text.done", item_id=self.text_id,
                        output_index=self.text_index, content_index=0, text=text,
                        logprobs=[]),
            self._event("response.content_part.done", item_id=self.text_id,
                        output_index=self.text_index, content_index=0,
                        part=text_part(text, annotations)),
            self._event("response.output_item.done", output_index=self.text_index, item=item)]
        self.text_id, self.text = None, []
        return events

    def close(self) -> list[Event]:
        """The closing events of every open item, then the response's final event."""
        events = self._start() + self._close_text() + self._close_calls()
        output = [item for item in self.output if item is not None]
        self.response = finish(self.frame, output, self.finish_reason, self.usage)
        self.message = assistant_message("".join(self.all_text), [
            (c.call_id, c.name, "".join(c.arguments)) for c in self.calls.values()])
        name = "response.incomplete" if self.response["status"] == "incomplete" \
            else "response.completed"
        return [*events, self._event(name, response=self.response)]

    def fail(self, code: str, message: str) -> list[Event]:
        """An ``error`` event and ``response.failed``: the stream broke after it started."""
        events = self._start()
        failed = {**self.frame, "status": "failed",
                  "output": [item for item in self.output if item is not None],
                  "error": {"code": code, "message": message}}
        return [*events, self._event("error", code=code, message=message, param=None),
                self._event("response.failed", response=failed)]
