"""Extract the OpenAI response schemas llmport is checked against into tests/spec/.

Usage: python scripts/extract_openapi_subset.py PATH/TO/openapi.json

The full OpenAI OpenAPI document is 3.4 MB; the tests need only the response
schemas of the endpoints llmport serves and everything they reference. The
subset is committed so the suite runs without the original at hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOTS = [
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "CreateEmbeddingResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
    "CreateChatCompletionRequest",
    "OpenAIFile",
    "ListFilesResponse",
    "DeleteFileResponse",
    "Batch",
    "ListBatchesResponse",
    "VectorStoreObject",
    "ListVectorStoresResponse",
    "VectorStoreFileObject",
    "ListVectorStoreFilesResponse",
    "VectorStoreFileBatchObject",
    "VectorStoreSearchResultsPage",
    "DeleteVectorStoreResponse",
    "DeleteVectorStoreFileResponse",
    "Response",
    "ResponseStreamEvent",
    "ConversationResource",
    "DeletedConversationResource",
    "ConversationItemList",
]
DROP = {"description", "x-oaiMeta", "x-oaiExpandable", "example", "examples", "title"}


def refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            found |= refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= refs(value)
    return found


def strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k not in DROP}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main(path: str) -> None:
    document = json.loads(Path(path).read_text())
    schemas = document["components"]["schemas"]
    wanted: dict[str, Any] = {}
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        wanted[name] = strip(schemas[name])
        todo += sorted(refs(schemas[name]) - set(wanted))
    out = {"openapi": document["openapi"], "info": document["info"],
           "components": {"schemas": dict(sorted(wanted.items()))}}
    target = Path(__file__).resolve().parent.parent / "tests" / "spec" / "openai-subset.json"
    target.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(wanted)} schemas to {target}")


if __name__ == "__main__":
    main(sys.argv[1])
