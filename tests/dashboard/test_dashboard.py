"""The QA dashboard's pages, read as HTML: every run has a page, the index links to
them, a blocked run says why, failing checks show their numbers, nothing loads from
the network, and nothing the dashboard must not show (or must escape) leaks."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

import duckdb

from quality.dashboard import build_dashboard, run_page_name
from quality.dashboard.build import normalize_status
from quality.results import create_results_schema

from .fixtures import (
    BLOCKED_MESSAGE,
    BUSAN_FEB,
    BUSAN_JAN,
    FORBIDDEN_IDS,
    RUNS,
    SCRIPT_EXAMPLE,
    SEOUL_FEB,
    SEOUL_JAN,
)


class _Page(HTMLParser):
    """Tags with attributes, inline scripts, and the table rows of each section."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.rows: dict[str, list[list[str]]] = {}
        self._section: str | None = None
        self._script: dict[str, str | None] | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_head_rows = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "section":
            self._section = attributes.get("id")
            self.rows.setdefault(self._section or "", [])
        elif tag == "script":
            self._script, self._text = attributes, []
        elif tag == "thead":
            self._in_head_rows = True
        elif tag == "tr" and not self._in_head_rows:
            self._row = []
        elif tag in {"td", "th"} and self._row is not None:
            self._cell = []
        elif tag in {"div", "br", "code", "span"} and self._cell is not None:
            self._cell.append(" ")  # words of separate elements stay apart

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None
        elif tag == "script" and self._script is not None:
            self.scripts.append((self._script, "".join(self._text)))
            self._script = None
        elif tag == "thead":
            self._in_head_rows = False
        elif tag in {"td", "th"} and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.setdefault(self._section or "", []).append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._script is not None:
            self._text.append(data)
        elif self._cell is not None:
            self._cell.append(data)


def _pages(index: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(index.parent.glob("*.html"))}


def test_a_page_for_every_run_and_the_index_links_each(dashboard: Path) -> None:
    assert dashboard.name == "index.html"
    run_pages = sorted(p.name for p in dashboard.parent.glob("run-*.html"))
    expected = sorted(run_page_name(run[0]) for run in RUNS)
    assert run_pages == expected
    links = {a.get("href") for tag, a in _Page(dashboard.read_text()).tags if tag == "a"}
    assert set(expected) <= links
    for name in expected:  # and every run page leads back
        page = _Page((dashboard.parent / name).read_text())
        assert "index.html" in {a.get("href") for tag, a in page.tags if tag == "a"}


def test_runs_are_listed_newest_first(dashboard: Path) -> None:
    rows = _Page(dashboard.read_text()).rows["runs"]
    listed = [(r[0], r[1]) for r in rows]
    newest_first = sorted(RUNS, key=lambda r: r[4], reverse=True)
    assert listed == [(r[1], r[2]) for r in newest_first]
    blocked = rows[0]
    assert blocked[2] == "blocked"
    assert blocked[7] == "3 1 fatal"  # checks failed, of which fatal


def test_the_blocked_run_says_why(dashboard: Path) -> None:
    index = dashboard.read_text()
    escaped = BLOCKED_MESSAGE.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert escaped in index
    sites = _Page(index)
    cards = [a for tag, a in sites.tags if tag == "article"]
    assert [c["aria-label"] for c in cards] == ["Site busan_university", "Site seoul_general"]
    busan = index[index.index('aria-label="Site busan_university"') :]
    busan = busan[: busan.index("</article>")]
    assert "blocked" in busan and "Not published." in busan and escaped in busan
    assert "Last published: batch" in busan and run_page_name(BUSAN_JAN) in busan
    run = (dashboard.parent / run_page_name(BUSAN_FEB)).read_text()
    assert escaped in run and 'class="badge blocked"' in run


def test_failing_checks_with_violated_rows_and_percentages(dashboard: Path) -> None:
    page = _Page((dashboard.parent / run_page_name(BUSAN_FEB)).read_text())
    rows = page.rows["failing-checks"]
    names = [r[0].split(" The number")[0] for r in rows]  # the name, then its description
    # fatal first, then by % violated
    assert names == [
        "isForeignKey",
        "standardConceptRecordCompleteness",
        "plausibleValueHigh",
    ]
    fatal = rows[0]
    assert fatal[1:5] == ["visit_occurrence", "person_id", "—", "fatal"]
    assert fatal[5] == "312 of 9,800"
    assert fatal[6] == "3.18%"
    assert fatal[7] == "0%"
    assert fatal[8] == "V-1288 V-1290"
    completeness = rows[1]
    assert completeness[5:8] == ["248 of 3,050", "8.13%", "5%"]
    assert SCRIPT_EXAMPLE in completeness[8]  # shown as text...
    assert rows[2][3] == "3004249 unit 8876"
    summary = page.rows["checks-summary"]
    assert ["All checks", "16", "3", "0", "0", "19", "84.2%"] in summary
    assert summary[0][1:] == ["Verification", "5", "1", "0", "0", "6", "83.3%"]
    contracts = page.rows["contract-results"]
    assert contracts[0][3] == "failed" and contracts[-1][3] == "passed"
    assert ["staging.person", "expect_column_values_to_be_unique", "person_source_value",
            "failed", "200", "3", "1.50%"] in contracts  # fmt: skip
    rejects = page.rows["rejects"]
    assert rejects[0] == ["duplicate_row", "40", "labs.csv (40)"]
    assert ["unknown_patient", "17", "diagnoses.csv (12), labs.csv (5)"] in rejects
    assert rejects[-1] == ["All rules", "60", ""]
    flags = page.rows["flags"]
    assert [r[0] for r in flags] == [
        "unknown_visit",
        "scrubbed:note_text",
        "after_death",
        "All rules",
    ]
    coverage = page.rows["mapping-coverage"]
    assert coverage[0][:4] == ["measurement", "9,021", "9,310", "96.9%"]
    unmapped = page.rows["unmapped-codes"]
    assert unmapped[0] == ["KCD7", "E11.9X", "Type 2 diabetes, unspecified (local suffix)", "125"]
    counts = {r[0]: r[1:] for r in page.rows["row-counts"]}
    assert counts["measurement"] == ["9,310", "8,330", "+980"]


def test_a_run_without_failures_and_with_an_errored_check(dashboard: Path) -> None:
    page = _Page((dashboard.parent / run_page_name(SEOUL_FEB)).read_text())
    assert page.rows["failing-checks"] == [["plausibleUnitConceptIds", "measurement",
                                            "unit_concept_id", "characterization"]]  # fmt: skip
    summary = page.rows["checks-summary"]
    assert ["All checks", "17", "0", "1", "1", "19", "100.0%"] in summary
    first = _Page((dashboard.parent / run_page_name(SEOUL_JAN)).read_text())
    assert first.rows["failing-checks"][0][0].startswith("sourceValueCompleteness")
    assert "Previous run" not in (dashboard.parent / run_page_name(SEOUL_JAN)).read_text()


def test_pages_load_nothing_from_the_network(dashboard: Path) -> None:
    for name, html in _pages(dashboard).items():
        page = _Page(html)
        for tag, attrs in page.tags:
            assert not (tag == "script" and "src" in attrs), name
            assert not (tag == "link" and "stylesheet" in (attrs.get("rel") or "")), name
            for attribute in ("src", "href", "srcset", "data", "action", "poster"):
                value = (attrs.get(attribute) or "").strip().lower()
                assert not value.startswith(("http://", "https://", "//")), (name, tag, attrs)
        styles = html[html.index("<style>") : html.index("</style>")]
        assert "@import" not in styles and "url(" not in styles and "@font-face" not in styles
        assert "sourceMappingURL" not in html
        # the page's CSP allows its own inline scripts, by hash, and nothing else
        csp = next(
            a["content"] for t, a in page.tags if a.get("http-equiv") == "Content-Security-Policy"
        )
        assert "default-src 'none'" in csp
        executable = [text for attrs, text in page.scripts if "type" not in attrs]
        assert len(executable) == 2
        for text in executable:
            digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in csp, name
        assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]


def test_no_identifiers_and_everything_escaped(dashboard: Path) -> None:
    pages = _pages(dashboard)
    assert len(pages) == 5
    for name, html in pages.items():
        for identifier in FORBIDDEN_IDS:
            assert identifier not in html, (name, identifier)
        assert SCRIPT_EXAMPLE not in html, name
        assert "<failing checks>" not in html, name
        # chart data is JSON with markup characters escaped
        for attrs, text in _Page(html).scripts:
            if attrs.get("type") == "application/json":
                assert "<" not in text and ">" not in text
    blocked = pages[run_page_name(BUSAN_FEB)]
    assert "&lt;script&gt;alert(&#39;example&#39;)&lt;/script&gt;" in blocked


def test_run_page_names_are_safe() -> None:
    assert run_page_name("seoul_general-2026-01-31-r1") == "run-seoul_general-2026-01-31-r1.html"
    for weird in ("../../etc/passwd", "a/b", "a\\b", "run id with spaces", "..", "", "<x>", "한글"):
        name = run_page_name(weird)
        assert re.fullmatch(r"run-[A-Za-z0-9][A-Za-z0-9_.-]*\.html", name), name
        assert "/" not in name and ".." not in name.removesuffix(".html")
    assert run_page_name("a/b") != run_page_name("a_b") != run_page_name("a:b")
    assert len(run_page_name("x" * 500)) < 120


def test_status_spellings() -> None:
    assert normalize_status("PASSED") == normalize_status("pass") == "Passed"
    assert normalize_status("failed") == "Failed"
    assert normalize_status("NOT_APPLICABLE") == normalize_status("Not Applicable")
    assert normalize_status("isError") == "Error"
    assert normalize_status(None) is None and normalize_status("running") is None


def test_empty_and_missing_results(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "none.duckdb"))
    index = build_dashboard(con, tmp_path / "none")  # no results schema at all
    assert "No runs recorded yet" in index.read_text()
    create_results_schema(con)  # all tables, all empty
    index = build_dashboard(con, tmp_path / "empty")
    assert "No runs recorded yet" in index.read_text()
    assert [p.name for p in index.parent.iterdir()] == ["index.html"]
    con.close()


def test_an_old_run_log_alone(tmp_path: Path) -> None:
    """A warehouse from before the results tables: a run log without run_id."""
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    con.execute("create schema results")
    con.execute(
        "create table results.run_log (site varchar, batch_id varchar, status varchar, "
        "finished_at timestamp, rows_read bigint, rows_loaded bigint, rows_rejected bigint, "
        "rows_filtered bigint, message varchar)"
    )
    con.execute(
        "insert into results.run_log values "
        "('tiny', 'b1', 'published', '2026-01-01 10:00', 10, 9, 1, 0, null), "
        "('tiny', 'b2', 'blocked', '2026-02-01 10:00', 10, 2, 8, 0, 'too many <rejects>'), "
        "('tiny', 'b2', 'blocked', null, 10, 2, 8, 0, 'not finished')"
    )
    index = build_dashboard(con, tmp_path / "out")
    con.close()
    html = index.read_text()
    assert "too many &lt;rejects&gt;" in html
    runs = _Page(html).rows["runs"]
    assert [r[1] for r in runs] == ["b2", "b1", "b2"]
    assert runs[-1][3] == "—"  # unfinished last
    pages = sorted(index.parent.glob("run-*.html"))
    assert len(pages) == 3
    for page in pages:
        text = page.read_text()
        assert "No check results for this run." in text
        assert "No row counts recorded for this run" in text


def test_rebuilding_replaces_the_pages(results_warehouse: Path, tmp_path: Path) -> None:
    con = duckdb.connect(str(results_warehouse), read_only=True)
    try:
        first = build_dashboard(con, tmp_path / "site" / "qa")
        before = sorted(p.name for p in first.parent.iterdir())
        second = build_dashboard(con, tmp_path / "site" / "qa")
    finally:
        con.close()
    assert first == second
    assert sorted(p.name for p in second.parent.iterdir()) == before
    assert not list(second.parent.glob("*.tmp"))


def test_reads_only_known_columns_and_never_the_ones_with_row_values() -> None:
    from quality.dashboard.build import COLUMNS
    from quality.results import TABLES

    for table, columns in COLUMNS.items():
        defined = {spec.split()[0] for spec in TABLES[table].split(",")}
        assert set(columns) <= defined, table
    assert "query_text" not in COLUMNS["check_results"]
    assert "error" not in COLUMNS["check_results"]
    assert "details" not in COLUMNS["contract_results"]
