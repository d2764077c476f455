"""The `huggingface` provider end to end: a tiny model trained on the spot, configured in YAML,
served by a real llmport, and called with the official OpenAI client.

The model answers any chat with ``ANSWER`` (then end-of-sequence) and
continues a prompt of cycle letters forever, so outputs are exact.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import LOCAL_EXTRA_MISSING
from tests.support.servers import GatewayServer
from tests.support.tiny_models import ANSWER, EOS_ID

pytest.importorskip("torch", reason=LOCAL_EXTRA_MISSING)
pytest.importorskip("transformers", reason=LOCAL_EXTRA_MISSING)

USER: Any = [{"role": "user", "content": "hello"}]
LONG = 1900  # tokens: seconds of generation for the tiny model


def tiny(model_dir: Path, **options: Any) -> dict[str, Any]:
    return {"logging": {"access_log": False},
            "models": [{"name": "tiny", "provider": "huggingface", "model": str(model_dir),
                        "device": "cpu", "dtype": "float32", **options}]}


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[GatewayServer]:
    gateway = GatewayServer(tiny(tiny_model_dir, max_concurrency=2),
                            tmp_path_factory.mktemp("hf")).start()
    yield gateway
    gateway.stop()


@pytest.fixture
def client(server: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="any", max_retries=0)


def provider_of(server: GatewayServer) -> Any:
    return server.gateway.router.pools["tiny"][0].provider


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@contextmanager
def long_stream(server: GatewayServer) -> Iterator[httpx.Response]:
    """A streamed completion that would run ``LONG`` tokens (end-of-sequence banned)."""
    body = {"model": "tiny", "prompt": "c d e", "max_tokens": LONG, "stream": True,
            "logit_bias": {str(EOS_ID): -100}}
    with httpx.Client(timeout=30) as http, \
            http.stream("POST", server.url + "/v1/completions", json=body) as response:
        assert response.status_code == 200
        yield response


def test_chat_answer_and_usage_counted_with_the_real_tokenizer(client: openai.OpenAI,
                                                               server: GatewayServer) -> None:
    reply = client.chat.completions.create(model="tiny", messages=USER)
    assert reply.model == "tiny"
    assert reply.choices[0].message.content == ANSWER
    assert reply.choices[0].finish_reason == "stop"
    tokenizer = provider_of(server)._lm.tokenizer
    prompt = tokenizer.apply_chat_template(USER, tokenize=False, add_generation_prompt=True)
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)
                                            ["input_ids"])
    # Each of the ten words plus the end-of-sequence token.
    assert reply.usage.completion_tokens == len(tokenizer(ANSWER)["input_ids"]) + 1


def test_streamed_chat_arrives_token_by_token_in_order(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="tiny", messages=USER, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks[1:] if c.choices
                and c.choices[0].delta.content]
    assert "".join(contents) == ANSWER
    assert len(contents) == 10  # one per word: streamed as produced, not in one piece
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 11


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="tiny", messages=USER, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequences_are_cut_from_the_output(client: openai.OpenAI, stream: bool) -> None:
    # "ur fi" straddles two tokens ("four", " five"): the partial match never reaches the client.
    text, finish = chat(client, stream, stop=["ur fi", "nine"])
    assert (text, finish) == ("one two three fo", "stop")


@pytest.mark.parametrize("stream", [False, True])
def test_max_tokens_ends_with_length(client: openai.OpenAI, stream: bool) -> None:
    assert chat(client, stream, max_tokens=3) == ("one two three", "length")
    assert chat(client, stream, max_completion_tokens=2) == ("one two", "length")


def chat(client: openai.OpenAI, stream: bool, **params: Any) -> tuple[str, str | None]:
    if not stream:
        reply = client.chat.completions.create(model="tiny", messages=USER, **params)
        return reply.choices[0].message.content or "", reply.choices[0].finish_reason
    text, finish = "", None
    for chunk in client.chat.completions.create(model="tiny", messages=USER, stream=True,
                                                **params):
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    return text, finish


def test_completions_continue_the_prompt(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="tiny", prompt="c d e", max_tokens=5)
    assert reply.choices[0].text == " f g h a b"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt="c d e", max_tokens=5, stream=True) if c.choices)
    assert streamed == " f g h a b"


def test_n_choices_and_sampling_parameters(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="tiny", messages=USER, n=3, max_tokens=4)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert {c.message.content for c in reply.choices} == {"one two three four"}  # greedy
    assert reply.usage is not None and reply.usage.completion_tokens == 12
    sampled = client.chat.completions.create(model="tiny", messages=USER, temperature=1.5,
                                             top_p=0.9, seed=7, max_tokens=4)
    assert sampled.choices[0].finish_reason in ("stop", "length")


def test_logit_bias_steers_the_model(client: openai.OpenAI, server: GatewayServer) -> None:
    tokenizer = provider_of(server)._lm.tokenizer
    [one] = tokenizer("one")["input_ids"]
    reply = client.chat.completions.create(model="tiny", messages=USER, max_tokens=3,
                                           logit_bias={str(one): -100})
    assert not (reply.choices[0].message.content or "").startswith("one")


@pytest.mark.parametrize(("params", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
    ({"logprobs": True}, "logprobs"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]},
     "messages[0].content"),
    ({"max_tokens": 5000}, "messages"),
    ({"logit_bias": {"999999": 5}}, "logit_bias"),
])
def test_what_a_local_model_cannot_do_is_a_clear_400(client: openai.OpenAI,
                                                     params: dict[str, Any], param: str) -> None:
    body = {"model": "tiny", "messages": USER, **params}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**body)
    assert info.value.param == param
    assert "tiny" in info.value.message or "context length" in info.value.message


def test_context_length_is_enforced_with_openais_code(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="tiny", prompt="a " * 2100, max_tokens=1)
    assert info.value.code == "context_length_exceeded"
    assert "2048" in info.value.message


def test_disconnect_stops_generation_and_frees_the_slot(server: GatewayServer) -> None:
    provider = provider_of(server)
    before = provider.generated_tokens
    with long_stream(server) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(8)]
        assert provider.slots.active == 1  # still generating while the client reads
    assert any(line.startswith("data: ") for line in received)
    assert wait_until(lambda: provider.slots.active == 0, timeout=1.0)
    produced = provider.generated_tokens - before
    time.sleep(0.3)
    assert provider.generated_tokens - before == produced  # nothing runs on in the background
    assert 0 < produced < LONG


def test_requests_beyond_the_bound_wait_in_line(server: GatewayServer,
                                                client: openai.OpenAI) -> None:
    provider = provider_of(server)
    provider.slots.peak_active = 0
    answers: list[str] = []
    third = threading.Thread(target=lambda: answers.append(chat(client, stream=True)[0]))
    with ExitStack() as first, ExitStack() as second:
        first.enter_context(long_stream(server))
        second.enter_context(long_stream(server))
        assert wait_until(lambda: provider.slots.active == 2)
        # max_concurrency is 2: a third request waits, however long the first two take.
        third.start()
        queue = server.gateway.router.pools["tiny"][0].queue
        assert wait_until(lambda: queue.waiting == 1)
        assert provider.slots.active == 2 and not answers
        first.close()  # a slot frees: the waiting request runs
        third.join(30)
        assert answers == [ANSWER]
        assert provider.slots.peak_active == 2
    assert wait_until(lambda: provider.slots.active == 0, timeout=1.0)


def test_the_model_loads_lazily_or_at_startup(tiny_model_dir: Path, tmp_path: Path) -> None:
    lazy = GatewayServer(tiny(tiny_model_dir), tmp_path).start()
    eager = GatewayServer(tiny(tiny_model_dir, load_at_startup=True), tmp_path).start()
    try:
        assert provider_of(lazy)._lm is None
        assert provider_of(eager)._lm is not None
        reply = httpx.post(lazy.url + "/v1/completions", timeout=30,
                           json={"model": "tiny", "prompt": "a b", "max_tokens": 2})
        assert reply.json()["choices"][0]["text"] == " c d"
        assert provider_of(lazy)._lm is not None
    finally:
        lazy.stop()
        eager.stop()


def test_a_model_that_cannot_load_is_a_502_naming_the_cause(tmp_path: Path) -> None:
    server = GatewayServer(tiny(tmp_path / "missing"), tmp_path).start()
    try:
        reply = httpx.post(server.url + "/v1/chat/completions", timeout=30,
                           json={"model": "tiny", "messages": USER})
        assert reply.status_code == 502
        assert reply.json()["error"]["code"] == "model_load_failed"
    finally:
        server.stop()


def test_a_model_without_chat_template_takes_one_from_the_config(tiny_model_dir: Path,
                                                                  tmp_path: Path) -> None:
    bare = tmp_path / "bare-model"
    shutil.copytree(tiny_model_dir, bare)
    (bare / "chat_template.jinja").unlink()
    template = ("{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    config = tiny(bare)
    config["models"].append({**config["models"][0], "name": "templated",
                             "chat_template": template})
    server = GatewayServer(config, tmp_path).start()
    try:
        body = {"model": "tiny", "messages": USER, "max_tokens": 2}
        refused = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "no_chat_template"
        body["model"] = "templated"
        reply = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)
        assert reply.json()["choices"][0]["message"]["content"] == "one two"
    finally:
        server.stop()


def test_a_full_waiting_line_is_a_429(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = {**tiny(tiny_model_dir, queue_size=0), "router": {"num_retries": 0}}
    server = GatewayServer(config, tmp_path).start()  # max_concurrency defaults to 1 here
    try:
        with long_stream(server):
            body = {"model": "tiny", "messages": USER}
            busy = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)
        assert busy.status_code == 429 and int(busy.headers["retry-after"]) >= 1
        assert busy.json()["error"]["code"] == "queue_full"
    finally:
        server.stop()
