"""Build the QA dashboard from the warehouse's ``results`` schema.

Only ``results`` is read, and of it only counts, rules, check outcomes and source
codes: the columns that may hold row values (``check_results.query_text`` and
``.error``, ``contract_results.details``) are never selected. Every value reaches
the page through Jinja2 with autoescaping on, and chart data through ``tojson``
(HTML-safe JSON in a non-executed ``<script type="application/json">``). Each page
carries a Content-Security-Policy that allows only its own two inline scripts (by
hash) and nothing from the network.

Conventions read from the results (those of OHDSI's DataQualityDashboard):
``check_results.pct_violated_rows`` is a fraction (0..1) and ``threshold_value`` a
percent; ``contract_results.unexpected_percent`` is a percent (Great Expectations).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import jinja2
from markupsafe import Markup, escape

from quality.results import SCHEMA

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
CHART_JS = STATIC / "chart.umd.min.js"
DASHBOARD_JS = STATIC / "dashboard.js"

CATEGORIES = ("Conformance", "Completeness", "Plausibility")
CONTEXTS = ("Verification", "Validation")
PASSED, FAILED, NOT_APPLICABLE, ERROR = "Passed", "Failed", "Not Applicable", "Error"
STATUSES = (PASSED, FAILED, NOT_APPLICABLE, ERROR)
SEVERITIES = ("fatal", "convention", "characterization")  # most severe first
MAX_EXAMPLES = 10  # example source values shown per failing check
MAX_UNMAPPED = 100  # unmapped codes listed per run

# The columns the dashboard reads; nothing else of ``results`` is selected. Left out on
# purpose: check_results.query_text, .error, .sql_file, .execution_time and
# contract_results.details (they may carry row values).
COLUMNS: dict[str, tuple[str, ...]] = {
    "run_log": (
        "run_id",
        "site",
        "batch_id",
        "status",
        "message",
        "started_at",
        "finished_at",
        "rows_read",
        "rows_loaded",
        "rows_rejected",
        "rows_filtered",
    ),
    "check_results": (
        "check_id",
        "check_name",
        "check_level",
        "check_description",
        "cdm_table_name",
        "cdm_field_name",
        "concept_id",
        "unit_concept_id",
        "category",
        "subcategory",
        "context",
        "severity",
        "threshold_value",
        "num_violated_rows",
        "pct_violated_rows",
        "num_denominator_rows",
        "status",
        "examples",
    ),
    "contract_results": (
        "suite",
        "expectation",
        "column_name",
        "success",
        "element_count",
        "unexpected_count",
        "unexpected_percent",
    ),
    "row_counts": ("cdm_table", "rows"),
    "reject_counts": ("source_file", "kind", "rule", "rows"),
    "mapping_coverage": ("cdm_table", "mapped_rows", "rows"),
    "unmapped_top": ("source_vocabulary_id", "source_code", "source_name", "frequency"),
}


# ----------------------------------------------------------------------------- reading


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Results:
    """Reads the results tables that exist; a missing table reads as empty and a
    missing column as null, so an older or partial warehouse still gives a dashboard."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self.columns: dict[str, set[str]] = defaultdict(set)
        for table, column in con.execute(
            "select lower(table_name), lower(column_name) from information_schema.columns "
            "where lower(table_schema) = ? and table_catalog = current_database()",
            [SCHEMA],
        ).fetchall():
            self.columns[table].add(column)

    def has(self, table: str, *columns: str) -> bool:
        have = self.columns.get(table)
        return have is not None and all(c in have for c in columns)

    def select(
        self, table: str, where: str = "", params: Sequence[Any] = (), *, extra: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        """Rows of ``COLUMNS[table]`` (plus ``extra``) as dicts; [] if the table is missing."""
        if not self.has(table):
            return []
        have = self.columns[table]
        names = [*COLUMNS[table], *extra]
        select = ", ".join(_q(c) if c in have else f"null as {_q(c)}" for c in names)
        sql = f"select {select} from {_q(SCHEMA)}.{_q(table)}"
        if where:
            sql += f" where {where}"
        return [
            dict(zip(names, row, strict=True)) for row in self.con.execute(sql, params).fetchall()
        ]

    def for_run(self, table: str, run_id: str | None) -> list[dict[str, Any]]:
        """A table's rows of one run (none for a run without id)."""
        if run_id is None or not self.has(table, "run_id"):
            return []
        return self.select(table, "run_id = ?", [run_id])

    def by_run(self, table: str) -> dict[str, list[dict[str, Any]]]:
        """A (small) table's rows grouped by run_id."""
        if not self.has(table, "run_id"):
            return {}
        grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in self.select(table, "run_id is not null", extra=("run_id",)):
            grouped[row["run_id"]].append(row)
        return grouped


# ----------------------------------------------------------------------------- shaping


def run_page_name(run_id: str) -> str:
    """A file name for a run's page: ``run-<id>.html``, the id made safe for any file
    system and URL; an id that had to be changed gets a short hash of itself, so two
    ids never share a page."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("._-")[:80]
    if not slug or slug != run_id:
        digest = hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:10]
        slug = f"{slug}-{digest}" if slug else digest
    return f"run-{slug}.html"


def normalize_status(status: str | None) -> str | None:
    """A check status as one of STATUSES (DQD writes them several ways), else None."""
    key = re.sub(r"[\s_-]+", " ", (status or "").strip().lower())
    if key in {"passed", "pass"}:
        return PASSED
    if key in {"failed", "fail"}:
        return FAILED
    if key in {"not applicable", "notapplicable", "na", "n/a"}:
        return NOT_APPLICABLE
    if key in {"error", "is error", "iserror", "errored"}:
        return ERROR
    return None


def _severity_rank(severity: str | None) -> int:
    value = (severity or "").strip().lower()
    return SEVERITIES.index(value) if value in SEVERITIES else len(SEVERITIES)


def _pct(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return 100.0 * part / whole


def _examples(raw: str | None) -> tuple[list[str], int]:
    """The example source values of a check (a JSON list) and how many were left out."""
    if raw is None or not str(raw).strip():
        return [], 0
    try:
        parsed = json.loads(raw)
    except (TypeError, ValueError):
        parsed = [raw]
    if not isinstance(parsed, list):
        parsed = [parsed]
    values = [v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in parsed]
    values = [v if len(v) <= 80 else v[:79] + "…" for v in values]
    return values[:MAX_EXAMPLES], max(0, len(values) - MAX_EXAMPLES)


def _check_summary(checks: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts by Kahn category x context (the DQD overview), with subtotals."""
    cells: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for check in checks:
        status = normalize_status(check["status"])
        category = (check["category"] or "").strip() or "Other"
        context = (check["context"] or "").strip() or "Other"
        cells[category, context][status or "Other"] += 1
    categories = list(CATEGORIES) + sorted({c for c, _ in cells} - set(CATEGORIES))
    contexts = list(CONTEXTS) + sorted({x for _, x in cells} - set(CONTEXTS))

    def line(counts: Counter) -> dict[str, Any]:
        passed, failed = counts[PASSED], counts[FAILED]
        return {
            "passed": passed,
            "failed": failed,
            "not_applicable": counts[NOT_APPLICABLE],
            "error": counts[ERROR],
            "total": sum(counts.values()),
            "pct_passed": _pct(passed, passed + failed),
        }

    groups, overall = [], Counter()
    for category in categories:
        rows, subtotal = [], Counter()
        for context in contexts:
            counts = cells.get((category, context), Counter())
            if context not in CONTEXTS and not counts:
                continue
            if category not in CATEGORIES and not counts:
                continue
            rows.append({"context": context, **line(counts)})
            subtotal += counts
        if rows:
            groups.append({"category": category, "rows": rows, "subtotal": line(subtotal)})
        overall += subtotal
    chart = {
        "labels": [f"{g['category']} · {r['context']}" for g in groups for r in g["rows"]],
        "series": [  # a list: tojson sorts the keys of a dict
            {"label": status, "data": [r[key] for g in groups for r in g["rows"]]}
            for status, key in (
                (PASSED, "passed"),
                (FAILED, "failed"),
                (NOT_APPLICABLE, "not_applicable"),
                (ERROR, "error"),
            )
        ],
    }
    return {"groups": groups, "total": line(overall), "chart": chart}


def _failing_checks(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failed checks, fatal first, then by share of rows violated."""
    failing = []
    for check in checks:
        if normalize_status(check["status"]) != FAILED:
            continue
        pct = check["pct_violated_rows"]
        pct = (
            100.0 * pct
            if pct is not None
            else _pct(check["num_violated_rows"], check["num_denominator_rows"])
        )
        examples, more = _examples(check["examples"])
        failing.append({**check, "pct_violated": pct, "example_values": examples, "more": more})
    failing.sort(
        key=lambda c: (
            _severity_rank(c["severity"]),
            -(c["pct_violated"] if c["pct_violated"] is not None else -1.0),
            -(c["num_violated_rows"] or 0),
            c["check_name"] or "",
            c["cdm_table_name"] or "",
            c["cdm_field_name"] or "",
        )
    )
    return failing


def _errored_checks(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    errored = [c for c in checks if normalize_status(c["status"]) == ERROR]
    return sorted(errored, key=lambda c: (c["check_name"] or "", c["cdm_table_name"] or ""))


def _by_rule(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """reject_counts rows of one kind, summed per rule, with the files they came from."""
    rules: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        rules[row["rule"] or "(no rule)"][row["source_file"] or "(no file)"] += row["rows"] or 0
    out = [
        {"rule": rule, "rows": sum(files.values()), "files": files.most_common()}
        for rule, files in rules.items()
    ]
    return sorted(out, key=lambda r: (-r["rows"], r["rule"]))


def _coverage(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    tables: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        counts = tables[row["cdm_table"] or "(no table)"]
        counts[0] += row["mapped_rows"] or 0
        counts[1] += row["rows"] or 0
    out = [
        {"cdm_table": t, "mapped": m, "rows": n, "pct": _pct(m, n)} for t, (m, n) in tables.items()
    ]
    return sorted(out, key=lambda r: (-r["rows"], r["cdm_table"]))


def _row_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: Counter = Counter()
    for row in rows:
        counts[row["cdm_table"] or "(no table)"] += row["rows"] or 0
    return dict(counts)


def _sort_newest_first(runs: list[dict[str, Any]]) -> None:
    def key(run: dict[str, Any]) -> tuple:
        finished, started = run["finished_at"], run["started_at"]
        return (
            finished is not None,
            finished or datetime.min,
            started is not None,
            started or datetime.min,
            run["run_id"] or "",
        )

    runs.sort(key=key, reverse=True)


# ----------------------------------------------------------------------------- rendering


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def _percent(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    if 0 < value < 10 ** (-digits):
        return f"<{10 ** (-digits):.{digits}f}%"
    return f"{value:.{digits}f}%"


def _breakable(value: Any) -> Markup:
    """The value escaped, with line-break chances after ``_`` and ``.`` and inside
    camelCase, so long table, field and check names wrap in narrow columns."""
    text = str(escape("" if value is None else value))
    text = re.sub(r"([_.])(?=[^\s])", r"\1<wbr>", text)
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", "<wbr>", text)
    return Markup(text)


def _threshold(value: float | None) -> str:
    return "—" if value is None else f"{value:g}%"


def _when(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def _iso(value: Any) -> str:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else ""


def _status_class(status: str | None) -> str:
    value = (status or "").strip().lower()
    return value if value in {"published", "blocked", "failed"} else "other"


def _script_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        breakable=_breakable,
        num=_num,
        percent=_percent,
        threshold=_threshold,
        when=_when,
        iso=_iso,
        status_class=_status_class,
    )
    return env


def _scripts() -> tuple[Markup, Markup, str]:
    """Chart.js and the dashboard's script, inlined, and the page's CSP."""
    chart_js = CHART_JS.read_text(encoding="utf-8")
    chart_js = re.sub(r"\n?//# sourceMappingURL=\S*\s*$", "\n", chart_js)
    dashboard_js = DASHBOARD_JS.read_text(encoding="utf-8")
    for text in (chart_js, dashboard_js):
        if "</script" in text.lower():  # would end the inline script early
            raise ValueError("an inlined script contains '</script'")
    csp = (
        "default-src 'none'; "
        f"script-src {_script_hash(chart_js)} {_script_hash(dashboard_js)}; "
        "style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
    )
    return Markup(chart_js), Markup(dashboard_js), csp


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build_dashboard(con: duckdb.DuckDBPyConnection, out_dir: Path) -> Path:
    """Write index.html and one run-<id>.html per run into out_dir; return index.html.

    ``con`` is a connection to the warehouse (read-only is enough). Empty or missing
    results tables give pages that say so.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = _Results(con)
    env = _environment()
    chart_js, dashboard_js, csp = _scripts()
    common = {
        "chart_js": chart_js,
        "dashboard_js": dashboard_js,
        "csp": csp,
        "generated_at": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }

    runs = results.select("run_log")
    _sort_newest_first(runs)
    pages: set[str] = set()
    for run in runs:
        key = run["run_id"]
        if key is None:  # an old run log row without id: a page of its own all the same
            key = f"{run['site']}|{run['batch_id']}|{run['finished_at']}|{len(pages)}"
        name = run_page_name(key)
        if name.lower() in pages:
            name = run_page_name(f"{key}|{len(pages)}")
        pages.add(name.lower())
        run["page"] = name

    # checks failed per run (all runs at once: status and severity only)
    failed_checks: dict[str, Counter] = defaultdict(Counter)
    checked: set[str] = set()
    if results.has("check_results", "run_id", "status", "severity"):
        for run_id, status, severity, n in con.execute(
            f"select run_id, status, severity, count(*) from {_q(SCHEMA)}.check_results "
            "where run_id is not null group by all"
        ).fetchall():
            checked.add(run_id)
            if normalize_status(status) == FAILED:
                failed_checks[run_id]["failed"] += n
                if _severity_rank(severity) == 0:
                    failed_checks[run_id]["fatal"] += n
    for run in runs:
        counts = failed_checks.get(run["run_id"], Counter()) if run["run_id"] else Counter()
        run["checks_failed"] = counts["failed"]
        run["fatal_failed"] = counts["fatal"]
        run["has_checks"] = run["run_id"] in checked

    row_counts = {rid: _row_counts(rows) for rid, rows in results.by_run("row_counts").items()}

    # per site: runs oldest first (trend, previous run), latest run, last published
    by_site: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in reversed(runs):
        by_site[run["site"] or "(no site)"].append(run)
    previous_counts: dict[str, tuple[dict[str, Any], dict[str, int]]] = {}
    for site_runs in by_site.values():
        before = None
        for run in site_runs:
            if before is not None:
                previous_counts[run["page"]] = before
            if run["run_id"] in row_counts:
                before = (run, row_counts[run["run_id"]])

    sites, trends = [], []
    for number, site in enumerate(sorted(by_site), start=1):
        site_runs = by_site[site]
        latest = site_runs[-1]
        published = [r for r in site_runs if _status_class(r["status"]) == "published"]
        sites.append(
            {
                "site": site,
                "latest": latest,
                "runs": len(site_runs),
                "last_published": published[-1] if published else None,
            }
        )
        trends.append(_trend(number, site, site_runs, row_counts))

    documents = _dqd_documents(con)
    for run in runs:
        page = _run_page(results, run, row_counts, previous_counts.get(run["page"]))
        json_file = None
        if run["run_id"] in documents:  # DataQualityDashboard's results JSON, for its viewer
            json_file = f"dqd/{Path(run['page']).stem}.json"
            (out_dir / "dqd").mkdir(parents=True, exist_ok=True)
            _write(out_dir / json_file, documents[run["run_id"]])
        html = env.get_template("run.html").render(
            run=run, dqd_json_file=json_file, **page, **common
        )
        _write(out_dir / run["page"], html)

    index = out_dir / "index.html"
    html = env.get_template("index.html").render(runs=runs, sites=sites, trends=trends, **common)
    _write(index, html)
    return index


def _dqd_documents(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """run_id -> the run's DQD results JSON (results.dqd_json), if the table exists."""
    try:
        rows = con.execute("select run_id, document from results.dqd_json").fetchall()
    except duckdb.Error:
        return {}
    return {run_id: document for run_id, document in rows if run_id}


def _trend(
    number: int, site: str, site_runs: list[dict[str, Any]], row_counts: dict[str, dict[str, int]]
) -> dict[str, Any]:
    """Rows per CDM table over a site's runs (oldest first): chart data and its table."""
    points = [r for r in site_runs if r["run_id"] in row_counts]
    labels, seen = [], Counter()
    for run in points:
        label = str(run["batch_id"] or run["run_id"])
        seen[label] += 1
        labels.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    tables = {t for run in points for t in row_counts[run["run_id"]]}
    latest = row_counts[points[-1]["run_id"]] if points else {}
    ordered = sorted(tables, key=lambda t: (-latest.get(t, 0), t))
    series = [
        {"label": t, "data": [row_counts[run["run_id"]].get(t) for run in points]} for t in ordered
    ]
    return {
        "id": f"trend-{number}",
        "site": site,
        "labels": labels,
        "runs": points,
        "series": series,
        "chart": {
            "title": f"Rows per CDM table, {site}",
            "labels": labels,
            "details": [
                f"{run['status'] or '?'}, finished {_when(run['finished_at'])}" for run in points
            ],
            "series": series,
        },
    }


def _run_page(
    results: _Results,
    run: dict[str, Any],
    row_counts: dict[str, dict[str, int]],
    previous: tuple[dict[str, Any], dict[str, int]] | None,
) -> dict[str, Any]:
    """Everything one run's page shows."""
    run_id = run["run_id"]
    checks = results.for_run("check_results", run_id)
    summary = _check_summary(checks)
    contracts = results.for_run("contract_results", run_id)
    contracts.sort(
        key=lambda c: (
            c["success"] is not False,
            c["suite"] or "",
            c["expectation"] or "",
            c["column_name"] or "",
        )
    )
    reject_rows = results.for_run("reject_counts", run_id)
    unmapped = results.for_run("unmapped_top", run_id)
    unmapped.sort(key=lambda u: (-(u["frequency"] or 0), u["source_code"] or ""))
    counts = row_counts.get(run_id, {}) if run_id else {}
    before_run, before = previous if previous else (None, {})
    table_rows = [
        {
            "cdm_table": t,
            "rows": counts[t],
            "previous": before.get(t) if before_run else None,
            "change": counts[t] - before.get(t, 0) if before_run else None,
        }
        for t in sorted(counts)
    ]
    coverage = _coverage(results.for_run("mapping_coverage", run_id))
    mapped, total = sum(c["mapped"] for c in coverage), sum(c["rows"] for c in coverage)
    contracts_failed = sum(1 for c in contracts if c["success"] is False)
    return {
        "checks": checks,
        "summary": summary,
        "failing": _failing_checks(checks),
        "errored": _errored_checks(checks),
        "contracts": contracts,
        "contracts_failed": contracts_failed,
        "rejects": _by_rule([r for r in reject_rows if (r["kind"] or "").lower() == "reject"]),
        "flags": _by_rule([r for r in reject_rows if (r["kind"] or "").lower() == "flag"]),
        "coverage": coverage,
        "coverage_total": {"mapped": mapped, "rows": total, "pct": _pct(mapped, total)},
        "unmapped": unmapped[:MAX_UNMAPPED],
        "unmapped_more": max(0, len(unmapped) - MAX_UNMAPPED),
        "row_counts": table_rows,
        "row_total": sum(counts.values()),
        "previous_run": before_run,
    }
