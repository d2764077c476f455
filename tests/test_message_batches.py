"""Anthropic's Message Batches API with the official ``anthropic`` client: requests in the
Messages form run through the gateway for any model (here an OpenAI-compatible upstream),
results as Anthropic's result lines, cancellation, deletion, ownership."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.support.admin import MASTER_KEY, Admin, priced_upstream, tenancy_config
from tests.support.fake_openai import Answer, FakeOpenAI
from tests.support.servers import GatewayServer

Start = Callable[[dict[str, Any]], GatewayServer]


def start(fake: FakeOpenAI, start_gateway: Start, tmp_path: Path,
          server: dict[str, Any] | None = None, **batches: Any) -> GatewayServer:
    config = tenancy_config(batches={"poll_interval": 0.05, **batches}, server=server or {})
    config["models"].append(priced_upstream(fake.url))
    config["data_dir"] = str(tmp_path / "data")
    return start_gateway(config)


def client(server: GatewayServer, key: str = MASTER_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)


def request(custom_id: str, text: str = "Hi", model: str = "gpt-4o-mini",
            **params: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "params": {
        "model": model, "max_tokens": 64,
        "messages": [{"role": "user", "content": text}], **params}}


def wait_ended(api: anthropic.Anthropic, batch_id: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = api.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} still {batch.processing_status}")


def chat_calls(fake: FakeOpenAI) -> list[Any]:
    return [r for r in fake.history if r.path.endswith("/chat/completions")]


def test_a_message_batch_runs_every_request_once_and_returns_anthropic_results(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    server = start(fake, start_gateway, tmp_path)
    admin = Admin(server.url)
    key = admin.key()
    api = client(server, key["key"])
    batch = api.messages.batches.create(requests=[  # type: ignore[list-item]
        request("a", "First question"), request("b", "Second question", system="Be brief."),
        request("bad", model="no-such-model"),
        {"custom_id": "broken", "params": {"model": "gpt-4o-mini", "messages": []}}])
    assert batch.type == "message_batch" and batch.id.startswith("msgbatch_")
    assert batch.processing_status == "in_progress" and batch.results_url is None
    done = wait_ended(api, batch.id)
    counts = done.request_counts
    assert (counts.succeeded, counts.errored, counts.processing, counts.canceled) == (2, 2, 0, 0)
    assert done.ended_at is not None and done.results_url is not None

    results = {r.custom_id: r.result for r in api.messages.batches.results(batch.id)}
    assert set(results) == {"a", "b", "bad", "broken"}
    assert results["a"].type == "succeeded" and results["b"].type == "succeeded"
    assert results["a"].message.type == "message"  # type: ignore[union-attr]
    assert results["a"].message.content[0].text  # type: ignore[union-attr]
    assert results["bad"].type == "errored"
    assert results["bad"].error.error.type == "not_found_error"  # type: ignore[union-attr]
    assert results["broken"].error.error.type == "invalid_request_error"  # type: ignore[union-attr]

    asked = sorted((m["role"], m["content"]) for r in chat_calls(fake)
                   for m in r.body["messages"])
    assert asked == [("system", "Be brief."), ("user", "First question"),
                     ("user", "Second question")]  # each sent once, translated to chat
    logs = admin.logs(key_id=key["id"])
    assert sorted(r["status"] for r in logs) == [200, 200, 400, 404]
    assert [b.id for b in api.messages.batches.list()] == [batch.id]

    deleted = api.messages.batches.delete(batch.id)
    assert deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        api.messages.batches.retrieve(batch.id)


def test_a_canceled_message_batch_reports_the_unsent_requests_as_canceled(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path) -> None:
    server = start(fake, start_gateway, tmp_path, concurrency=1)
    fake.default = Answer(ttft=0.1)
    api = client(server)
    batch = api.messages.batches.create(
        requests=[request(f"r{i}") for i in range(20)])  # type: ignore[misc]
    assert fake.wait_for(
        lambda: api.messages.batches.retrieve(batch.id).request_counts.processing <= 18, 10)
    with pytest.raises(anthropic.BadRequestError):
        api.messages.batches.delete(batch.id)  # not ended yet
    canceling = api.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at
    done = wait_ended(api, batch.id)
    counts = done.request_counts
    assert counts.canceled > 0 and counts.succeeded + counts.canceled == 20
    results = list(api.messages.batches.results(batch.id))
    assert len(results) == 20 and len({r.custom_id for r in results}) == 20
    assert sum(r.result.type == "canceled" for r in results) == counts.canceled
    assert len(chat_calls(fake)) == counts.succeeded


def test_message_batches_are_checked_and_owned(fake: FakeOpenAI, start_gateway: Start,
                                               tmp_path: Path) -> None:
    server = start(fake, start_gateway, tmp_path)
    api = client(server)
    for requests in ([], [request("same"), request("same")], [request("bad id!")],
                     [request("s", stream=True)], [{"custom_id": "x", "params": {}}]):
        with pytest.raises(anthropic.BadRequestError):
            api.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    batch = api.messages.batches.create(requests=[request("a")])  # type: ignore[list-item]
    stranger = client(server, Admin(server.url).key()["key"])
    with pytest.raises(anthropic.NotFoundError):
        stranger.messages.batches.retrieve(batch.id)
    with pytest.raises(anthropic.NotFoundError):
        stranger.messages.batches.cancel(batch.id)
    cancel = httpx.post(f"{server.url}/v1/messages/batches/{batch.id}/cancel", json={},
                        headers={"x-api-key": MASTER_KEY})  # a body is read and ignored
    assert cancel.status_code == 200
    assert list(stranger.messages.batches.list()) == []
    assert wait_ended(api, batch.id).processing_status == "ended"
    openai_batches = httpx.get(server.url + "/v1/batches",
                               headers={"authorization": f"Bearer {MASTER_KEY}"}).json()
    assert openai_batches["data"] == []  # Message Batches live in their own API
    no_key = httpx.get(server.url + f"/v1/messages/batches/{batch.id}")
    assert no_key.status_code == 401 and no_key.json()["type"] == "error"  # Anthropic envelope


@pytest.mark.parametrize(("trusted", "scheme"), [(["127.0.0.1"], "https"), ([], "http")])
def test_results_url_is_the_clients_behind_a_trusted_proxy(
        fake: FakeOpenAI, start_gateway: Start, tmp_path: Path, trusted: list[str],
        scheme: str) -> None:
    """Behind a TLS-terminating proxy the results URL is the one the client can fetch: the
    proxy's scheme (X-Forwarded-Proto, believed only from ``forwarded_allow_ips``) and host."""
    server = start(fake, start_gateway, tmp_path, server={"forwarded_allow_ips": trusted})
    batch = client(server).messages.batches.create(requests=[request("a")])  # type: ignore[list-item]
    wait_ended(client(server), batch.id)
    seen = httpx.get(f"{server.url}/v1/messages/batches/{batch.id}", headers={
        "x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01",
        "host": "llm.example.com", "x-forwarded-proto": "https"}).json()
    assert seen["results_url"] == \
        f"{scheme}://llm.example.com/v1/messages/batches/{batch.id}/results"
