"""The dashboard in a real browser: Debian's headless Chromium opens the index and a
run page from disk (file://), driven by Playwright, which uses that binary and
downloads nothing. Each page must render its sections, draw its charts with
Chart.js, log no console error, raise no page error and request nothing but its
own file. Screenshots go to test-artifacts/.

Without /usr/bin/chromium (``apt-get install chromium``) the tests are skipped,
except under CI=true, where that is a failure (.ci/run installs it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from quality.dashboard import run_page_name

from .fixtures import BLOCKED_MESSAGE, BUSAN_FEB, SCRIPT_EXAMPLE

CHROMIUM_VARIABLE = "OMOP_ETL_TEST_CHROMIUM"
CHROMIUM_DEFAULT = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

INDEX_SECTIONS = ("site-status", "runs", "row-count-trends")
RUN_SECTIONS = (
    "run-header",
    "checks-summary",
    "failing-checks",
    "contract-results",
    "rejects",
    "flags",
    "mapping-coverage",
    "unmapped-codes",
    "row-counts",
)

# per canvas: its size and whether Chart.js made a chart of it (with how many datasets)
CHARTS_JS = """() => Array.from(document.querySelectorAll("canvas")).map((c) => {
  const chart = Chart.getChart(c);
  return {id: c.id, width: c.clientWidth, height: c.clientHeight,
          type: chart ? chart.config.type : null,
          datasets: chart ? chart.data.datasets.length : 0,
          points: chart ? chart.data.labels.length : 0};
})"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true needs the browser test to run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium from the system, or a skip (a failure under CI=true)."""
    executable = os.environ.get(CHROMIUM_VARIABLE, CHROMIUM_DEFAULT)
    if not (Path(executable).is_file() and os.access(executable, os.X_OK)):
        _unavailable(
            f"no Chromium at {executable} ({CHROMIUM_VARIABLE}); "
            "install Debian's package: apt-get install chromium"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class _Visit:
    """A page opened in a fresh context, with everything it logged and requested."""

    def __init__(self, browser, path: Path):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on(
            "console",
            lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None,
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.url = path.as_uri()
        self.page.goto(self.url, wait_until="load")

    def charts(self) -> list[dict]:
        return self.page.evaluate(CHARTS_JS)

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / name), full_page=True)

    def check_clean(self) -> None:
        assert self.errors == []
        foreign = [u for u in self.requests if not u.startswith(("file:", "data:", "blob:"))]
        assert foreign == [], "the page requested something from the network"

    def close(self) -> None:
        self.context.close()


def _check_sections(visit: _Visit, ids: tuple[str, ...]) -> None:
    for section in ids:
        locator = visit.page.locator(f"section#{section}")
        assert locator.count() == 1, section
        assert locator.is_visible(), section
        assert locator.locator("h2, h1").count() >= 1, section


def test_index_in_chromium(browser, dashboard: Path) -> None:
    visit = _Visit(browser, dashboard)
    try:
        _check_sections(visit, INDEX_SECTIONS)
        charts = visit.charts()
        assert [c["id"] for c in charts] == ["trend-1-chart", "trend-2-chart"]
        for chart in charts:
            assert chart["type"] == "line", chart
            assert chart["width"] > 200 and chart["height"] > 200, chart
            assert chart["datasets"] == 15 and chart["points"] == 2, chart
        assert visit.page.get_attribute("html", "data-charts") == "2"
        # the canvas was drawn on: not all pixels blank
        inked = visit.page.evaluate(
            """() => { const c = document.querySelector('canvas');
                 const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                 let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"""
        )
        assert inked > 1000
        status = visit.page.locator("#site-status")
        assert "Not published." in status.inner_text()
        assert " ".join(BLOCKED_MESSAGE.split()) in " ".join(status.inner_text().split())
        assert visit.page.locator("#runs tbody tr").count() == 4
        visit.screenshot("dashboard-index.png")
        # the index's link opens the blocked run's page, from disk as well
        visit.page.locator(f'#runs a[href="{run_page_name(BUSAN_FEB)}"]').click()
        visit.page.wait_for_load_state("load")
        assert visit.page.url.endswith(run_page_name(BUSAN_FEB))
        assert "busan_university" in visit.page.locator("#run-header h1").inner_text()
        visit.check_clean()
    finally:
        visit.close()


def test_run_page_in_chromium(browser, dashboard: Path) -> None:
    visit = _Visit(browser, dashboard.parent / run_page_name(BUSAN_FEB))
    try:
        _check_sections(visit, RUN_SECTIONS)
        charts = visit.charts()
        assert len(charts) == 1
        chart = charts[0]
        assert chart["id"] == "checks-chart" and chart["type"] == "bar"
        assert chart["width"] > 200 and chart["height"] > 150
        assert chart["datasets"] == 4 and chart["points"] == 6
        header = visit.page.locator("#run-header").inner_text()
        assert "blocked" in header and "isForeignKey" in header
        failing = visit.page.locator("#failing-checks tbody tr")
        assert failing.count() == 3
        assert "312" in failing.first.inner_text() and "3.18%" in failing.first.inner_text()
        # the example value with markup is text on the page, not an element
        assert visit.page.locator("#failing-checks script").count() == 0
        assert SCRIPT_EXAMPLE in visit.page.locator("#failing-checks").inner_text()
        visit.screenshot("dashboard-run-blocked.png")
        visit.check_clean()
    finally:
        visit.close()
