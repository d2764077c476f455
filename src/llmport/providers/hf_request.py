"""An OpenAI chat or completions request, read into what a local generation needs.

Everything a local model cannot honour is refused here, before any work
starts, with a 400 that names the parameter: silently ignoring ``tools`` or
``logprobs`` would hand the client an answer to a question it did not ask.
Pure Python: no torch, so it is checked and tested without the extra.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmport.errors import InvalidRequestError


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One generation: a chat (``messages``) or a raw prompt, and how to sample it."""

    messages: list[dict[str, Any]] | None = None
    prompt: str | list[int] | None = None
    continue_final_message: bool = False  # a trailing assistant message is continued (prefill)
    n: int = 1
    max_tokens: int | None = None  # as asked; None = the deployment's default
    stop: list[str] = field(default_factory=list)
    temperature: float | None = None  # None = the model's generation config; 0 = greedy
    top_p: float | None = None
    seed: int | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass(frozen=True, slots=True)
class Piece:
    """What one choice produced in one step: text (maybe empty) and, at its end, why it ended."""

    index: int
    text: str
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Counted:
    """The last event of a generation: tokens read and produced, by the model's own tokenizer."""

    prompt_tokens: int
    completion_tokens: int


def chat_request(request: dict[str, Any], model: str) -> GenerationRequest:
    tools = request.get("tools")
    if tools and request.get("tool_choice") != "none":
        raise _unsupported(model, "tools", "tool calling")
    if request.get("functions"):
        raise _unsupported(model, "functions", "function calling")
    fmt = request.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise _unsupported(model, "response_format", f"response_format {fmt.get('type')!r}")
    if request.get("logprobs") or request.get("top_logprobs"):
        raise _unsupported(model, "logprobs", "logprobs")
    messages = [_message(i, m, model) for i, m in enumerate(request["messages"])]
    return GenerationRequest(
        messages=messages,
        continue_final_message=messages[-1]["role"] == "assistant",
        max_tokens=request.get("max_completion_tokens") or request.get("max_tokens"),
        **_sampling(request))


def completion_request(request: dict[str, Any], model: str) -> GenerationRequest:
    for name in ("echo", "suffix", "logprobs"):
        if request.get(name):
            raise _unsupported(model, name, f"`{name}`")
    if (request.get("best_of") or 1) > 1:
        raise _unsupported(model, "best_of", "best_of > 1")
    return GenerationRequest(prompt=_prompt(request.get("prompt"), model),
                             max_tokens=request.get("max_tokens") or 16, **_sampling(request))


def _sampling(request: dict[str, Any]) -> dict[str, Any]:
    stop = request.get("stop")
    return {
        "n": int(request.get("n") or 1),
        "stop": [stop] if isinstance(stop, str) else list(stop or []),
        "temperature": request.get("temperature"),
        "top_p": request.get("top_p"),
        "seed": request.get("seed"),
        "logit_bias": _logit_bias(request.get("logit_bias")),
        "presence_penalty": float(request.get("presence_penalty") or 0.0),
        "frequency_penalty": float(request.get("frequency_penalty") or 0.0),
    }


def _message(index: int, message: dict[str, Any], model: str) -> dict[str, Any]:
    """A message as chat templates expect it: role and plain-text content."""
    role = message["role"]
    out: dict[str, Any] = {"role": "system" if role == "developer" else role,
                           "content": _text(index, message.get("content"), model)}
    for key in ("name", "tool_calls", "tool_call_id"):  # for templates that render them
        if message.get(key) is not None:
            out[key] = message[key]
    return out


def _text(index: int, content: Any, model: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.get("type") not in ("text", "input_text"):
            raise InvalidRequestError(
                f"Model `{model}` is a local text model: messages[{index}] has a "
                f"{part.get('type')!r} content part; only text parts are supported.",
                param=f"messages[{index}].content", code="unsupported_content")
        parts.append(str(part.get("text", "")))
    return "".join(parts)


def _prompt(prompt: Any, model: str) -> str | list[int]:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
        if isinstance(prompt, str):
            return prompt
    if isinstance(prompt, list) and prompt and all(
            isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt):
        return list(prompt)  # token ids of this model's own tokenizer
    raise InvalidRequestError(
        f"Model `{model}` takes one prompt per request: a string, or an array of this "
        "model's token ids. Send several prompts as several requests.",
        param="prompt", code="unsupported_value")


def _logit_bias(value: Any) -> dict[int, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequestError("'logit_bias' must be an object mapping token ids to numbers.",
                                  param="logit_bias", code="invalid_type")
    bias: dict[int, float] = {}
    for key, number in value.items():
        if not (isinstance(key, str) and key.isdigit()) or isinstance(number, bool) \
                or not isinstance(number, int | float) or not -100 <= number <= 100:
            raise InvalidRequestError(
                f"Invalid 'logit_bias' entry {key!r}: keys are token ids of the model's own "
                "tokenizer, values numbers between -100 and 100.",
                param="logit_bias", code="invalid_value")
        bias[int(key)] = float(number)
    return bias


def _unsupported(model: str, param: str, what: str) -> InvalidRequestError:
    return InvalidRequestError(f"Model `{model}` is a local model served in-process; "
                               f"it does not support {what}.",
                               param=param, code="unsupported_parameter")
