"""The web console at /ui: its files and headers, every API call it makes answered by a real
gateway, and its stream decoding (run under Node) agreeing with the gateway's own."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from llmport.api.webui import routes as webui
from llmport.providers.sse import SSEDecoder
from tests.support.admin import MASTER_KEY, tenancy_config

CONSOLE = Path(webui.__file__).parent
TEMPLATE = re.compile(r"\$\{[^}]*\}")
# Each api("METHOD", path …) in the console: the path a string or a template literal.
API_CALL = re.compile(r"""\bapi\("(GET|POST|PATCH|DELETE)", (["`])(.+?)\2""")


def console_calls() -> list[tuple[str, str]]:
    calls = API_CALL.findall((CONSOLE / "app.mjs").read_text())
    return sorted({(method, path) for method, _, path in calls})


def test_the_console_makes_the_calls_this_test_knows() -> None:
    # If the console gains a call, the test below must learn how to make it.
    assert console_calls() == sorted([
        ("DELETE", "/admin/${kind}/${row.id}"), ("DELETE", "/admin/keys/${row.id}"),
        ("GET", "/admin/${kind}?limit=1000"), ("GET", "/admin/keys/${row.id}"),
        ("GET", "/admin/keys?limit=1000"), ("GET", "/admin/orgs?limit=1"),
        ("GET", "/admin/usage?${params}"), ("GET", "/admin/usage?${query()}"),
        ("GET", "/readyz"), ("GET", "/v1/models"), ("PATCH", "/admin/${kind}/${row.id}"),
        ("POST", "/admin/${kind}"),
        ("POST", "/admin/keys"), ("POST", "/admin/keys/${row.id}/rotate"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/files"), ("POST", "/v1/files"), ("GET", "/v1/files/${row.id}/content"),
        ("DELETE", "/v1/files/${row.id}"), ("POST", "/v1/batches"),
        ("GET", "/v1/batches?limit=100"), ("POST", "/v1/batches/${row.id}/cancel"),
        ("GET", "/v1/vector_stores?limit=100"), ("POST", "/v1/vector_stores"),
        ("DELETE", "/v1/vector_stores/${row.id}"),
        ("POST", "/v1/vector_stores/${stores.value}/search"),
    ])


def test_every_call_of_the_console_is_answered(start_gateway: Any) -> None:
    """Each call, made as the console makes it (method, path, body), succeeds."""
    config = tenancy_config(batches={"concurrency": 1}, rag={"poll_interval": 0.05})
    config["models"].append({"name": "slow", "provider": "demo", "token_delay_ms": 50})
    server = start_gateway(config)
    http = httpx.Client(base_url=server.url, timeout=30,
                        headers={"authorization": f"Bearer {MASTER_KEY}"})
    made: list[tuple[str, str]] = []

    def call(method: str, template: str, path: str, body: Any = None, expect: int = 200,
             **form: Any) -> Any:
        response = http.request(method, path, json=body, **form)
        assert response.status_code == expect, (method, path, response.text)
        made.append((method, template))
        return response.json() if "json" in response.headers["content-type"] else response.text

    ids: dict[str, str] = {}
    for kind in ("orgs", "teams", "users"):
        ids[kind] = call("POST", "/admin/${kind}", f"/admin/{kind}",
                         {"name": f"a {kind}", "rpm_limit": 10, "models": ["demo"]}, 201)["id"]
        listed = call("GET", "/admin/${kind}?limit=1000", f"/admin/{kind}?limit=1000")
        assert [row["id"] for row in listed["data"]] == [ids[kind]]
    key = call("POST", "/admin/keys", "/admin/keys",
               {"name": "ui", "org_id": ids["orgs"], "max_budget": 5.0,
                "budget_period": "daily", "expires_at": "2999-01-01T00:00:00.000Z"}, 201)
    assert key["key"].startswith("sk-lp-")
    assert call("GET", "/admin/keys?limit=1000", "/admin/keys?limit=1000")["data"][0]["id"] \
        == key["id"]
    assert call("GET", "/admin/keys/${row.id}", f"/admin/keys/{key['id']}")["spend"] == 0
    # The limits editor sends every limit field, an emptied one as null (no limit).
    edited = {"models": ["demo"], "rpm_limit": 30, "tpm_limit": None,
              "max_parallel_requests": None, "max_budget": None, "budget_period": None}
    for kind, row_id in (("keys", key["id"]), *((k, ids[k]) for k in ("orgs", "teams", "users"))):
        changed = call("PATCH", "/admin/${kind}/${row.id}", f"/admin/{kind}/{row_id}", edited)
        assert {name: changed[name] for name in edited} == edited, kind
    call("GET", "/admin/orgs?limit=1", "/admin/orgs?limit=1")
    assert [m["id"] for m in call("GET", "/v1/models", "/v1/models")["data"]] == \
        ["demo", "other", "slow"]
    answer = call("POST", "/v1/chat/completions", "/v1/chat/completions",
                  {"model": "demo", "messages": [{"role": "user", "content": "hi"}],
                   "stream": False, "max_tokens": 5, "temperature": 0.5})
    assert answer["choices"][0]["message"]["content"]
    report = call("GET", "/admin/usage?${query()}", "/admin/usage?group_by=model,day")
    assert report["requests"] == 1 and report["data"][0]["model"] == "demo"
    csv = call("GET", "/admin/usage?${params}", "/admin/usage?group_by=model&format=csv")
    assert csv.splitlines()[0].startswith("model,requests")
    ready = call("GET", "/readyz", "/readyz")
    assert {d["model"] for d in ready["deployments"]} == {"demo", "other", "slow"}
    rotated = call("POST", "/admin/keys/${row.id}/rotate", f"/admin/keys/{key['id']}/rotate",
                   {"grace_seconds": 0}, 201)
    assert rotated["rotated_from"] == key["id"] and rotated["key"] != key["key"]
    call("DELETE", "/admin/keys/${row.id}", f"/admin/keys/{rotated['id']}")
    for kind in ("users", "teams", "orgs"):
        call("DELETE", "/admin/${kind}/${row.id}", f"/admin/{kind}/{ids[kind]}")

    # Files, batches and vector stores: an upload as the console's FormData sends it (with
    # an expiry in hours), a batch run and cancelled, a store made, searched and deleted.
    lines = b"".join(json.dumps({"custom_id": f"r{i}", "method": "POST",
                                 "url": "/v1/chat/completions", "body": {
                                     "model": "slow", "messages": [
                                         {"role": "user", "content": "hi"}]}}).encode() + b"\n"
                     for i in range(20))
    batch_file = call("POST", "/v1/files", "/v1/files", files={"file": ("in.jsonl", lines)},
                      data={"purpose": "batch", "expires_after[anchor]": "created_at",
                            "expires_after[seconds]": "7200"})
    assert batch_file["expires_at"] == batch_file["created_at"] + 7200
    notes = call("POST", "/v1/files", "/v1/files", files={"file": ("notes.txt", b"zebra " * 20)},
                 data={"purpose": "assistants"})
    listed = call("GET", "/v1/files", "/v1/files")["data"]
    assert [f["id"] for f in listed] == [notes["id"], batch_file["id"]]
    assert call("GET", "/v1/files/${row.id}/content",
                f"/v1/files/{notes['id']}/content") == "zebra " * 20
    batch = call("POST", "/v1/batches", "/v1/batches", {
        "input_file_id": batch_file["id"], "endpoint": "/v1/chat/completions",
        "completion_window": "24h"})
    assert call("GET", "/v1/batches?limit=100", "/v1/batches?limit=100")["data"][0]["id"] \
        == batch["id"]
    assert call("POST", "/v1/batches/${row.id}/cancel",
                f"/v1/batches/{batch['id']}/cancel")["status"] in ("cancelling", "cancelled")
    store = call("POST", "/v1/vector_stores", "/v1/vector_stores",
                 {"name": "notes", "file_ids": [notes["id"]]})
    indexed = None
    for _ in range(200):
        indexed = call("GET", "/v1/vector_stores?limit=100", "/v1/vector_stores?limit=100")
        if indexed["data"][0]["status"] == "completed":
            break
        time.sleep(0.05)
    assert indexed is not None and indexed["data"][0]["file_counts"]["completed"] == 1
    hits = call("POST", "/v1/vector_stores/${stores.value}/search",
                f"/v1/vector_stores/{store['id']}/search", {"query": "zebra",
                                                            "max_num_results": 5})
    assert hits["data"][0]["filename"] == "notes.txt"
    call("DELETE", "/v1/vector_stores/${row.id}", f"/v1/vector_stores/{store['id']}")
    call("DELETE", "/v1/files/${row.id}", f"/v1/files/{notes['id']}")
    assert sorted(set(made)) == console_calls()


def test_the_console_is_served_with_a_strict_policy(start_gateway: Any) -> None:
    server = start_gateway(tenancy_config())
    http = httpx.Client(base_url=server.url, timeout=30)
    assert http.get("/ui").status_code == 308
    page = http.get("/ui", follow_redirects=True)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    # Everything the page loads is its own (the policy would refuse the rest anyway).
    for name in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert "//" not in name
        if name.startswith("data:"):  # the empty favicon
            continue
        loaded = http.get(f"/ui/{name}")
        assert loaded.status_code == 200, name
        assert loaded.headers["content-type"].split(";")[0] in ("text/javascript", "text/css")
    assert http.get("/ui/sse.mjs").headers["content-type"].startswith("text/javascript")
    # No inline script or handler: the policy forbids them, so they would silently not run.
    for source in (page.text, (CONSOLE / "app.mjs").read_text()):
        assert not re.search(r"<script>|\son[a-z]+=\"|innerHTML|outerHTML|insertAdjacentHTML",
                             source)
    for path in ("/ui/nope.js", "/ui/..%2Froutes.py", "/ui/__init__.py"):
        missing = http.get(path)
        assert missing.status_code == 404, path
        assert missing.json()["error"]["code"] == "unknown_url"


def test_the_console_can_be_switched_off(start_gateway: Any) -> None:
    server = start_gateway({**tenancy_config(), "server": {"ui": False}})
    response = httpx.get(f"{server.url}/ui/", timeout=30)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"


# -- the console's own stream decoding, under Node --------------------------------------------
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="Node.js not installed: the console's "
                                "JavaScript is not run (apt-get install nodejs)")


def run_node(script: str, payload: Any) -> Any:
    module = (CONSOLE / "sse.mjs").as_uri()
    done = subprocess.run(
        [NODE or "node", "--input-type=module", "-e",
         f'import * as sse from "{module}";\nimport {{ readFileSync }} from "node:fs";\n'
         f"const input = JSON.parse(readFileSync(0, 'utf8'));\n{script}"],
        input=json.dumps(payload), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


DECODE = """
const out = input.map((pieces) => {
  const decoder = new sse.SSEDecoder();
  const events = pieces.flatMap((piece) => decoder.push(piece));
  return [...events, ...decoder.end()].map((e) => [e.event, e.data]);
});
process.stdout.write(JSON.stringify(out));
"""


def python_events(text: str) -> list[list[str]]:
    """The gateway's own decoder's reading of the same stream."""
    decoder = SSEDecoder()
    events = decoder.feed(text.encode()) + decoder.feed(b"\n\n")  # the end ends the last event
    return [[event.event or "message", event.data.decode()] for event in events]


@needs_node
@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_the_console_reads_events_as_the_gateway_does_wherever_reads_cut(ending: str) -> None:
    text = ("data: {\"a\":1}\n\n: keep-alive\n\nevent: message_start\ndata: {\"b\":2}\n\n"
            "data: first\ndata: second\n\ndata:no space\n\nid: 7\ndata: [DONE]\n\n"
            "data: the last, unterminated").replace("\n", ending)
    expected = python_events(text)
    assert [event for _, event in expected][-1] == "the last, unterminated"
    rng = random.Random(7)
    splits = [[text]] + [[text[:i], text[i:]] for i in range(1, len(text))]
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(2, 12)))
        splits.append([text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)])
    splits.append(list(text))  # one character a read
    assert all(events == expected for events in run_node(DECODE, splits))


FOLD = """
const [streamed, whole] = input;
const decoder = new sse.SSEDecoder();
const answer = sse.emptyAnswer();
for (const piece of streamed) {
  for (const event of decoder.push(piece)) {
    if (event.data !== "[DONE]") sse.applyChunk(answer, JSON.parse(event.data));
  }
}
decoder.end();
process.stdout.write(JSON.stringify([answer, sse.answerOf(whole)]));
"""


@needs_node
def test_the_playground_assembles_a_real_stream_as_the_openai_client_does(
        start_gateway: Any) -> None:
    server = start_gateway(tenancy_config())
    body = {"model": "demo", "max_tokens": 8,
            "messages": [{"role": "user", "content": "Tell me about streams, résumé ✓"}]}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {MASTER_KEY}"},
                      json={**body, "stream": True,
                            "stream_options": {"include_usage": True}}) as response:
        raw = b"".join(response.iter_raw())
    whole = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30,
                       headers={"authorization": f"Bearer {MASTER_KEY}"}).json()
    # Reads that cut the text anywhere (UTF-8 is decoded before the console's decoder sees it).
    text = raw.decode()
    rng = random.Random(3)
    cuts = sorted(rng.sample(range(1, len(text)), 20))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    streamed, unstreamed = run_node(FOLD, [pieces, whole])
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=MASTER_KEY)
    chunks = list(client.chat.completions.create(**body, stream=True,
                                                 stream_options={"include_usage": True}))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content  # the demo model answered something
    assert streamed["content"] == unstreamed["content"] == content
    assert streamed["finishReason"] == unstreamed["finishReason"] == "length"
    assert streamed["usage"]["completion_tokens"] == chunks[-1].usage.completion_tokens == 8
    assert unstreamed["usage"] == whole["usage"]


@needs_node
def test_an_error_in_the_stream_is_raised_with_its_message() -> None:
    script = """
try {
  sse.applyChunk(sse.emptyAnswer(), {error: {message: "upstream went away", type: "api_error"}});
  process.stdout.write(JSON.stringify("no error"));
} catch (error) {
  process.stdout.write(JSON.stringify([error.message, sse.errorMessage(429,
    '{"error": {"message": "Rate limit reached"}}'), sse.errorMessage(502, "<html>bad gateway")]));
}
"""
    assert run_node(script, None) == ["upstream went away", "429: Rate limit reached",
                                      "502: <html>bad gateway"]
