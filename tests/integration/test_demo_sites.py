"""The five synthetic hospitals through the real pipeline, checked against the
generator's ground truth (manifest.json): every planted defect is rejected or flagged
exactly as often as planted, every file is accounted for, no identifier gets through."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from omop_etl.codes import NORMAL_FORMS
from omop_etl.demo.run import demo_sites, run_demo
from omop_etl.reports import USAGI_COLUMNS
from omop_etl.warehouse import Target

PATIENTS = 100


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, make_demo_warehouse):
    root = tmp_path_factory.mktemp("demo")
    target = make_demo_warehouse(root)
    result = run_demo(target, root / "export", patients=PATIENTS, seed=7)
    return target, result


def _query(target: Target, sql: str) -> list[tuple]:
    con = duckdb.connect(target.location, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_every_planted_defect_is_rejected_or_flagged_exactly_as_planted(demo):
    target, result = demo
    planted: Counter = Counter()
    for d in result.manifest["defects"]:
        if d["detected_by"] in ("reject", "flag"):
            planted[(d["site"], d["batch"], d["rule"])] += d["count"]
        elif d["kind"] == "event_after_death":  # kept for the CDM checks, and flagged
            planted[(d["site"], d["batch"], "after_death")] += d["count"]
    assert len({k[2] for k in planted}) >= 11  # every kind the generator plants
    found: Counter = Counter()
    for site in demo_sites():
        for table, measure in (("rejects", "count(*)"), ("flags", "sum(rows)")):
            for batch, rule, n in _query(
                target, f"select batch_id, rule, {measure} from stage_{site}.{table} group by all"
            ):
                found[(site, batch, rule)] += int(n)
    assert found == planted


def test_every_file_is_accounted_for(demo):
    target, result = demo
    files = {
        (site, batch, name): f["rows"]
        for site, s in result.manifest["sites"].items()
        for batch, b in s["batches"].items()
        for name, f in b["files"].items()
    }
    reconciled = {}
    for site in demo_sites():
        for batch, path, read, loaded, rejected, filtered in _query(
            target,
            "select batch_id, file_path, rows_read, rows_loaded, rows_rejected, rows_filtered "
            f"from stage_{site}.reconciliation",
        ):
            assert read == loaded + rejected + filtered, (site, batch, path)
            reconciled[(site, batch, Path(path).name)] = read
    assert reconciled == files


def test_unmapped_codes_are_kept_counted_and_reported_for_usagi(demo):
    target, result = demo
    manifest = result.manifest
    planted: Counter = Counter()
    entries = [d for d in manifest["defects"] if d["kind"] == "unmapped_code"]
    entries += manifest.get("vocabulary_gaps", [])
    systems = {"seoul": "KCD7", "busan": "KCD7"}  # only KCD-7 codes change form
    assert systems  # codes are compared in their canonical form, as the pipeline does
    for d in entries:
        for code, n in d["codes"].items():
            canonical = (
                code.upper().replace(".", "") if code[:1].isalpha() and "." in code else code
            )
            planted[(d["site"], d["batch"], canonical)] += n
    found: Counter = Counter()
    for site in demo_sites():
        for batch, code, n in _query(
            target, f"select batch_id, source_code, frequency from stage_{site}.unmapped_codes"
        ):
            found[(site, batch, code)] += n
    assert found == planted
    assert "KCD7" in NORMAL_FORMS
    for site, path in result.reports.items():
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
        assert tuple(rows[0]) == USAGI_COLUMNS, site
        frequencies = [int(r[2]) for r in rows[1:]]
        assert frequencies == sorted(frequencies, reverse=True), site
        latest = max(manifest["sites"][site]["batches"])
        assert {r[0]: int(r[2]) for r in rows[1:]} == {
            code: n for (s, b, code), n in planted.items() if s == site and b == latest
        }


# Text the pipeline writes itself, holding no source value: the checks' SQL, and the
# DQD JSON made from check_results (whose examples are scanned in check_results).
GENERATED_TEXT = {("check_results", "query_text"), ("dqd_json", "document")}


def _text_values(target: Target) -> set[str]:
    con = duckdb.connect(target.location, read_only=True)
    try:
        values = set()
        for schema, table, column in con.execute(
            "select schema_name, table_name, column_name from duckdb_columns() "
            "where data_type = 'VARCHAR' and not internal"
        ).fetchall():
            if (table, column) in GENERATED_TEXT:
                continue
            sql = (
                f'select distinct "{column}" from "{schema}"."{table}" where "{column}" is not null'
            )
            values |= {v for (v,) in con.execute(sql).fetchall()}
        return values
    finally:
        con.close()


def test_no_direct_identifier_or_plain_hash_of_one_reaches_the_warehouse(demo):
    target, result = demo
    identifiers = result.manifest["identifiers"]
    assert len(identifiers) > 5 * PATIENTS  # names, RRNs, phones, e-mails, addresses, ids
    values = _text_values(target)
    assert len(values) > 1000
    text = "\x00".join(values)
    # long identifiers (names, RRNs, phones, e-mails, addresses) nowhere, even inside text
    leaked = [i for i in identifiers if len(i) >= 8 and not i.isdigit() and i in text]
    assert leaked == []
    # every identifier (patient ids included) is no value of its own, nor its plain hash
    hashes = set()
    for ident in identifiers:
        data = ident.encode()
        hashes |= {ident, hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()}
        hashes.add(hashlib.sha256(data).hexdigest()[:32])
    assert values.isdisjoint(hashes)


def test_reprocessing_the_demo_batches_changes_no_cdm_table(demo):
    target, result = demo
    from omop_etl.pipeline import run_export

    tables = ("person", "visit_occurrence", "condition_occurrence", "measurement", "note")
    sites = ("busan_university", "daegu_fhir")

    def checksums():
        return {
            (s, t): _query(target, f"select count(*), sum(hash(x)) from cdm_{s}.{t} as x")
            for s in sites
            for t in tables
        }

    before = checksums()
    for site in sites:
        runs, skipped = run_export(site, result.export / site, target)
        assert runs == [] and skipped == ["2026-01-31", "2026-02-28"]
        run_export(site, result.export / site, target, rerun=True, demo_key=True)
    assert checksums() == before


def test_the_cdm_checks_find_exactly_the_planted_implausible_values_and_events_after_death(demo):
    target, result = demo
    planted: Counter = Counter()
    for d in result.manifest["defects"]:
        if d["detected_by"].startswith("dqd:"):
            planted[(d["site"], d["detected_by"].removeprefix("dqd:"))] += d["count"]
    assert {check for _, check in planted} == {"plausibleBeforeDeath", "plausibleValueHigh"}
    found: Counter = Counter()
    for site in demo_sites():
        ((run_id,),) = _query(
            target,
            f"select run_id from results.run_log where site = '{site}' and status = 'published' "
            "order by finished_at desc limit 1",
        )
        for check, n in _query(
            target,
            "select check_name, sum(num_violated_rows) from results.check_results "
            f"where run_id = '{run_id}' and cdm_table_name = 'MEASUREMENT' and ("
            "(check_name = 'plausibleBeforeDeath' and cdm_field_name = 'MEASUREMENT_DATE') or "
            "(check_name = 'plausibleValueHigh' and check_level = 'CONCEPT')) "
            "group by 1",
        ):
            found[(site, check)] += int(n)
    assert found == planted


def test_every_run_has_its_dqd_json_and_the_dashboard_shows_it(demo, tmp_path):
    import json

    from omop_etl.cli import write_dashboard
    from quality.checks import VIEWER_FIELDS

    target, _ = demo
    runs = _query(target, "select count(*) from results.run_log where status = 'published'")
    documents = _query(target, "select document from results.dqd_json")
    assert len(documents) == runs[0][0]
    document = json.loads(documents[0][0])
    assert {"CheckResults", "Metadata", "Overview", "startTimestamp"} <= set(document)
    assert set(VIEWER_FIELDS) <= set(document["CheckResults"][0])
    index = write_dashboard(target, tmp_path / "dashboard")
    assert len(list((tmp_path / "dashboard" / "dqd").glob("*.json"))) == runs[0][0]
    assert "busan_university" in index.read_text(encoding="utf-8")
