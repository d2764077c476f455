"""Provider registry: a config's ``provider:`` name → the class that serves it.

Built-in providers are listed here by import path, so none is imported before
a config names it (the local-model ones pull in torch). Third-party providers
register under the ``llmport.providers`` entry-point group.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmport.providers.base import Provider

BUILTIN_PROVIDERS = {
    "openai": "llmport.providers.openai_compatible:OpenAICompatibleProvider",
    "demo": "llmport.providers.demo:DemoProvider",
    "anthropic": "llmport.providers.anthropic:AnthropicProvider",
    "huggingface": "llmport.providers.huggingface:HuggingFaceProvider",
    "sentence-transformers": "llmport.providers.sentence_embeddings:SentenceEmbeddingsProvider",
}


@cache
def _plugin_paths() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group="llmport.providers")}


def provider_names() -> list[str]:
    return sorted({*BUILTIN_PROVIDERS, *_plugin_paths()})


@cache
def provider_class(name: str) -> type[Provider]:
    path = BUILTIN_PROVIDERS.get(name) or _plugin_paths().get(name)
    if path is None:
        raise LookupError(f"unknown provider {name!r} (known: {', '.join(provider_names())})")
    module_name, _, attr = path.partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module_name), attr)
    return cls
