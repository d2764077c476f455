from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from llmport.db.database import Database
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_openai import FakeOpenAI
from tests.support.servers import GatewayServer

MASTER_KEY = "sk-test-master-key-0123456789"
# Local models load from disk only: there is no model hub to reach from the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The embedded database and spend journal of gateways that name no data_dir go here, not
# into the working tree (start_gateway gives each test its own).
os.environ.setdefault("LLMPORT_DATA_DIR", tempfile.mkdtemp(prefix="llmport-tests-"))


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(upstream: FakeOpenAI) -> FakeOpenAI:
    """The session's fake upstream, emptied of earlier tests' history and script."""
    upstream.reset()
    return upstream


@pytest.fixture(scope="session")
def messages_upstream() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture
def claude_upstream(messages_upstream: FakeAnthropic) -> FakeAnthropic:
    """The session's fake Messages API upstream, emptied of earlier tests' history and script."""
    messages_upstream.reset()
    return messages_upstream


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], GatewayServer]]:
    servers: list[GatewayServer] = []

    def start(config: dict[str, Any]) -> GatewayServer:
        config = {"logging": {"access_log": False}, "data_dir": str(tmp_path / "data"),
                  **config}
        server = GatewayServer(config, tmp_path).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def demo_config(**overrides: Any) -> dict[str, Any]:
    return {"models": [{"name": "demo", "provider": "demo", "first_token_ms": 0,
                        "token_delay_ms": 0, **overrides}]}


def upstream_config(fake: FakeOpenAI, **overrides: Any) -> dict[str, Any]:
    return {"auth": {"master_key": MASTER_KEY},
            "models": [{"name": "gpt-4o-mini", "provider": "openai", "model": "fake-model",
                        "api_base": fake.url, "api_key": "sk-upstream-secret", **overrides},
                       {"name": "demo", "provider": "demo", "first_token_ms": 0,
                        "token_delay_ms": 0}]}


@pytest.fixture
def proxied(fake: FakeOpenAI, start_gateway: Callable[[dict[str, Any]], GatewayServer]
            ) -> GatewayServer:
    """llmport with a master key, serving gpt-4o-mini from the fake upstream, and demo."""
    return start_gateway(upstream_config(fake))


@pytest.fixture
def client(proxied: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxied.url + "/v1", api_key=MASTER_KEY, max_retries=0)


def claude_config(upstream: FakeAnthropic, **overrides: Any) -> dict[str, Any]:
    """llmport with a master key, serving `claude` from the fake Messages upstream."""
    return {"auth": {"master_key": MASTER_KEY}, "models": [
        {"name": "claude", "provider": "anthropic", "model": "claude-sonnet-4-5",
         "api_base": upstream.url, "api_key": "sk-ant-upstream",
         "headers": {"x-team": "search"}, **overrides}]}


LOCAL_EXTRA_MISSING = "the local-model extra is not installed (pip install -e '.[local]')"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 and tokenizer trained on the spot and saved like any downloaded model."""
    pytest.importorskip("torch", reason=LOCAL_EXTRA_MISSING)
    from tests.support.tiny_models import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix of its own on the test Redis (skips loudly without one); its keys are
    deleted afterwards."""
    from tests.test_stores import delete_prefixed, redis_or_skip, unique_prefix

    redis_or_skip()
    name = unique_prefix()
    yield name
    await delete_prefixed(name)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated SQLite database file of the test's own (test_db.py has its own, on both
    backends)."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'spend.db'}")
    await database.upgrade()
    yield database
    await database.aclose()
