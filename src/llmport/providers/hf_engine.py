"""A causal LM in-process: loading it, building prompts, and one generation in a thread.

Imported only when a ``huggingface`` deployment loads its model (it imports
torch and transformers). A generation runs ``model.generate`` in a worker
thread with a ``TokenSink`` as its stopping criterion: transformers calls it
once per token step, with the new tokens, before deciding whether to go on.
The sink decodes them, cuts stop sequences, hands the text to the event loop
at once, and answers "stop" when a choice is finished or the job was
cancelled, so a client that hangs up stops the model within one step.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import jinja2
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteriaList,
)

from llmport.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    LLMPortError,
    UpstreamError,
)
from llmport.providers.hf_decoding import LogitBias, Penalties, TokenSink
from llmport.providers.hf_request import Counted, GenerationRequest, Piece
from llmport.providers.local_runtime import DType, torch_device, torch_dtype

Emit = Callable[[list[Piece] | None], object]  # None: the generation is over


class CausalLM:
    """A loaded model and tokenizer, shared by every generation of one deployment."""

    def __init__(self, name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 device: str) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.context_length = _context_length(model, tokenizer)
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        self.eos_ids = frozenset(eos_ids)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else next(iter(eos_ids), 0)

    @classmethod
    def load(cls, name: str, path: str, *, device: str, dtype: DType, trust_remote_code: bool,
             chat_template: str | None) -> CausalLM:
        """Load weights and tokenizer (blocking: call it in a thread)."""
        device = torch_device(device)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        if chat_template is not None:
            tokenizer.chat_template = chat_template
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype(dtype, device), trust_remote_code=trust_remote_code)
        model.to(device)
        model.eval()
        return cls(name, model, tokenizer, device)

    def close(self) -> None:
        del self.model
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def job(self, request: GenerationRequest, emit: Emit) -> GenerationJob:
        return GenerationJob(self, request, emit)

    # -- prompts -----------------------------------------------------------------------------
    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        if request.messages is not None:
            ids = self._chat_ids(request)
        elif isinstance(request.prompt, list):
            bad = next((t for t in request.prompt if t >= self.vocab_size), None)
            if bad is not None:
                raise InvalidRequestError(f"Token id {bad} is outside the vocabulary of "
                                          f"`{self.name}` ({self.vocab_size} tokens).",
                                          param="prompt", code="invalid_value")
            ids = request.prompt
        else:
            ids = self.tokenizer(request.prompt or "")["input_ids"]
        if not ids:
            bos = self.tokenizer.bos_token_id
            if bos is None:
                raise InvalidRequestError("The prompt is empty.", param="prompt",
                                          code="invalid_value")
            ids = [bos]
        return list(ids)

    def _chat_ids(self, request: GenerationRequest) -> list[int]:
        if not self.tokenizer.chat_template:
            raise InvalidRequestError(
                f"Model `{self.name}` has no chat template, so it cannot take chat messages: "
                "use /v1/completions, or set `chat_template` in its config entry.",
                param="messages", code="no_chat_template")
        cont = request.continue_final_message
        try:
            text = self.tokenizer.apply_chat_template(
                request.messages, tokenize=False, add_generation_prompt=not cont,
                continue_final_message=cont)
        except (jinja2.TemplateError, ValueError) as exc:
            raise InvalidRequestError(f"The chat template of `{self.name}` rejected the "
                                      f"messages: {exc}", param="messages",
                                      code="invalid_messages") from None
        return list(self.tokenizer(str(text), add_special_tokens=False)["input_ids"])

    def token_budget(self, prompt_tokens: int, asked: int | None, default: int) -> int:
        """How many tokens may be generated; an ask the context cannot hold is an error."""
        limit = self.context_length
        if limit is None:
            return asked or default
        room = limit - prompt_tokens
        if room <= 0 or (asked is not None and asked > room):
            wanted = f"{prompt_tokens + (asked or 0)} tokens ({prompt_tokens} in the prompt"
            wanted += f", {asked} in the completion)" if asked else ")"
            raise ContextLengthExceededError(
                f"This model's maximum context length is {limit} tokens. However, you "
                f"requested {wanted}. Please reduce the length of the prompt or completion.",
                param="messages")
        return asked or min(default, room)


class GenerationJob:
    """One request's generation; ``run`` blocks (a worker thread), ``cancel`` is thread-safe."""

    def __init__(self, lm: CausalLM, request: GenerationRequest, emit: Emit) -> None:
        self.lm = lm
        self.request = request
        self._emit = emit
        self._cancel = threading.Event()
        self.sink: TokenSink | None = None

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def steps_after_cancel(self) -> int:
        return self.sink.steps_after_cancel if self.sink is not None else 0

    def run(self, default_max_tokens: int) -> Counted:
        """Generate, streaming pieces through ``emit``; returns the token counts."""
        try:
            return self._run(default_max_tokens)
        except LLMPortError:
            raise
        except Exception as exc:  # a model failure is the deployment's, not the request's
            raise UpstreamError(f"{self.lm.name} failed to generate: "
                                f"{type(exc).__name__}: {exc}") from exc
        finally:
            self._send(None)

    def _run(self, default_max_tokens: int) -> Counted:
        lm, request = self.lm, self.request
        ids = lm.prompt_ids(request)
        budget = lm.token_budget(len(ids), request.max_tokens, default_max_tokens)
        sink = self.sink = TokenSink(lm.tokenizer, request, budget, lm.eos_ids, ids,
                                     self._cancel, self._send)
        if self._cancel.is_set():
            return Counted(len(ids), 0)
        inputs = torch.tensor([ids] * request.n, device=lm.device)
        if request.seed is not None:
            torch.manual_seed(request.seed)
        with torch.inference_mode():
            lm.model.generate(
                input_ids=inputs, attention_mask=torch.ones_like(inputs),
                generation_config=self._config(budget),
                logits_processor=self._processors(len(ids)),
                stopping_criteria=StoppingCriteriaList([sink]))
        sink.finish_all()
        return Counted(len(ids), sink.completion_tokens)

    def _config(self, budget: int) -> Any:
        config = copy.deepcopy(self.lm.model.generation_config)
        config.max_new_tokens = budget
        config.min_new_tokens = None
        config.num_return_sequences = 1  # n choices are n rows of one batch
        config.pad_token_id = self.lm.pad_id
        temperature, top_p = self.request.temperature, self.request.top_p
        if temperature is not None:
            config.do_sample = temperature > 0
            config.temperature = temperature if temperature > 0 else 1.0
        if top_p is not None:
            config.top_p = top_p
        if not config.do_sample:  # unused when greedy; left set, transformers warns
            config.temperature, config.top_p, config.top_k = 1.0, 1.0, 50
        return config

    def _processors(self, prompt_tokens: int) -> LogitsProcessorList:
        request, processors = self.request, LogitsProcessorList()
        if request.logit_bias:
            bad = next((t for t in request.logit_bias if t >= self.lm.vocab_size), None)
            if bad is not None:
                raise InvalidRequestError(f"'logit_bias' names token {bad}, outside the "
                                          f"vocabulary of `{self.lm.name}`.",
                                          param="logit_bias", code="invalid_value")
            processors.append(LogitBias(request.logit_bias, self.lm.device))
        if request.presence_penalty or request.frequency_penalty:
            processors.append(Penalties(prompt_tokens, request.presence_penalty,
                                        request.frequency_penalty))
        return processors

    def _send(self, pieces: list[Piece] | None) -> None:
        try:
            self._emit(pieces)
        except RuntimeError:  # the event loop is gone (shutdown): nobody is listening
            self._cancel.set()


def _context_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int | None:
    config = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10_000_000 else None
