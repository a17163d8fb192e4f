"""A synthetic warehouse ``results`` schema for the dashboard tests: 2 sites x 2 runs.

``seoul_general`` published both batches; ``busan_university`` published its January
batch and had February blocked by a fatal check. Columns the dashboard must never
show (query text, error text, contract details, not-applicable reasons) hold
patient-identifier-like values from ``FORBIDDEN_IDS``, and the free-text columns
that are shown carry markup, so the tests can see that nothing leaks and that
everything is escaped. All values are made up.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from quality.results import create_results_schema

# Made-up identifiers (a source patient id, a pseudonym, an RRN-shaped value with a
# wrong check digit) placed only in columns the dashboard must not show.
FORBIDDEN_IDS = ("PT-00042817", "a3f9c2e4b1d07788a3f9c2e4b1d07788", "880101-1234560")

SEOUL_JAN = "seoul_general-2026-01-31-r1"
SEOUL_FEB = "seoul_general-2026-02-28-r1"
BUSAN_JAN = "busan_university-2026-01-31-r1"
BUSAN_FEB = "busan_university:2026-02-28/r1"  # not file-name safe on purpose
BLOCKED_MESSAGE = (
    "batch 2026-02-28 blocked: 1 fatal check failed: isForeignKey "
    "visit_occurrence.person_id (312 of 9,800 rows, 3.18% > 0%). "
    "See <failing checks> & the run page."
)
SCRIPT_EXAMPLE = "<script>alert('example')</script>"

RUNS = [
    # run_id, site, batch, status, finished at, size against BASE_ROWS, blocked
    (SEOUL_JAN, "seoul_general", "2026-01-31", "published", "2026-02-01 02:14", 1.00, None),
    (BUSAN_JAN, "busan_university", "2026-01-31", "published", "2026-02-01 03:02", 0.85, None),
    (SEOUL_FEB, "seoul_general", "2026-02-28", "published", "2026-03-01 02:11", 1.12, None),
    (BUSAN_FEB, "busan_university", "2026-02-28", "blocked", "2026-03-01 03:20", 0.95, "b"),
]

BASE_ROWS = {
    "person": 200,
    "observation_period": 200,
    "visit_occurrence": 1450,
    "visit_detail": 310,
    "condition_occurrence": 3100,
    "drug_exposure": 5200,
    "procedure_occurrence": 800,
    "measurement": 9800,
    "observation": 600,
    "note": 150,
    "death": 4,
    "condition_era": 2100,
    "drug_era": 2300,
    "cost": 1400,
    "cdm_source": 1,
}

# check_name, level, table, field, concept, unit, category, subcategory, context,
# severity, threshold
# fmt: off
CHECKS = [
    ("cdmTable", "TABLE", "person", None, None, None, "Conformance", "Relational",
     "Verification", "fatal", 0.0),
    ("measurePersonCompleteness", "TABLE", "visit_occurrence", None, None, None,
     "Completeness", None, "Validation", "convention", 0.0),
    ("measurePersonCompleteness", "TABLE", "condition_occurrence", None, None, None,
     "Completeness", None, "Validation", "convention", 95.0),
    ("isRequired", "FIELD", "person", "gender_concept_id", None, None, "Conformance",
     "Relational", "Validation", "fatal", 0.0),
    ("isPrimaryKey", "FIELD", "visit_occurrence", "visit_occurrence_id", None, None,
     "Conformance", "Relational", "Verification", "fatal", 0.0),
    ("isForeignKey", "FIELD", "visit_occurrence", "person_id", None, None, "Conformance",
     "Relational", "Verification", "fatal", 0.0),
    ("cdmDatatype", "FIELD", "measurement", "value_as_number", None, None, "Conformance",
     "Value", "Verification", "fatal", 0.0),
    ("fkDomain", "FIELD", "condition_occurrence", "condition_concept_id", None, None,
     "Conformance", "Value", "Verification", "convention", 0.0),
    ("isStandardValidConcept", "FIELD", "drug_exposure", "drug_concept_id", None, None,
     "Conformance", "Value", "Verification", "convention", 0.0),
    ("standardConceptRecordCompleteness", "FIELD", "condition_occurrence",
     "condition_concept_id", None, None, "Completeness", None, "Verification", "convention",
     5.0),
    ("standardConceptRecordCompleteness", "FIELD", "measurement", "measurement_concept_id",
     None, None, "Completeness", None, "Verification", "convention", 5.0),
    ("sourceValueCompleteness", "FIELD", "drug_exposure", "drug_source_value", None, None,
     "Completeness", None, "Verification", "convention", 10.0),
    ("measureValueCompleteness", "FIELD", "measurement", "unit_concept_id", None, None,
     "Completeness", None, "Verification", "characterization", 100.0),
    ("plausibleAfterBirth", "FIELD", "condition_occurrence", "condition_start_date", None,
     None, "Plausibility", "Temporal", "Verification", "characterization", 1.0),
    ("plausibleBeforeDeath", "FIELD", "drug_exposure", "drug_exposure_start_date", None,
     None, "Plausibility", "Temporal", "Verification", "characterization", 1.0),
    ("plausibleStartBeforeEnd", "FIELD", "visit_occurrence", "visit_start_date", None, None,
     "Plausibility", "Temporal", "Verification", "characterization", 1.0),
    ("plausibleValueHigh", "FIELD", "measurement", "value_as_number", "3004249", "8876",
     "Plausibility", "Atemporal", "Verification", "characterization", 1.0),
    ("plausibleGender", "CONCEPT", "condition_occurrence", "condition_concept_id",
     "201826", None, "Plausibility", "Atemporal", "Validation", "characterization", 5.0),
    ("plausibleUnitConceptIds", "CONCEPT", "measurement", "unit_concept_id", "3004410",
     None, "Plausibility", "Atemporal", "Verification", "characterization", 1.0),
]

# (run, check_name, table, field) -> (status, violated, denominator, examples)
OUTCOMES = {
    (BUSAN_FEB, "isForeignKey", "visit_occurrence", "person_id"): (
        "Failed", 312, 9800, ["V-1288", "V-1290"]),
    (BUSAN_FEB, "standardConceptRecordCompleteness", "condition_occurrence",
     "condition_concept_id"): ("Failed", 248, 3050, ["E11.9X", "K52.98", SCRIPT_EXAMPLE]),
    (BUSAN_FEB, "plausibleValueHigh", "measurement", "value_as_number"): (
        "Failed", 14, 820, ["3004249"]),
    (BUSAN_JAN, "plausibleValueHigh", "measurement", "value_as_number"): (
        "Failed", 11, 700, ["3004249"]),
    (SEOUL_FEB, "measureValueCompleteness", "measurement", "unit_concept_id"): (
        "Not Applicable", 0, 0, None),
    (SEOUL_FEB, "plausibleUnitConceptIds", "measurement", "unit_concept_id"): (
        "Error", None, None, None),
    (SEOUL_JAN, "sourceValueCompleteness", "drug_exposure", "drug_source_value"): (
        "Failed", 640, 5200, ["643900250", "A12345678"]),
}
# fmt: on

UNMAPPED = [
    ("KCD7", "E11.9X", "Type 2 diabetes, unspecified (local suffix)", 132),
    ("KCD7", "K52.98", "Other noninfective colitis", 61),
    ("EDI", "643900250", "Metformin 500 mg tab (hospital formulary)", 44),
    ("LOCAL_LAB", "LAB-HBA1C-X", "HbA1c, point of care", 27),
]
REJECTS = [
    ("patients.csv", "reject", "unparsable_date", 3),
    ("diagnoses.csv", "reject", "unknown_patient", 12),
    ("labs.csv", "reject", "duplicate_row", 40),
    ("labs.csv", "reject", "unknown_patient", 5),
    ("notes.csv", "flag", "scrubbed:note_text", 5),
    ("diagnoses.csv", "flag", "unknown_visit", 8),
    ("drugs.csv", "flag", "after_death", 2),
]
COVERAGE = {
    "condition_occurrence": 0.984,
    "drug_exposure": 0.981,
    "measurement": 0.969,
    "procedure_occurrence": 0.95,
    "observation": 0.933,
}


def _details() -> str:
    """A Great Expectations result detail as it may come: it quotes row values."""
    return json.dumps({"partial_unexpected_list": list(FORBIDDEN_IDS), "unexpected_index": [4]})


def make_results_warehouse(path: Path) -> Path:
    """Write a DuckDB warehouse with a filled ``results`` schema at ``path``."""
    con = duckdb.connect(str(path))
    try:
        create_results_schema(con)
        for run_id, site, batch, status, finished, growth, blocked in RUNS:
            finished_at = datetime.strptime(finished, "%Y-%m-%d %H:%M")
            counts = {t: round(n * growth) for t, n in BASE_ROWS.items()}
            read = sum(counts.values()) // 2 + 500
            rejected = sum(n for _, kind, _, n in REJECTS if kind == "reject")
            con.execute(
                "insert into results.run_log by name select ? as run_id, ? as site, "
                "? as batch_id, ? as status, ? as started_at, ? as finished_at, "
                "? as rows_read, ? as rows_loaded, ? as rows_rejected, ? as rows_filtered, "
                "? as message",
                [
                    run_id,
                    site,
                    batch,
                    status,
                    finished_at - timedelta(minutes=6),
                    finished_at,
                    read,
                    read - rejected - 20,
                    rejected,
                    20,
                    BLOCKED_MESSAGE if blocked else None,
                ],
            )
            for table, n in counts.items():
                con.execute(
                    "insert into results.row_counts values (?, ?, ?, ?, ?)",
                    [run_id, site, batch, table, n],
                )
            for table, share in COVERAGE.items():
                n = counts[table]
                con.execute(
                    "insert into results.mapping_coverage values (?, ?, ?, ?, ?, ?)",
                    [run_id, site, batch, table, round(n * share), n],
                )
            for source_file, kind, rule, n in REJECTS:
                con.execute(
                    "insert into results.reject_counts values (?, ?, ?, ?, ?, ?, ?)",
                    [run_id, site, batch, source_file, kind, rule, n],
                )
            for vocabulary, code, name, frequency in UNMAPPED:
                con.execute(
                    "insert into results.unmapped_top values (?, ?, ?, ?, ?, ?, ?)",
                    [run_id, site, batch, vocabulary, code, name, round(frequency * growth)],
                )
            _insert_checks(con, run_id, site, batch)
            _insert_contracts(con, run_id, site, batch, failed=bool(blocked))
    finally:
        con.close()
    return path


def _insert_checks(con: duckdb.DuckDBPyConnection, run_id: str, site: str, batch: str) -> None:
    for number, check in enumerate(CHECKS, start=1):
        name, level, table, field, concept, unit, category, sub, context, severity, th = check
        status, violated, denominator, examples = OUTCOMES.get(
            (run_id, name, table, field), ("Passed", 0, 1000, None)
        )
        pct = violated / denominator if violated is not None and denominator else None
        if status == "Passed":
            pct = 0.0
        con.execute(
            "insert into results.check_results by name select "
            "? as run_id, ? as site, ? as batch_id, ? as check_id, ? as check_name, "
            "? as check_level, ? as check_description, ? as cdm_table_name, "
            "? as cdm_field_name, ? as concept_id, ? as unit_concept_id, ? as sql_file, "
            "? as category, ? as subcategory, ? as context, ? as severity, "
            "? as threshold_value, ? as num_violated_rows, ? as pct_violated_rows, "
            "? as num_denominator_rows, ? as status, ? as not_applicable_reason, "
            "? as error, ? as execution_time, ? as examples, ? as query_text",
            [
                run_id,
                site,
                batch,
                f"{name.lower()}_{table}_{field or ''}_{number}",
                name,
                level,
                f"The number and percent of records in {table} failing {name}.",
                table,
                field,
                concept,
                unit,
                f"{level.lower()}_{name}.sql",
                category,
                sub,
                context,
                severity,
                th,
                violated,
                pct,
                denominator,
                status,
                f"no rows for person {FORBIDDEN_IDS[0]}" if status == "Not Applicable" else None,
                f"Conversion Error: '{FORBIDDEN_IDS[2]}' is not a number"
                if status == "Error"
                else None,
                0.01 * number,
                json.dumps(examples) if examples is not None else None,
                f"select * from cdm.{table} where person_source_value = '{FORBIDDEN_IDS[0]}' "
                f"or person_id = '{FORBIDDEN_IDS[1]}'",
            ],
        )


def _insert_contracts(
    con: duckdb.DuckDBPyConnection, run_id: str, site: str, batch: str, *, failed: bool
) -> None:
    # fmt: off
    contracts = [
        ("staging.person", "expect_column_values_to_not_be_null", "person_source_value",
         True, 200, 0),
        ("staging.person", "expect_column_values_to_be_unique", "person_source_value",
         not failed, 200, 3 if failed else 0),
        ("staging.event", "expect_column_values_to_match_regex", "code", True, 21000, 0),
        ("staging.event", "expect_column_values_to_be_between", "value_as_number",
         not failed, 9800, 57 if failed else 0),
        ("staging.visit", "expect_column_pair_values_a_to_be_greater_than_b",
         "end_datetime", True, 1450, 0),
    ]
    # fmt: on
    for suite, expectation, column, success, count, unexpected in contracts:
        con.execute(
            "insert into results.contract_results values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                run_id,
                site,
                batch,
                suite,
                expectation,
                column,
                success,
                count,
                unexpected,
                100.0 * unexpected / count,
                _details(),
            ],
        )
