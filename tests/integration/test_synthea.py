"""The bundled Synthea v3 sample through the real pipeline (no PostgreSQL needed)."""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb

from omop_etl import settings
from omop_etl.pipeline import run_demo_site

SAMPLE = settings.PROJECT_ROOT / "mappings" / "samples" / "synthea_ma27"
EVENT_FILES = {
    # file: code column
    "conditions": "CODE",
    "careplans": "CODE",
    "medications": "CODE",
    "immunizations": "CODE",
    "procedures": "CODE",
    "imaging_studies": "PROCEDURE_CODE",
    "observations": "CODE",
    "allergies": "CODE",
    "devices": "CODE",
    "supplies": "CODE",
}
EVENT_TABLES = {
    "condition_occurrence": "condition_source_value",
    "drug_exposure": "drug_source_value",
    "procedure_occurrence": "procedure_source_value",
    "device_exposure": "device_source_value",
    "measurement": "measurement_source_value",
    "observation": "observation_source_value",
}


def _rows(name: str) -> list[dict[str, str]]:
    with open(SAMPLE / f"{name}.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _query(target, sql: str) -> list[tuple]:
    con = duckdb.connect(target.location, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_every_input_record_is_accounted_for(synthea_run):
    _, summary = synthea_run
    for f in summary.files:
        assert f.rows_read == f.rows_loaded + f.rows_rejected + f.rows_filtered, f.source_file
        assert f.rows_read == len(_rows(Path(f.path).stem)), f.source_file
    assert summary.rows_read == 10_950
    assert summary.rejects_by_rule == {}


def test_every_clinical_event_lands_in_a_cdm_table_mapped_or_not(synthea_run):
    target, summary = synthea_run
    expected: dict[str, int] = {}
    for name, column in EVENT_FILES.items():
        for row in _rows(name):
            expected[row[column]] = expected.get(row[column], 0) + 1
    found: dict[str, int] = {}
    for table, column in EVENT_TABLES.items():
        for code, n in _query(
            target, f"select {column}, count(*) from cdm_synthea.{table} group by 1"
        ):
            found[code] = found.get(code, 0) + n
    assert found == expected  # nothing dropped for lack of a mapping, nothing doubled
    assert sum(summary.rows[t] for t in EVENT_TABLES) == 2_534


def test_cdm_tables_are_filled_as_the_input_implies(synthea_run):
    target, summary = synthea_run
    patients = _rows("patients")
    encounters = _rows("encounters")
    assert summary.rows["person"] == len(patients) == 27
    assert summary.rows["death"] == sum(1 for p in patients if p["DEATHDATE"]) == 2
    # one ER + inpatient stay is merged into one 262 visit with two details
    assert summary.rows["visit_occurrence"] == len(encounters) - 1 == 603
    assert summary.rows["visit_detail"] == 2
    assert _query(
        target, "select count(*) from cdm_synthea.visit_occurrence where visit_concept_id = 262"
    ) == [(1,)]
    assert summary.rows["care_site"] == len(_rows("organizations")) == 63
    assert summary.rows["provider"] == len(_rows("providers")) == 166
    assert summary.rows["payer_plan_period"] == len(_rows("payer_transitions")) == 1_051
    assert (
        summary.rows["cost"]
        == len({r["APPOINTMENTID"] for r in _rows("claims_transactions")})
        == 604
    )
    addresses = {(p["CITY"], "Massachusetts", p["ZIP"] or None, p["COUNTY"]) for p in patients}
    sites = {(o["CITY"], o["STATE"], o["ZIP"] or None, None) for o in _rows("organizations")}
    assert summary.rows["location"] == len(addresses | sites)
    assert summary.rows["cdm_source"] == 1
    for table in ("observation_period", "condition_era", "drug_era"):
        assert summary.rows[table] > 0, table
    # every person with a clinical record has an observation period
    assert _query(
        target,
        "select count(distinct person_id) from cdm_synthea.observation_period",
    ) == [(27,)]


def test_known_codes_map_to_their_standard_concepts(synthea_run):
    target, _ = synthea_run
    # LOINC 8302-2 Body height (27 rows in observations.csv) -> measurement 3036277, in cm
    assert _query(
        target,
        "select measurement_concept_id, unit_concept_id, count(*) from cdm_synthea.measurement "
        "where measurement_source_value = '8302-2' group by all",
    ) == [(3036277, 8582, 27)]
    # SNOMED 195662009 Acute viral pharyngitis -> condition 4112343
    assert _query(
        target,
        "select condition_concept_id, condition_source_concept_id, count(*) "
        "from cdm_synthea.condition_occurrence where condition_source_value = '195662009' "
        "group by all",
    ) == [(4112343, 4112343, 2)]
    # CVX vaccine codes are not in the demo vocabulary: kept in drug_exposure as concept 0
    assert _query(
        target,
        "select count(*), count(*) filter (where drug_concept_id = 0) "
        "from cdm_synthea.drug_exposure where drug_type_concept_id = 32818",
    ) == [(29, 29)]
    # gender from the spec's value map
    assert _query(
        target, "select gender_concept_id, count(*) from cdm_synthea.person group by 1 order by 1"
    ) == [
        (8507, sum(1 for p in _rows("patients") if p["GENDER"] == "M")),
        (8532, sum(1 for p in _rows("patients") if p["GENDER"] == "F")),
    ]


def _checksums(target) -> dict[str, tuple]:
    tables = [
        t
        for (t,) in _query(
            target,
            "select table_name from information_schema.tables where table_schema = 'cdm_synthea'",
        )
    ]
    return {
        t: _query(target, f"select count(*), sum(hash(t::varchar)) from cdm_synthea.{t} as t")[0]
        for t in tables
    }


def test_running_the_site_twice_leaves_the_warehouse_identical(synthea_run):
    target, _ = synthea_run
    before = _checksums(target)
    run_demo_site(target)
    assert _checksums(target) == before
    assert len(before) == 29  # every CDM (non-vocabulary) table exists


def test_a_quote_opened_and_never_closed_costs_its_record_only(tmp_path):
    """One stray quote in conditions.csv used to swallow the rest of the file as one
    rejected record (589 of 5,473 CDM rows lost)."""
    import shutil

    from conftest import demo_warehouse

    from omop_etl.pipeline import run_site

    export = tmp_path / "export"
    shutil.copytree(SAMPLE, export)
    lines = (export / "conditions.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    fields = lines[100].split(",")
    fields[5] = '"' + fields[5]  # record 101: a quote opened in DESCRIPTION
    lines[100] = ",".join(fields)
    (export / "conditions.csv").write_text("".join(lines), encoding="utf-8")
    target = demo_warehouse(tmp_path)
    summary = run_site("synthea", export, target, demo_key=True)
    (conditions,) = [f for f in summary.files if f.source_file == "conditions"]
    assert (conditions.rows_read, conditions.rows_loaded, conditions.rows_rejected) == (
        len(lines) - 1,
        len(lines) - 2,
        1,
    )
    assert _query(
        target, "select record_no, rule from stage_synthea.rejects where source_file = 'conditions'"
    ) == [(101, "malformed_row:unterminated_quote")]
