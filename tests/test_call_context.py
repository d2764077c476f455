"""Request headers as the policies read them: by name, the first of repeated ones."""

from __future__ import annotations

from llmport.api.asgi import sane_request_id
from llmport.gateway.context import CallContext
from llmport.policies.auth import credential
from llmport.types import Endpoint


def context(*headers: tuple[bytes, bytes]) -> CallContext:
    return CallContext("r", Endpoint.CHAT, {}, None, "m", headers=list(headers))


def test_header_by_name_first_of_repeated() -> None:
    ctx = context((b"x-llmport-priority", b"high"), (b"traceparent", b"00-a"),
                  (b"x-llmport-priority", b"low"))
    assert ctx.header(b"x-llmport-priority") == b"high"
    assert ctx.header(b"traceparent") == b"00-a"
    assert ctx.header(b"idempotency-key") is None


def test_credential_bearer_then_api_key() -> None:
    assert credential(context((b"x-api-key", b"k2"), (b"authorization", b"Bearer k1"))) == b"k1"
    assert credential(context((b"authorization", b"Basic abc"), (b"x-api-key", b"k2"))) == b"k2"
    assert credential(context((b"authorization", b"Bearer   "))) is None
    assert credential(context((b"x-api-key", b""))) is None
    assert credential(context()) is None


def test_request_id_kept_when_sane() -> None:
    assert sane_request_id(b"client-id-1") == "client-id-1"
    for insane in (None, b"", b"x" * 129, "caf\u00e9".encode(), b"a\nb"):
        made = sane_request_id(insane)
        assert made.startswith("req_") and made != sane_request_id(insane)
