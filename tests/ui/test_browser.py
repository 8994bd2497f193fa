"""The playground in a real browser: Debian's chromium driven by Playwright, against the UI
started as `kuberank-server ui` and the shared real server on the embedded model."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from tests.support import LiveServer, free_port

from kuberank_server.ui.examples import EXAMPLE_DOCUMENTS, EXAMPLE_QUERY

pytestmark = [pytest.mark.browser, pytest.mark.engine]

CHROMIUM = "/usr/bin/chromium"  # Debian's (make tools); Playwright never downloads one here
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_START_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Playground:
    url: str
    server_token: str  # given to the UI process through KUBERANK_UI_TOKEN
    log_path: Path


@pytest.fixture(scope="module")
def playground(live_server: LiveServer, artifacts_dir: Path) -> Iterator[Playground]:
    port = free_port()
    server_token = live_server.token(subject="playground")
    log_path = artifacts_dir / "playground-ui.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kuberank_server.commands.cli",
                "ui",
                "--url",
                live_server.url,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=os.environ | {"KUBERANK_UI_TOKEN": server_token},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process, log_path)
        yield Playground(url=url, server_token=server_token, log_path=log_path)
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_until_serving(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + UI_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the UI exited early:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the UI did not serve {url} within {UI_START_TIMEOUT_SECONDS} s; see {log_path}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run `make tools`"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, playground: Playground) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    # The page must work offline: no fonts, scripts or telemetry from anywhere else.
    elsewhere: list[str] = []
    page.on("request", lambda request: _record_if_elsewhere(request.url, playground, elsewhere))
    page.goto(playground.url)
    yield page
    context.close()
    assert elsewhere == []


def _record_if_elsewhere(url: str, playground: Playground, elsewhere: list[str]) -> None:
    if not url.startswith(playground.url):
        elsewhere.append(url)


def submit(
    page: Page, documents: Sequence[str] = EXAMPLE_DOCUMENTS, token: str | None = None
) -> None:
    if token is not None:
        page.get_by_label("Token").fill(token)
    page.get_by_label("Query").fill(EXAMPLE_QUERY)
    page.get_by_label("Documents (one per line)").fill("\n".join(documents))
    page.get_by_role("button", name="Rerank").click()


def browser_storage(page: Page) -> str:
    return str(page.evaluate("JSON.stringify([{...localStorage}, {...sessionStorage}])"))


def test_seed_example_ranks_the_third_document_last(
    page: Page, playground: Playground, artifacts_dir: Path
) -> None:
    submit(page)  # token field left empty: the UI uses its KUBERANK_UI_TOKEN
    result = page.locator("#ranking-result")
    result.locator("table.kr-ranking tbody tr").nth(3).wait_for()
    page.screenshot(path=artifacts_dir / "ui-seed-ranking.png", full_page=True)

    assert result.locator("td.kr-rank").all_inner_texts() == ["1", "2", "3", "4"]
    indexes = result.locator("td.kr-index").all_inner_texts()
    assert sorted(indexes) == ["0", "1", "2", "3"]
    assert indexes[-1] == "2"
    assert result.locator("td.kr-text").last.inner_text() == EXAMPLE_DOCUMENTS[2]
    scores = [float(text) for text in result.locator(".kr-score-value").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    assert result.locator(".kr-bar").count() == 4
    assert "latency" in result.locator(".kr-summary").inner_text()
    # The process's token is used server-side only: never sent to the browser.
    assert playground.server_token not in page.content()
    assert playground.server_token not in httpx.get(f"{playground.url}/config").text
    assert playground.server_token not in browser_storage(page)


def test_bad_token_shows_the_auth_error_and_never_the_token(
    page: Page, playground: Playground, artifacts_dir: Path
) -> None:
    bad_token = f"bad-token-{secrets.token_hex(8)}"
    submit(page, token=bad_token)
    error = page.locator("#ranking-result .kr-error")
    error.wait_for()
    page.screenshot(path=artifacts_dir / "ui-bad-token.png", full_page=True)

    assert error.get_attribute("role") == "alert"
    assert error.locator("strong").inner_text().startswith("Token rejected (401)")
    assert "Paste a valid token" in error.inner_text()
    assert page.locator("#ranking-result table.kr-ranking").count() == 0
    assert bad_token not in page.content()
    assert bad_token not in page.locator("body").inner_text()
    assert bad_token not in browser_storage(page)
    assert bad_token not in playground.log_path.read_text()


def test_documents_are_shown_as_typed_never_interpreted(page: Page) -> None:
    # The result component is a Gradio HTML template: markup, JS template and Handlebars
    # syntax in a document must come out as text.
    documents = [
        "<img src=x onerror=\"document.title='pwned'\"> & <b>bold</b>",
        "costs ${1+1} dollars, `backticks`",
        "braces {{value}} {{#each value}}x{{/each}}",
    ]
    submit(page, documents=documents)
    texts = page.locator("#ranking-result td.kr-text")
    texts.nth(2).wait_for()

    assert sorted(texts.all_inner_texts()) == sorted(documents)
    assert page.locator("#ranking-result img, #ranking-result td b").count() == 0
    assert page.title() != "pwned"
