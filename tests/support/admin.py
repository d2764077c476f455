"""A small client for llmport's admin API, and configs with tenancy on."""

from __future__ import annotations

from typing import Any

import httpx
import openai

MASTER_KEY = "sk-test-master-key-0123456789"
PRICE = {"input": 1000.0, "output": 2000.0}  # US$ per million tokens: cents per request


class Admin:
    def __init__(self, base_url: str, key: str = MASTER_KEY) -> None:
        self.http = httpx.Client(base_url=base_url, headers={"authorization": f"Bearer {key}"},
                                 timeout=30)

    def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        assert response.status_code == expect, (response.status_code, response.text)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def key(self, **fields: Any) -> dict[str, Any]:
        return self.call("POST", "/admin/keys", 201, json=fields)  # type: ignore[no-any-return]

    def usage(self, **params: Any) -> dict[str, Any]:
        return self.call("GET", "/admin/usage", params=params)  # type: ignore[no-any-return]

    def logs(self, **params: Any) -> list[dict[str, Any]]:
        return self.call("GET", "/admin/spend/logs",  # type: ignore[no-any-return]
                         params={"limit": 10_000, **params})["data"]


def tenancy_config(**top: Any) -> dict[str, Any]:
    """A master key and a priced, instant demo model (plus `other`, a second model)."""
    demo = {"provider": "demo", "first_token_ms": 0, "token_delay_ms": 0, "pricing": PRICE}
    return {"auth": {"master_key": MASTER_KEY},
            "models": [{"name": "demo", **demo}, {"name": "other", **demo}], **top}


def priced_upstream(url: str) -> dict[str, Any]:
    """``gpt-4o-mini``, served by a fake OpenAI upstream at ``url``, priced like the demo."""
    return {"name": "gpt-4o-mini", "provider": "openai", "model": "fake-model", "api_base": url,
            "api_key": "sk-upstream", "pricing": PRICE}


def chat(base_url: str, key: str, model: str = "demo", **kwargs: Any) -> Any:
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0)
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "Hello there"}], **kwargs)
