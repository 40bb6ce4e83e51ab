"""The analyst's page in a real browser: Debian's chromium driven by playwright, against the
dashboard served by uvicorn on loopback over a real monitor database. Load, see the incidents,
filter, open an entity (chart with dates and gaps), label a document and judge an alert, reload
and see both as stored (and in the database), live updates, text shown as text, token access.
Skips when chromium (/usr/bin/chromium: `apt-get install chromium`) or playwright is missing."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "browser-token"

if not CHROMIUM.is_file():
    pytest.skip(f"chromium not found at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
expect = sync_api.expect
pytest.importorskip("uvicorn", reason="the dashboard needs the serve extra")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """The dashboard under uvicorn in a thread, on a free loopback port."""

    def __init__(self, db: Path, token: str | None = None):
        import uvicorn

        from core.serving.server import uvicorn_config
        from solutions.finance.dashboard import DashboardAccess, create_app

        self.port = _free_port()
        app = create_app(db, access=DashboardAccess(token=token), poll_seconds=0.5)
        self.server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", self.port))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the dashboard did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def db(dashboard_db, tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("browser") / "monitor.db"
    shutil.copy(dashboard_db, copy)
    return copy


@pytest.fixture(scope="module")
def served(db):
    server = Served(db)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    assert page.errors == []  # no script error on any page
    context.close()


def _expected_segments(db: Path, entity: str) -> int:
    """Runs of adjacent windows of an entity (each a separate line on the chart)."""
    rows = sqlite3.connect(db).execute("SELECT window_start, window_size FROM aggregates WHERE entity=? "
                                       "ORDER BY window_start", (entity,)).fetchall()
    return 1 + sum(1 for (a, size), (b, _) in zip(rows, rows[1:]) if b != a + size)


def test_incidents_filter_drill_down_label_verdict_and_reload(page, served, db):
    page.goto(served.url)
    cards = page.locator(".incident")
    cards.first.wait_for()
    assert cards.evaluate_all("cs => cs.map(c => [c.dataset.entity, c.dataset.severity])") == [
        ["BRDG", "high"], ["HALO", "high"], ["ORBT", "medium"]]  # alerts first, most severe first
    assert "3 of 3 incidents" in page.locator("#incident-count").inner_text()

    page.select_option("#f-severity", "high")  # filters
    expect(cards).to_have_count(2)
    page.select_option("#f-severity", "low")
    page.fill("#f-entity", "orb")
    expect(cards).to_have_count(1)
    assert cards.first.get_attribute("data-entity") == "ORBT"
    page.fill("#f-entity", "")
    expect(cards).to_have_count(3)

    page.locator(".incident[data-entity=BRDG] .entity-link").click()  # drill down: chart + evidence
    rows = page.locator("#docs tbody tr")
    rows.first.wait_for()
    assert page.locator("#entity-title").inner_text() == "BRDG"
    chart = page.locator("#chart svg")
    assert chart.get_attribute("data-segments") == str(_expected_segments(db, "BRDG"))
    assert page.locator("#chart .alert-band").count() == 5
    ticks = page.locator("#chart .tick, #chart .tick-date").evaluate_all("ts => ts.map(t => t.textContent)")
    assert any(t == "Mar 10" for t in ticks) and any("2026" in t for t in ticks)  # dates on the axis
    first = rows.first
    assert "keyword-stub@test" in first.inner_text() and "negative" in first.inner_text()
    doc_id = first.get_attribute("data-doc-id")
    mark = first.locator("td.text mark.ev-negative")  # the sentence behind the score, marked in the text
    expect(mark).to_have_count(1)
    assert mark.inner_text() and mark.inner_text() in first.locator("td.text").inner_text()
    assert "sentence" in first.locator(".doc-score").inner_text()

    first.locator("select.label-select").select_option("neutral")  # label a document
    page.locator(f'#docs tr[data-doc-id="{doc_id}"] .stored').wait_for()
    page.once("dialog", lambda dialog: dialog.accept("a scheduled investor call"))
    page.locator(".incident[data-entity=ORBT] .alert button.false-alarm").click()  # judge an alert
    page.locator(".incident[data-entity=ORBT] .verdict").wait_for()

    page.reload()  # the address keeps the open entity; both come back from the database
    stored = page.locator(f'#docs tr[data-doc-id="{doc_id}"] .stored')
    stored.wait_for()
    assert "stored: neutral" in stored.inner_text()
    assert page.locator(f'#docs tr[data-doc-id="{doc_id}"] select.label-select').input_value() == "neutral"
    verdict = page.locator(".incident[data-entity=ORBT] .verdict").inner_text()
    assert "false alarm" in verdict and "a scheduled investor call" in verdict
    con = sqlite3.connect(db)
    assert con.execute("SELECT label, previous_label, model_version FROM document_labels WHERE doc_id=?",
                       (doc_id,)).fetchone() == ("neutral", "negative", "keyword-stub@test")
    assert con.execute("SELECT verdict, note FROM alert_verdicts").fetchall() == [
        ("false_alarm", "a scheduled investor call")]


def test_new_alerts_appear_without_a_reload(page, served, db):
    page.goto(served.url)
    page.locator(".incident").first.wait_for()
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("INSERT INTO alerts (entity, rule, window_start, window_end, value, baseline, detail, evidence, "
                "created_at) VALUES ('KLRX', 'volume_spike', 1773000000, 1773003600, 30, 1, "
                "'30 documents vs 1.00 per window in the baseline', '[]', 0)")
    con.close()
    page.locator(".incident[data-entity=KLRX]").wait_for(timeout=10_000)  # the page polls every 0.5 s here


def test_stored_text_is_shown_as_text_never_run(page, served):
    page.goto(served.url + "#entity=ACME")
    row = page.locator('#docs tr[data-doc-id="html1"]')
    row.wait_for()
    assert "<img src=x" in row.locator("td.text").inner_text()
    assert page.locator("#docs img, #docs script").count() == 0
    assert page.evaluate("window.__xss") is None
    assert "[U+202E]slaes drocer[U+202C]" in row.locator("td.text").inner_text()  # the override shown, not obeyed


def test_with_a_token_the_page_asks_for_it_and_takes_it_from_the_fragment(browser, db):
    server = Served(db, token=TOKEN)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(server.url)
        page.locator("#token-box").wait_for(state="visible")
        assert page.locator(".incident").count() == 0
        page.fill("#token-input", TOKEN)
        page.click("#token-save")
        page.locator(".incident").first.wait_for()

        fresh = context.new_page()  # a new tab: sessionStorage is per tab, the fragment carries the token
        fresh.goto(server.url + "#token=" + TOKEN)
        fresh.locator(".incident").first.wait_for()
        assert "token" not in fresh.url  # taken out of the address bar at once
    finally:
        context.close()
        server.stop()
