"""One generation job, without the gateway: cancellation lands within one token step."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import LOCAL_EXTRA_MISSING
from tests.support.tiny_models import EOS_ID

pytest.importorskip("torch", reason=LOCAL_EXTRA_MISSING)

from llmport.providers.hf_engine import CausalLM
from llmport.providers.hf_request import GenerationRequest, Piece


@pytest.fixture(scope="module")
def lm(tiny_model_dir: Path) -> CausalLM:
    return CausalLM.load("tiny", str(tiny_model_dir), device="cpu", dtype="float32",
                         trust_remote_code=False, chat_template=None)


def test_a_cancelled_job_stops_on_the_next_token_step(lm: CausalLM) -> None:
    received: list[Piece] = []

    def emit(pieces: list[Piece] | None) -> None:  # runs in the generating thread
        if pieces is None:
            return
        received.extend(pieces)
        if len(received) == 5:
            job.cancel()  # as a client hanging up does, between two steps

    request = GenerationRequest(prompt="c d e", max_tokens=1000,
                                logit_bias={EOS_ID: -100.0})
    job = lm.job(request, emit)
    counted = job.run(default_max_tokens=1000)
    assert [p.text for p in received] == [" f", " g", " h", " a", " b"]
    assert counted.completion_tokens == 5
    assert job.steps_after_cancel == 1  # one more step was asked, and it said stop


def test_a_job_cancelled_before_it_starts_generates_nothing(lm: CausalLM) -> None:
    received: list[list[Piece] | None] = []
    job = lm.job(GenerationRequest(prompt="c d e", max_tokens=50), received.append)
    job.cancel()
    assert job.run(default_max_tokens=50).completion_tokens == 0
    assert received == [None]


def test_a_chat_continues_a_trailing_assistant_message(lm: CausalLM) -> None:
    received: list[Piece] = []
    messages = [{"role": "user", "content": "hello"},
                {"role": "assistant", "content": "one two"}]
    request = GenerationRequest(messages=messages, continue_final_message=True, max_tokens=3)
    lm.job(request, lambda p: received.extend(p or [])).run(default_max_tokens=3)
    assert "".join(p.text for p in received) == " three four five"
