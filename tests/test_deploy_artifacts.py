"""The shipped Prometheus and Grafana artefacts are valid and talk about real metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fake_openai import FakeOpenAI

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus); .ci/run does")


@needs_promtool
@pytest.mark.parametrize("args", [["check", "config", "prometheus.yml"],
                                  ["check", "rules", "alerts.yml"],
                                  ["test", "rules", "alerts.test.yml"]])
def test_promtool_accepts_the_prometheus_files(args: list[str]) -> None:
    result = subprocess.run([PROMTOOL or "promtool", *args], cwd=DEPLOY / "prometheus",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_and_alerts_only_use_metrics_llmport_exposes(fake: FakeOpenAI,
                                                                start_gateway: Any) -> None:
    server = start_gateway({"models": [{"name": "m", "provider": "openai",
                                        "api_base": fake.url}]})
    httpx.post(server.url + "/v1/chat/completions",
               json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    exposed = set()
    for family in text_string_to_metric_families(httpx.get(server.url + "/metrics").text):
        # A family with no observations yet has no samples; its series names are known.
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
        exposed |= {family.name, *(family.name + x for x in suffixes.get(family.type, []))}
    dashboard = json.loads((DEPLOY / "grafana" / "llmport-dashboard.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    expressions.append((DEPLOY / "prometheus" / "alerts.yml").read_text())
    used = {name for text in expressions for name in re.findall(r"\bllmport_[a-z_]+", text)}
    assert used and used <= exposed, used - exposed
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
