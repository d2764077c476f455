"""The worker's memory: structlog without rich, redis-py without the OpenTelemetry metrics
SDK (``lean_imports``). Checked in a fresh interpreter, since this one has imported
everything the test suite needs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmport.lean_imports import hiding

PROBE = """
import json, sys
import llmport.cli, llmport.app
from llmport.stores import open_store
open_store("redis://127.0.0.1:6379/0")
loaded = {name: name in sys.modules for name in
          ("structlog", "redis", "rich", "opentelemetry.sdk.metrics", "psutil", "numpy")}
import rich.traceback, opentelemetry.sdk.metrics  # still importable by anyone who wants them
print(json.dumps(loaded))
"""


def test_a_gateway_with_a_redis_store_loads_neither_rich_nor_the_metrics_sdk() -> None:
    # nor numpy (vector search and the semantic cache load it when first used)
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                            timeout=120, check=True)
    loaded = json.loads(result.stdout)
    assert loaded == {"structlog": True, "redis": True, "rich": False,
                      "opentelemetry.sdk.metrics": False, "psutil": False, "numpy": False}


def test_hiding_makes_an_import_fail_only_inside_the_block() -> None:
    name = "llmport_test_absent_module"
    sys.modules.pop(name, None)
    with hiding(name), pytest.raises(ImportError):
        __import__(name)
    assert name not in sys.modules  # the None marker is gone again


def test_hiding_leaves_an_imported_package_alone() -> None:
    import json as already

    with hiding("json"):
        import json as inside
    assert inside is already
    assert sys.modules["json"] is already
