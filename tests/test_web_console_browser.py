"""The web console in a real browser (headless Chromium): each tab used as a person would, with
no script error and nothing refused by its content security policy. Skipped without Chromium."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import demo_config
from tests.support.admin import MASTER_KEY, tenancy_config
from tests.support.browser import Browser, Page, chromium

CHROMIUM = chromium()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed: the web console is "
                       "not tried in a browser (apt-get install chromium)"),
]


async def submit(page: Page, form: str, values: dict[str, str]) -> None:
    """Fill ``values`` (by name) into the form ``form`` selects, then submit it."""
    await page.evaluate(
        f"{{ const form = {form}; const values = {json.dumps(values)};"
        " for (const [name, value] of Object.entries(values))"
        " form.querySelector(`[name=${name}]`).value = value; form.requestSubmit(); }")


async def ask(base_url: str, key: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"{base_url}/v1/chat/completions",
                               headers={"authorization": f"Bearer {key}"},
                               json={"model": "demo", "messages": [{"role": "user",
                                                                    "content": "x"}]})


def assert_clean(page: Page, refusals: str) -> None:
    """No script exception, and no console error but failed requests whose text has
    ``refusals`` (the HTTP refusals a test asked for)."""
    assert page.exceptions == []
    unexpected = [entry for entry in page.logs if entry["level"] == "error" and not (
        entry["source"] == "network" and refusals in entry["text"])]
    assert unexpected == []


def text(selector: str) -> str:
    return f"document.querySelector({json.dumps(selector)})?.innerText"


async def test_the_console_in_a_browser(start_gateway: Any, tmp_path: Path) -> None:
    config = tenancy_config()
    config["models"].append({"name": "slow", "provider": "demo", "token_delay_ms": 100})
    server = start_gateway(config)
    browser = Browser(CHROMIUM or "", tmp_path / "profile")
    try:
        page = await browser.page()
        await page.send("Page.navigate", url=f"{server.url}/ui/")
        # No key yet: the gateway has a master key, so the playground says why it cannot list.
        assert (await page.until(text("#status"))).startswith("no key")
        assert "401" in await page.until(text("#transcript .error"))

        await page.evaluate(f"document.querySelector('#key').value = {json.dumps(MASTER_KEY)};"
                            " document.querySelector('#key-form').requestSubmit()")
        assert await page.until(f"{text('#status')} === 'admin'")
        await page.until("document.querySelector('#model')?.options.length === 3")

        # A streamed turn, then an unstreamed one that sees the first in its history.
        await page.evaluate("document.querySelector('#prompt').value = 'Hello, console';"
                            " document.querySelector('form.playground').requestSubmit()")
        stats = await page.until(text("#stats"))
        assert "first token" in stats and "finish: stop" in stats and "request req_" in stats
        assert "Hello, console" in await page.evaluate(text("#transcript .assistant .text"))
        await page.evaluate(
            "document.querySelector('#stats').textContent = '';"
            " document.querySelector('#stream').checked = false;"
            " document.querySelector('#max-tokens').value = '5';"
            " document.querySelector('#prompt').value = 'And again';"
            " document.querySelector('form.playground').requestSubmit()")
        stats = await page.until(text("#stats"))
        assert "first token" not in stats and "→ 5 tokens" in stats and "finish: length" in stats
        assert await page.evaluate("document.querySelectorAll('#transcript .turn').length") == 4

        # Stop: a slow stream is cut off, what came is kept, and the next question still works.
        await page.evaluate(
            "document.querySelector('#stats').textContent = '';"
            " document.querySelector('#stream').checked = true;"
            " document.querySelector('#max-tokens').value = '';"
            " document.querySelector('#model').value = 'slow';"
            " document.querySelector('#prompt').value = 'Take your time';"
            " document.querySelector('form.playground').requestSubmit()")
        last = "[...document.querySelectorAll('#transcript .assistant .text')].at(-1)"
        await page.until(f"{last}.textContent.length > 0")
        await page.evaluate("[...document.querySelectorAll('form.playground button')]"
                            ".find((b) => b.textContent === 'Stop').click()")
        stopped = await page.until(f"{last}.textContent.endsWith('(stopped)') && "
                                   f"{last}.textContent")
        assert len(stopped) > len(" (stopped)")
        assert await page.evaluate(text("#stats")) == ""
        await page.evaluate("document.querySelector('#model').value = 'demo';"
                            " document.querySelector('#prompt').value = 'Still there?';"
                            " document.querySelector('form.playground').requestSubmit()")
        assert "finish: stop" in await page.until(text("#stats"))

        # Keys: create one (its secret shown once, and it works), look at its spend, revoke it.
        await page.evaluate("document.querySelector('nav [data-tab=keys]').click()")
        await submit(page, "document.querySelector('form.create')",
                     {"name": "from-the-console", "models": "demo, other", "rpm_limit": "60",
                      "max_budget": "2.5", "budget_period": "daily"})
        secret = await page.until("document.querySelector('.secret code')?.textContent")
        chat = await ask(server.url, secret)
        assert chat.status_code == 200, chat.text
        assert "from-the-console" in await page.until(text("#panel table"))
        await page.evaluate("[...document.querySelectorAll('td.actions button')]"
                            ".find((b) => b.textContent === 'spend').click()")
        spend = await page.until(f"{text('#panel p')}?.includes('spent') && {text('#panel p')}")
        assert "of US$ 2.5" in spend
        # Change its limits: 60 → 30 requests a minute, the budget removed.
        await page.evaluate("[...document.querySelectorAll('td.actions button')]"
                            ".find((b) => b.textContent === 'limits').click()")
        await submit(page, "document.querySelectorAll('form.create')[0]",
                     {"rpm_limit": "30", "max_budget": ""})
        row = await page.until(f"{text('#panel table tbody tr')}?.includes('\\t30\\t') && "
                               f"{text('#panel table tbody tr')}")
        assert row.split("\t")[6:10] == ["30", "—", "—", "daily"]  # rpm, tpm, budget, period
        # Rotate it (no grace): the new secret is shown once and works, the old one is refused.
        await page.evaluate("window.prompt = () => '0'; [...document.querySelectorAll("
                            "'td.actions button')].find((b) => b.textContent === 'rotate').click()")
        rotated = await page.until("document.querySelector('.secret code')?.textContent !== "
                                   f"{json.dumps(secret)} && "
                                   "document.querySelector('.secret code')?.textContent")
        assert rotated.startswith("sk-lp-") and rotated != secret
        assert (await ask(server.url, secret)).status_code == 401
        assert (await ask(server.url, rotated)).status_code == 200
        await page.until(f"{text('#panel table')}.split('\\n').length === 3")  # old and new
        await page.evaluate("window.confirm = () => true; [...document.querySelectorAll("
                            "'td.actions button')].find((b) => b.textContent === 'revoke').click()")
        await page.until("![...document.querySelectorAll('td.actions button')]"
                         ".some((b) => b.textContent === 'revoke')")
        assert (await ask(server.url, rotated)).status_code == 401

        # Tenants: an org is created; a team naming an unknown org shows the gateway's error.
        await page.evaluate("document.querySelector('nav [data-tab=tenants]').click()")
        await page.until("document.querySelectorAll('form.create').length === 3")
        await submit(page, "document.querySelectorAll('form.create')[0]", {"name": "acme"})
        await page.until(f"{text('#panel')}.includes('acme')")
        await submit(page, "document.querySelectorAll('form.create')[1]",
                     {"name": "lost", "org_id": "org_nope"})
        assert "No org with id 'org_nope'" in await page.until(text(".error"))

        # Usage: eight chat requests by model — five answered, the stopped stream (an error:
        # the client went away) and the two refused secrets (errors without a model: refused
        # before their bodies were read); deployments: all three, breakers closed.
        await page.evaluate("document.querySelector('nav [data-tab=usage]').click()")
        totals = await page.until(f"{text('#panel p')}?.includes('requests') && "
                                  f"{text('#panel p')}")
        assert totals.startswith("8 requests") and "errors: 3" in totals
        rows = (await page.until(text("#panel table"))).splitlines()[1:]
        assert sorted(row.split("\t")[:2] for row in rows) == [
            ["demo", "5"], ["slow", "1"], ["—", "2"]]
        await page.evaluate("document.querySelector('nav [data-tab=health]').click()")
        health = await page.until(text("#panel table"))
        assert health.count("closed") == 3

        # A wrong key is reported as such.
        await page.evaluate("document.querySelector('#key').value = 'sk-wrong';"
                            " document.querySelector('#key-form').requestSubmit()")
        assert (await page.until(f"{text('#status')} !== 'admin' && {text('#status')}")
                ).startswith("key refused: 401")

        assert_clean(page, " status of 40")  # the refusals asked for above: HTTP 400 and 401
    finally:
        await browser.close()


async def test_the_playground_of_a_gateway_without_a_master_key(start_gateway: Any,
                                                                tmp_path: Path) -> None:
    """The default install (`llmport serve`, no master key): the playground works with no
    key at all, and the console says there is no admin API rather than refusing a key."""
    server = start_gateway(demo_config())
    browser = Browser(CHROMIUM or "", tmp_path / "profile")
    try:
        page = await browser.page()
        await page.send("Page.navigate", url=f"{server.url}/ui/")
        assert "no admin API" in await page.until(text("#status"))
        await page.until("document.querySelector('#model')?.options.length === 1")
        await page.evaluate("document.querySelector('#prompt').value = 'Hello';"
                            " document.querySelector('form.playground').requestSubmit()")
        assert "finish: stop" in await page.until(text("#stats"))
        assert "offline demo model" in await page.evaluate(text("#transcript .assistant .text"))
        await page.evaluate("document.querySelector('#key').value = 'sk-anything';"
                            " document.querySelector('#key-form').requestSubmit()")
        await page.until("document.querySelector('#model')?.options.length === 1")
        assert "no admin API" in await page.until(text("#status"))
        assert_clean(page, " status of 401")
    finally:
        await browser.close()


async def test_files_batches_and_vector_stores_in_a_browser(start_gateway: Any,
                                                           tmp_path: Path) -> None:
    server = start_gateway(tenancy_config(batches={"poll_interval": 0.05},
                                          rag={"poll_interval": 0.05}))
    browser = Browser(CHROMIUM or "", tmp_path / "profile")
    lines = "".join(json.dumps({"custom_id": f"r{i}", "method": "POST",
                                "url": "/v1/chat/completions", "body": {
                                    "model": "demo", "messages": [
                                        {"role": "user", "content": "hi"}]}}) + "\n"
                    for i in range(3))

    def choose(name: str, content: str) -> str:
        """Put a file in the upload form's file input, as a person picking one would."""
        return ("{ const chosen = new DataTransfer(); chosen.items.add(new File("
                f"[{json.dumps(content)}], {json.dumps(name)})); "
                "document.querySelector('#upload-file').files = chosen.files; }")

    try:
        page = await browser.page()
        await page.send("Page.navigate", url=f"{server.url}/ui/")
        assert (await page.until(text("#status"))).startswith("no key")  # the console runs
        await page.evaluate(f"document.querySelector('#key').value = {json.dumps(MASTER_KEY)};"
                            " document.querySelector('#key-form').requestSubmit()")
        assert await page.until(f"{text('#status')} === 'admin'")

        # Files: upload a batch file (expiring in two hours) and a text file; run the batch.
        await page.evaluate("document.querySelector('nav [data-tab=files]').click()")
        await page.until("document.querySelector('#upload-file') !== null")
        await page.evaluate(choose("in.jsonl", lines))
        await submit(page, "document.querySelector('form.create')",
                     {"purpose": "batch", "hours": "2"})
        await page.until(f"{text('#panel table')}?.includes('in.jsonl')")
        await page.evaluate(choose("notes.txt", "zebra stripes " * 20))
        await submit(page, "document.querySelector('form.create')", {"purpose": "assistants"})
        files = await page.until(f"{text('#panel table')}?.includes('notes.txt') && "
                                 f"{text('#panel table')}")
        rows = {row.split("\t")[1]: row.split("\t") for row in files.splitlines()[1:]}
        assert rows["in.jsonl"][2] == "batch" and rows["in.jsonl"][5] != "—"  # expires
        assert rows["notes.txt"][5] == "—"
        await page.evaluate("window.prompt = () => '/v1/chat/completions'; [...document."
                            "querySelectorAll('td.actions button')].find((b) => b.textContent"
                            " === 'run batch').click()")
        refresh = ("[...document.querySelectorAll('h2 button')]"
                   ".find((b) => b.textContent === 'Refresh')")
        batches = "document.querySelectorAll('#panel table')[1]?.innerText"
        done = await page.until(f"({refresh}.click(), {batches}?.includes('completed') && "
                                f"{batches})")
        assert "3 of 3" in done

        # Vector stores: one made of the text file, indexed, searched, deleted.
        await page.evaluate("document.querySelector('nav [data-tab=stores]').click()")
        await page.until("document.querySelector('form.create') !== null")
        await submit(page, "document.querySelector('form.create')",
                     {"name": "animals", "file_ids": rows["notes.txt"][0]})
        await page.until(f"({refresh}.click(), {text('#panel table')}?.includes('completed'))")
        assert "1 of 1" in await page.evaluate(text("#panel table"))
        await submit(page, "document.querySelector('form.filters')", {"query": "zebra"})
        hits = await page.until(f"{text('#hits table')}")
        assert "notes.txt" in hits and "zebra stripes" in hits
        await page.evaluate("window.confirm = () => true; [...document.querySelectorAll("
                            "'td.actions button')].find((b) => b.textContent === 'delete')"
                            ".click()")
        await page.until(f"{text('#panel')}.includes('Nothing yet.')")
        assert_clean(page, "status of 401")  # the first page, before the key was given
    finally:
        await browser.close()
