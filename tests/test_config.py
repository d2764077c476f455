"""Configuration: the documented shape works; every problem is reported with its location."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmport.config import ConfigError, load_config

DOCUMENTED = """\
auth:
  master_key: ${LLMPORT_MASTER_KEY}   # accepted as a bearer API key on /v1
models:
  - name: gpt-4o-mini                 # the public name clients send
    provider: openai                  # any OpenAI-compatible HTTP API
    model: gpt-4o-mini                # the upstream's model id
    api_base: http://127.0.0.1:9000/v1
    api_key: ${UPSTREAM_KEY}
    timeout: 30
  - name: demo
    provider: demo
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "llmport.yaml"
    path.write_text(text)
    return path


def test_the_documented_shape_loads(tmp_path: Path) -> None:
    env = {"LLMPORT_MASTER_KEY": "sk-master-123456", "UPSTREAM_KEY": "sk-up-abc"}
    config = load_config(write(tmp_path, DOCUMENTED), env)
    assert config.auth.master_key is not None
    assert config.auth.master_key.get_secret_value() == "sk-master-123456"
    first = config.models[0]
    assert first.upstream_model == "gpt-4o-mini" and first.timeout == 30
    assert first.options.api_key.get_secret_value() == "sk-up-abc"
    assert first.options.api_base == "http://127.0.0.1:9000/v1"
    assert config.model_names == ["gpt-4o-mini", "demo"]
    assert "sk-up-abc" not in repr(config) and "sk-master" not in repr(config)


def test_defaults_serve_the_demo_model() -> None:
    config = load_config(None, {})
    assert config.model_names == ["llmport-demo"]
    assert config.auth.master_key is None
    assert config.server.host == "127.0.0.1"


def test_environment_defaults_and_typed_values(tmp_path: Path) -> None:
    text = ("models:\n  - name: m\n    provider: openai\n    api_base: ${BASE:-http://h/v1}\n"
            "    timeout: ${T}\n")
    config = load_config(write(tmp_path, text), {"T": "12.5"})
    assert config.models[0].timeout == 12.5
    assert config.models[0].options.api_base == "http://h/v1"


def test_every_problem_is_reported_with_its_location(tmp_path: Path) -> None:
    text = """\
auth:
  master_key: ${NOT_SET}
models:
  - name: a
    provider: openai
    api_base: ftp://nope
    timeout: -1
    tiemout: 3
  - name: b
    provider: no-such-provider
  - name: c
    provider: demo
    color: blue
lol: 1
"""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), {})
    assert info.value.problems == [
        "auth.master_key (line 2): environment variable NOT_SET is not set"]
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), {"NOT_SET": "sk-long-enough"})
    problems = info.value.problems
    assert "models[0].timeout (line 7): Input should be greater than 0" in problems
    assert "lol (line 14): unknown key" in problems
    assert "models[0].tiemout (line 8): unknown key" in problems
    assert "models[0].api_base (line 6): api_base must be an http:// or https:// URL" in problems
    assert any(p.startswith("models[1].provider (line 10): unknown provider 'no-such-provider'")
               for p in problems)
    assert "models[2].color (line 13): unknown key" in problems


def test_missing_required_provider_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "models:\n  - name: x\n    provider: openai\n"), {})
    assert info.value.problems == ["models[0].api_base (line 2): Field required"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmport", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=60)


def test_config_check_command(tmp_path: Path) -> None:
    good = write(tmp_path, DOCUMENTED)
    result = run_cli("config", "check", str(good),
                     env={"LLMPORT_MASTER_KEY": "sk-master-123456", "UPSTREAM_KEY": "secret-xyz"})
    assert result.returncode == 0, result.stderr
    assert "OK (2 models, 2 deployments)" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: x\n    provider: openai\n    api_key: secret-xyz\n"
                   "    timeout: soon\n")
    result = run_cli("config", "check", str(bad))
    assert result.returncode == 2
    assert "models[0].api_base (line 2): Field required" in result.stderr
    assert "models[0].timeout (line 5): Input should be a valid number" in result.stderr
    assert "secret-xyz" not in result.stderr + result.stdout


def test_router_names_must_exist(tmp_path: Path) -> None:
    text = ("models:\n  - name: a\n    provider: demo\nrouter:\n  fallbacks: {a: [b]}\n"
            "  models: {c: {hedge_after: 1}}\n  strategy: fastest\n")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), {})
    problems = info.value.problems
    assert any("router.strategy (line 7): Input should be 'weighted'" in p for p in problems)
    text = text.replace("  strategy: fastest\n", "")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), {})
    assert info.value.problems == ["router.models.c (line 6): unknown model 'c'",
                                   "router.fallbacks.a[0] (line 5): unknown model 'b'"]
