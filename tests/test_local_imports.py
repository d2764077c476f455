"""The local-model stack is optional: a gateway that does not serve a local model never imports
torch, and configuring one costs nothing until its model loads."""

from __future__ import annotations

import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

SCRIPT = """
import asyncio, sys
from llmport.app import create_app
from llmport.config import load_config

app = create_app(load_config(sys.argv[1]))

async def start_and_stop():
    await app.gateway.start()
    await app.gateway.aclose()

asyncio.run(start_and_stop())
heavy = sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules)
print("heavy:", ",".join(heavy) or "none")
"""


def run_gateway(tmp_path: Path, yaml: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "llmport.yaml"
    path.write_text(yaml)
    return subprocess.run([sys.executable, "-c", SCRIPT, str(path)], capture_output=True,
                          text=True, timeout=60, check=False)


def test_a_gateway_without_local_models_never_imports_torch(tmp_path: Path) -> None:
    done = run_gateway(tmp_path, """
models:
  - {name: demo, provider: demo}
  - {name: gpt, provider: openai, api_base: "http://127.0.0.1:9/v1"}
""")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["heavy:", "none"]


def test_configured_local_models_load_nothing_until_first_use(tmp_path: Path) -> None:
    # Validating and starting the providers checks the extra is there without importing it.
    yaml = """
models:
  - {name: chat, provider: huggingface, model: /nonexistent/model, device: cpu}
  - {name: embed, provider: sentence-transformers, model: /nonexistent/model}
"""
    done = run_gateway(tmp_path, yaml)
    if all(find_spec(m) for m in ("torch", "transformers", "sentence_transformers")):
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["heavy:", "none"]
    else:  # without the extra, start-up refuses and says how to fix it
        assert done.returncode != 0
        assert "install the local extra" in done.stderr
