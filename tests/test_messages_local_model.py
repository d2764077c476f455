"""A local model configured in YAML serves ``/v1/messages`` like every other model.

No provider code of its own: the Messages dialect translates to the OpenAI
form, the gateway pipeline and the ``huggingface`` provider do the rest. The
tiny model (trained on the spot) answers any chat with ``ANSWER``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.conftest import LOCAL_EXTRA_MISSING
from tests.support.servers import GatewayServer
from tests.support.tiny_models import ANSWER

pytest.importorskip("torch", reason=LOCAL_EXTRA_MISSING)
pytest.importorskip("transformers", reason=LOCAL_EXTRA_MISSING)


def test_the_messages_api_reaches_a_local_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    server = GatewayServer({"logging": {"access_log": False}, "models": [
        {"name": "tiny", "provider": "huggingface", "model": str(tiny_model_dir),
         "device": "cpu", "dtype": "float32"}]}, tmp_path).start()
    try:
        claude = anthropic.Anthropic(base_url=server.url, api_key="any", max_retries=0)
        request: Any = {"model": "tiny", "max_tokens": 64,
                        "messages": [{"role": "user", "content": "hello"}]}
        message = claude.messages.create(**request)
        assert message.content[0].text == ANSWER  # type: ignore[union-attr]
        assert message.stop_reason == "end_turn"
        assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
        with claude.messages.stream(**request) as stream:
            assert "".join(stream.text_stream) == ANSWER
            final = stream.get_final_message()
        assert final.usage.output_tokens == message.usage.output_tokens
        short = claude.messages.create(**{**request, "max_tokens": 2})
        assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 2
    finally:
        server.stop()
