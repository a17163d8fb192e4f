"""The DQD check catalogue (quality/checks.py): generated from the DQD CSVs, run on a tiny CDM.

The tiny CDM is built with the project's DDL and holds one planted violation per check
under test, so every count below is exact.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest

from omop_etl import schema
from omop_etl.demo import catalogue as demo
from quality import checks as q
from quality.results import TABLES

ROOT = Path(__file__).resolve().parents[2]
DQD = ROOT / "quality" / "dqd"

# concept_id, name, domain, vocabulary, class, standard
CONCEPTS = [
    (0, "No matching concept", "Metadata", "None", "Undefined", None),
    (8507, "MALE", "Gender", "Gender", "Gender", "S"),
    (8532, "FEMALE", "Gender", "Gender", "Gender", "S"),
    (9202, "Outpatient Visit", "Visit", "Visit", "Visit", "S"),
    (32817, "EHR", "Type Concept", "Type Concept", "Type Concept", "S"),
    (201826, "Type 2 diabetes mellitus", "Condition", "SNOMED", "Clinical Finding", "S"),
    (1001, "A non-standard condition code", "Condition", "ICD10CM", "5-char code", None),
    (444094, "Finding related to pregnancy", "Condition", "SNOMED", "Clinical Finding", "S"),
    (4299535, "Pregnancy", "Condition", "SNOMED", "Clinical Finding", "S"),
    (1125315, "Acetaminophen", "Drug", "RxNorm", "Ingredient", "S"),
    (3004501, "Glucose [Mass/volume] in Serum or Plasma", "Measurement", "LOINC", "Lab Test", "S"),
    (8840, "milligram per deciliter", "Unit", "UCUM", "Unit", "S"),
    (8753, "millimole per liter", "Unit", "UCUM", "Unit", "S"),
]


def _insert(con: duckdb.DuckDBPyConnection, table: str, **values: Any) -> None:
    names = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    con.execute(f"insert into {table} ({names}) values ({marks})", list(values.values()))


def _condition(
    con: duckdb.DuckDBPyConnection,
    cid: int,
    person: int,
    concept: int,
    start: date,
    *,
    end: date | None = None,
    visit: int | None = None,
    source: str,
) -> None:
    _insert(
        con,
        "cdm.condition_occurrence",
        condition_occurrence_id=cid,
        person_id=person,
        condition_concept_id=concept,
        condition_start_date=start,
        condition_end_date=end,
        condition_type_concept_id=32817,
        visit_occurrence_id=visit,
        condition_source_value=source,
    )


def _measurement(
    con: duckdb.DuckDBPyConnection, mid: int, person: int, unit: int, value: float, source: str
) -> None:
    _insert(
        con,
        "cdm.measurement",
        measurement_id=mid,
        person_id=person,
        measurement_concept_id=3004501,
        measurement_date=date(2020, 3, 1),
        measurement_type_concept_id=32817,
        unit_concept_id=unit,
        value_as_number=value,
        measurement_source_value="2345-7",
        unit_source_value=source,
    )


def build_cdm(con: duckdb.DuckDBPyConnection) -> None:
    """A tiny CDM with one planted violation per check under test (see the comments)."""
    schema.create_schema(con, "cdm", schema.cdm_tables())
    schema.create_schema(con, "vocab", schema.vocabulary_tables())
    for row in CONCEPTS:
        _insert(
            con,
            "vocab.concept",
            concept_id=row[0],
            concept_name=row[1],
            domain_id=row[2],
            vocabulary_id=row[3],
            concept_class_id=row[4],
            standard_concept=row[5],
            concept_code=str(row[0]),
            valid_start_date=date(1970, 1, 1),
            valid_end_date=date(2099, 12, 31),
        )
    for ancestor, descendant in ((444094, 444094), (444094, 4299535), (4299535, 4299535)):
        _insert(
            con,
            "vocab.concept_ancestor",
            ancestor_concept_id=ancestor,
            descendant_concept_id=descendant,
            min_levels_of_separation=0,
            max_levels_of_separation=0,
        )
    con.execute("alter table cdm.person alter column race_concept_id drop not null")
    people = [  # id, gender, birth date, race
        (1, 8507, date(1980, 1, 1), 0),
        (2, 8532, date(1990, 5, 5), 0),
        (3, 8507, date(1950, 2, 2), 0),
        (4, 8532, date(1960, 3, 3), None),  # isRequired: race_concept_id is NULL
    ]
    for pid, gender, born, race in people:
        _insert(
            con,
            "cdm.person",
            person_id=pid,
            gender_concept_id=gender,
            year_of_birth=born.year,
            month_of_birth=born.month,
            day_of_birth=born.day,
            race_concept_id=race,
            ethnicity_concept_id=0,
            person_source_value=f"SECRET-{pid}",
            gender_source_value="M" if gender == 8507 else "F",
        )
    _insert(con, "cdm.death", person_id=3, death_date=date(2020, 1, 1))
    periods = [  # person 2 has two overlapping periods
        (1, 1, date(2019, 1, 1), date(2021, 12, 31)),
        (2, 2, date(2020, 1, 1), date(2021, 6, 30)),
        (3, 2, date(2021, 6, 1), date(2021, 12, 31)),
        (4, 3, date(2015, 1, 1), date(2020, 1, 1)),
        (5, 4, date(2015, 1, 1), date(2020, 1, 1)),
    ]
    for oid, pid, start, end in periods:
        _insert(
            con,
            "cdm.observation_period",
            observation_period_id=oid,
            person_id=pid,
            observation_period_start_date=start,
            observation_period_end_date=end,
            period_type_concept_id=32817,
        )
    visits = [
        (1, 1, date(2020, 3, 1), date(2020, 3, 2)),
        (2, 2, date(2021, 1, 1), date(2021, 1, 1)),
    ]
    for vid, pid, start, end in visits:
        _insert(
            con,
            "cdm.visit_occurrence",
            visit_occurrence_id=vid,
            person_id=pid,
            visit_concept_id=9202,
            visit_start_date=start,
            visit_end_date=end,
            visit_type_concept_id=32817,
            visit_source_value="OP",
        )
    d = date
    _condition(con, 1, 1, 201826, d(2020, 3, 1), end=d(2020, 3, 5), visit=1, source="E11.9")
    _condition(con, 2, 1, 1001, d(2020, 3, 2), visit=1, source="X1")  # not standard
    _condition(con, 3, 1, 4299535, d(2020, 3, 1), visit=1, source="O80")  # male, pregnancy
    _condition(con, 3, 2, 201826, d(2021, 1, 1), visit=2, source="E11.9")  # duplicate id 3
    _condition(con, 5, 999, 201826, d(2021, 1, 1), source="ORPHAN")  # no such person
    _condition(con, 6, 2, 201826, d(1985, 1, 1), source="E11.8")  # before birth (1990)
    _condition(con, 7, 3, 201826, d(2020, 6, 1), source="E11.7")  # > 60 days after death
    # starts after it ends, and 9 days after its visit ended
    _condition(con, 8, 2, 201826, d(2021, 1, 10), end=d(2021, 1, 5), visit=2, source="E11.6")
    _condition(con, 9, 2, 1125315, d(2021, 2, 1), source="DRUG")  # a Drug concept
    _condition(con, 10, 2, 0, d(2021, 2, 1), source="ZZZ")  # unmapped
    _measurement(con, 1, 1, 8840, 100.0, "mg/dL")
    _measurement(con, 2, 1, 8840, 4500.0, "mg/dL")  # above the plausible 1500 mg/dL
    _measurement(con, 3, 2, 8840, -1.0, "mg/dL")  # below the plausible 0
    _measurement(con, 4, 2, 8753, 5.0, "mmol/L")
    _measurement(con, 5, 3, 9999, 7.0, "weird")  # not a plausible unit, not a concept
    _insert(
        con,
        "cdm.cdm_source",
        cdm_source_name="Tiny test CDM",
        cdm_source_abbreviation="tiny",
        cdm_holder="tests",
        source_release_date=d(2024, 1, 1),
        cdm_release_date=d(2024, 1, 2),
        cdm_version="v5.4",
        cdm_version_concept_id=756265,
        vocabulary_version="test",
    )


@pytest.fixture(scope="module")
def tiny() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    build_cdm(con)
    yield con
    con.close()


@pytest.fixture(scope="module")
def results(tiny: duckdb.DuckDBPyConnection) -> dict[str, q.CheckResult]:
    found = q.run_checks(tiny, "cdm", "vocab", q.catalogue(), workers=2, examples="violated")
    return {r.check_id: r for r in found}


def _counts(r: q.CheckResult) -> tuple[int | None, int | None, str]:
    return r.num_violated_rows, r.num_denominator_rows, r.status


# ---------------------------------------------------------------------------
# The catalogue
# ---------------------------------------------------------------------------


def test_catalogue_has_the_24_non_deprecated_check_types() -> None:
    with (DQD / "OMOP_CDMv5.4_Check_Descriptions.csv").open(encoding="utf-8") as fh:
        described = {row["checkName"] for row in csv.DictReader(fh)}
    assert len(described) == 27
    assert set(q.DEPRECATED_CHECKS) == {
        "plausibleDuringLife",
        "plausibleTemporalAfter",
        "plausibleGender",
    }
    checks = q.catalogue()
    names = {c.check_name for c in checks}
    assert names == set(q.CHECK_TYPES) == described - set(q.DEPRECATED_CHECKS)
    assert len(names) == 24
    assert {c.check_name for c in q.catalogue(include_deprecated=True)} == described
    assert len({c.check_id for c in checks}) == len(checks)
    # DQD skips the vocabulary tables by default but checks these two in the vocab schema
    tables = {c.cdm_table_name for c in checks}
    assert "CONCEPT" not in tables and "CONCEPT_ANCESTOR" not in tables
    assert {"SOURCE_TO_CONCEPT_MAP", "DRUG_STRENGTH", "COHORT"} <= tables
    stcm = next(c for c in checks if c.check_id == "table_cdmtable_source_to_concept_map")
    assert '@vocab."source_to_concept_map"' in stcm.sql


def test_check_ids_descriptions_and_labels_follow_dqd() -> None:
    checks = {c.check_id: c for c in q.catalogue()}
    c = checks["field_isrequired_person_person_id"]
    assert (c.check_name, c.check_level, c.cdm_table_name, c.cdm_field_name) == (
        "isRequired",
        "FIELD",
        "PERSON",
        "PERSON_ID",
    )
    assert c.check_description == (
        "The number and percent of records with a NULL value in the PERSON_ID of the "
        "PERSON that is considered not nullable."
    )
    assert (c.context, c.category, c.subcategory, c.severity) == (
        "Validation",
        "Conformance",
        "Relational",
        "fatal",
    )
    assert c.sql_file == "field_is_not_nullable.sql"
    fk = checks["field_isforeignkey_condition_occurrence_person_id"]
    assert "does not exist in the PERSON table" in fk.check_description
    unit = checks["concept_plausibleunitconceptids_measurement_measurement_concept_id_3004501"]
    assert unit.concept_id == "3004501" and unit.unit_concept_id is None
    assert "CONCEPT_ID 3004501 (GLUCOSE [MASS/VOLUME] IN SERUM OR PLASMA)" in unit.check_description
    assert "UNIT_CONCEPT_ID NOT IN  (8840,8753)" in unit.check_description
    high = checks["concept_plausiblevaluehigh_measurement_measurement_concept_id_3004501_8840"]
    assert (high.check_level, high.unit_concept_id, high.sql_file) == (
        "CONCEPT",
        "8840",
        "concept_plausible_value_high.sql",
    )
    assert "above 1500" in high.check_description
    gender = checks[
        "concept_plausiblegenderusedescendants_condition_occurrence_condition_concept_id"
        "_4095793,443343,4024004,4172857,444094,197810,4158481"
    ]
    assert "correct gender = FEMALE" in gender.check_description
    table = checks["table_measurepersoncompleteness_visit_occurrence"]
    assert table.cdm_field_name is None and table.severity == "convention"
    assert checks["field_cdmfield_person_person_id"].threshold_value is None


def _csv_rows(name: str) -> list[dict[str, str]]:
    with (DQD / f"OMOP_CDMv5.4_{name}.csv").open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_thresholds_come_from_the_csvs() -> None:
    fields_ = {
        (r["cdmTableName"].upper(), r["cdmFieldName"].upper()): r for r in _csv_rows("Field_Level")
    }
    tables = {r["cdmTableName"]: r for r in _csv_rows("Table_Level")}
    concepts = {
        (r["cdmFieldName"], r["conceptId"], r["unitConceptId"]): r
        for r in _csv_rows("Concept_Level")
    }
    checked = Counter()
    for c in q.catalogue():
        if c.check_level == "FIELD":
            row = fields_[(c.cdm_table_name, c.cdm_field_name)]
        elif c.check_level == "TABLE":
            row = tables[c.cdm_table_name]
        else:
            row = concepts.get((c.cdm_field_name, c.concept_id, c.unit_concept_id or ""))
            if row is None:  # one of quality/plausible_values.csv
                assert c.threshold_value == 0.0
                continue
        raw = row.get(f"{c.check_name}Threshold", "")
        assert c.threshold_value == (float(raw) if raw else None), c.check_id
        checked[c.check_level] += 1
    assert checked["FIELD"] > 1500 and checked["TABLE"] > 40 and checked["CONCEPT"] > 180
    checks = {c.check_id: c for c in q.catalogue()}
    assert checks["table_measurepersoncompleteness_visit_occurrence"].threshold_value == 95.0
    assert checks["field_isrequired_person_person_id"].threshold_value == 0.0
    std = "field_standardconceptrecordcompleteness_condition_occurrence_condition_concept_id"
    assert checks[std].threshold_value == 5.0


def test_overrides_by_check_name_and_check_id() -> None:
    one = "field_isrequired_person_person_id"
    checks = {c.check_id: c for c in q.catalogue({"isRequired": 50, one: 7.5})}
    assert checks[one].threshold_value == 7.5  # the check id wins
    assert checks["field_isrequired_person_gender_concept_id"].threshold_value == 50.0
    assert checks["field_isprimarykey_person_person_id"].threshold_value == 0.0  # untouched


def test_plausible_values_file_matches_the_demo_labs_and_vocabulary() -> None:
    with (ROOT / "mappings" / "vocabulary" / "demo" / "CONCEPT.csv").open(encoding="utf-8") as fh:
        vocab = {int(r["concept_id"]): r for r in csv.DictReader(fh, delimiter="\t")}
    with q.PLAUSIBLE_VALUES_FILE.open(encoding="utf-8") as fh:
        rows = {int(r["conceptId"]): r for r in csv.DictReader(fh)}
    assert len(rows) == len(demo.LABS)
    for lab in demo.LABS:
        row = rows[lab.concept]
        concept, unit = vocab[lab.concept], vocab[int(row["unitConceptId"])]
        assert (concept["vocabulary_id"], concept["concept_code"]) == ("LOINC", lab.loinc)
        assert (unit["vocabulary_id"], unit["concept_code"]) == ("UCUM", lab.unit)
        assert int(row["unitConceptId"]) == lab.unit_concept
        assert row["conceptName"] == concept["concept_name"]
        assert (row["cdmTableName"], row["cdmFieldName"]) == (
            "MEASUREMENT",
            "MEASUREMENT_CONCEPT_ID",
        )
        assert float(row["plausibleValueHigh"]) == lab.plausible_high < lab.implausible
        assert float(row["plausibleValueLow"]) == 0 <= lab.low
    ids = {c.check_id for c in q.catalogue()}
    for lab in demo.LABS:
        for name in ("plausiblevaluelow", "plausiblevaluehigh"):
            assert (
                f"concept_{name}_measurement_measurement_concept_id_{lab.concept}_{lab.unit_concept}"
                in ids
            )


def test_a_row_of_ours_replaces_dqds_row_for_the_same_concept_and_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = tmp_path / "plausible_values.csv"
    with q.PLAUSIBLE_VALUES_FILE.open(encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    with ours.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerow(
            {
                "cdmTableName": "OBSERVATION",
                "cdmFieldName": "OBSERVATION_CONCEPT_ID",
                "conceptId": "37392176",
                "conceptName": "Serum creatinine level",
                "unitConceptId": "8840",
                "unitConceptName": "milligram per deciliter",
                "plausibleValueLow": "0",
                "plausibleValueLowThreshold": "0",
                "plausibleValueHigh": "40",
                "plausibleValueHighThreshold": "1",
            }
        )
    monkeypatch.setattr(q, "PLAUSIBLE_VALUES_FILE", ours)
    q._spec.cache_clear()
    try:
        checks = [c for c in q.catalogue() if "_37392176_8840" in c.check_id]
    finally:
        monkeypatch.undo()
        q._spec.cache_clear()
    high = {c.check_name: c for c in checks}
    assert len(checks) == 2  # DQD's row is gone, not doubled
    assert high["plausibleValueHigh"].threshold_value == 1.0
    assert "> 40" in high["plausibleValueHigh"].sql


# ---------------------------------------------------------------------------
# Running on the tiny CDM
# ---------------------------------------------------------------------------


def test_planted_violations_are_counted_exactly(results: dict[str, q.CheckResult]) -> None:
    co = "condition_occurrence"
    expected = {
        # isRequired: person 4 has no race
        "field_isrequired_person_race_concept_id": (1, 4, "Failed"),
        "field_isrequired_person_person_id": (0, 4, "Passed"),
        # two rows share condition_occurrence_id 3
        f"field_isprimarykey_{co}_condition_occurrence_id": (2, 10, "Failed"),
        # person 999 does not exist; unit 9999 is no concept
        f"field_isforeignkey_{co}_person_id": (1, 10, "Failed"),
        "field_isforeignkey_measurement_unit_concept_id": (1, 5, "Failed"),
        f"field_isforeignkey_{co}_visit_occurrence_id": (0, 10, "Passed"),
        # concept 1001 is not standard; 1125315 is a Drug
        f"field_isstandardvalidconcept_{co}_condition_concept_id": (1, 10, "Failed"),
        f"field_fkdomain_{co}_condition_concept_id": (1, 10, "Failed"),
        f"field_standardconceptrecordcompleteness_{co}_condition_concept_id": (1, 10, "Failed"),
        # before birth, > 60 days after death (denominator: rows of the dead), start > end
        f"field_plausibleafterbirth_{co}_condition_start_date": (1, 10, "Failed"),
        f"field_plausiblebeforedeath_{co}_condition_start_date": (1, 1, "Failed"),
        f"field_plausiblestartbeforeend_{co}_condition_start_date": (1, 2, "Failed"),
        # 9 days after its visit ended; the visit-less rows are not in the denominator
        f"field_withinvisitdates_{co}_condition_start_date": (1, 5, "Failed"),
        # a male with a pregnancy concept (descendant of 444094)
        f"concept_plausiblegenderusedescendants_{co}_condition_concept_id"
        "_4095793,443343,4024004,4172857,444094,197810,4158481": (1, 1, "Failed"),
        # glucose: 4500 and -1 mg/dL, a unit not allowed (9999)
        "concept_plausiblevaluehigh_measurement_measurement_concept_id_3004501_8840": (
            1,
            3,
            "Failed",
        ),
        "concept_plausiblevaluelow_measurement_measurement_concept_id_3004501_8840": (
            1,
            3,
            "Failed",
        ),
        "concept_plausibleunitconceptids_measurement_measurement_concept_id_3004501": (
            1,
            5,
            "Failed",
        ),
        # person 4 has no condition: 25% is under the threshold of 95%
        f"table_measurepersoncompleteness_{co}": (1, 4, "Passed"),
        "table_measureobservationperiodoverlap_observation_period": (1, 4, "Failed"),
        "table_measureconditioneracompleteness_condition_era": (4, 4, "Failed"),
        "table_cdmtable_person": (0, 1, "Passed"),
        "field_cdmfield_person_race_concept_id": (0, 1, "Passed"),
        f"field_sourcevaluecompleteness_{co}_condition_source_value": (1, 9, "Failed"),
        f"field_measurevaluecompleteness_{co}_condition_end_date": (8, 10, "Passed"),
    }
    got = {check_id: _counts(results[check_id]) for check_id in expected}
    assert got == expected
    high = results["concept_plausiblevaluehigh_measurement_measurement_concept_id_3004501_8840"]
    assert high.pct_violated_rows == pytest.approx(1 / 3)
    assert high.threshold_value == 0.0
    assert all(r.error is None for r in results.values())


def test_examples_are_source_values_never_person_ids(results: dict[str, q.CheckResult]) -> None:
    co = "condition_occurrence"
    assert results[f"field_isstandardvalidconcept_{co}_condition_concept_id"].examples == ["X1"]
    assert results[f"field_fkdomain_{co}_condition_concept_id"].examples == ["DRUG"]
    assert results[f"field_isforeignkey_{co}_person_id"].examples == ["ORPHAN"]
    assert results[f"field_isprimarykey_{co}_condition_occurrence_id"].examples == ["E11.9", "O80"]
    assert results[f"field_plausibleafterbirth_{co}_condition_start_date"].examples == ["E11.8"]
    assert results[f"field_withinvisitdates_{co}_condition_start_date"].examples == ["E11.6"]
    unit = "concept_plausibleunitconceptids_measurement_measurement_concept_id_3004501"
    assert results[unit].examples == ["weird"]
    high = "concept_plausiblevaluehigh_measurement_measurement_concept_id_3004501_8840"
    assert results[high].examples == ["4500.0"]  # the value itself
    assert results["field_isrequired_person_race_concept_id"].examples == []  # no race_source_value
    assert results["table_measureobservationperiodoverlap_observation_period"].examples == []
    shown = [e for r in results.values() for e in r.examples]
    assert shown and not any("SECRET" in e for e in shown)


def test_not_applicable_follows_dqd(results: dict[str, q.CheckResult]) -> None:
    def na(check_id: str) -> str | None:
        r = results[check_id]
        assert r.status == "Not Applicable", (check_id, r.status)
        return r.not_applicable_reason

    # an empty table: its field checks, not cdmTable/cdmField/measurePersonCompleteness
    assert na("field_isrequired_device_exposure_device_exposure_id") == (
        "Table DEVICE_EXPOSURE is empty."
    )
    assert na("field_measurevaluecompleteness_device_exposure_device_concept_id") == (
        "Table DEVICE_EXPOSURE is empty."
    )
    assert results["table_cdmtable_device_exposure"].status == "Passed"
    assert results["field_cdmfield_device_exposure_device_concept_id"].status == "Passed"
    assert _counts(results["table_measurepersoncompleteness_device_exposure"]) == (4, 4, "Passed")
    # a field that is never populated: all its checks but measureValueCompleteness
    assert na("field_isforeignkey_condition_occurrence_provider_id") == (
        "Field CONDITION_OCCURRENCE.PROVIDER_ID is not populated."
    )
    assert results["field_measurevaluecompleteness_condition_occurrence_provider_id"].status == (
        "Passed"
    )
    # a concept (with unit) that has no rows
    assert na("concept_plausibleunitconceptids_measurement_measurement_concept_id_3000963") == (
        "MEASUREMENT_CONCEPT_ID=3000963 is missing from the MEASUREMENT table."
    )
    assert na("concept_plausiblevaluehigh_measurement_measurement_concept_id_3000963_8713") == (
        "Combination of MEASUREMENT_CONCEPT_ID=3000963, unitConceptId=8713 and "
        "VALUE_AS_NUMBER IS NOT NULL is missing from the MEASUREMENT table."
    )
    assert na(
        "concept_plausiblegenderusedescendants_condition_occurrence_condition_concept_id"
        "_4090861,4025213"
    ).startswith("CONDITION_CONCEPT_ID=4090861, 4025213 is missing")
    for r in results.values():
        assert r.status in q.STATUSES
        assert (r.not_applicable_reason is not None) == (r.status == "Not Applicable")
        if r.status == "Not Applicable":
            assert not r.failed and not r.passed


def test_missing_table_and_column_wrong_type_and_a_failing_query() -> None:
    con = duckdb.connect()
    build_cdm(con)
    con.execute("drop table cdm.note_nlp")
    con.execute("alter table cdm.measurement drop column value_source_value")
    con.execute("alter table cdm.person alter column year_of_birth type varchar")
    con.execute("update cdm.person set year_of_birth = '1950.5' where person_id = 3")
    checks = {c.check_id: c for c in q.catalogue()}
    broken = dataclasses.replace(
        checks["field_isrequired_person_person_id"],
        sql="select count(no_such_column), 1 from @cdm.person",
        source=None,
    )
    wanted = [
        "table_cdmtable_note_nlp",
        "field_cdmfield_note_nlp_note_nlp_id",
        "field_isrequired_note_nlp_note_nlp_id",
        "field_cdmfield_measurement_value_source_value",
        "field_measurevaluecompleteness_measurement_value_source_value",
        "concept_plausiblevaluehigh_measurement_measurement_concept_id_3004501_8840",
        "field_isrequired_measurement_measurement_id",
        "field_cdmdatatype_person_year_of_birth",
        "field_cdmdatatype_person_person_id",
    ]
    # only some checks: the ones DQD's NA rules need are run as well, not returned
    found = q.run_checks(con, "cdm", "vocab", [checks[i] for i in wanted] + [broken])
    assert len(found) == len(wanted) + 1
    r = {x.check_id: x for x in found[:-1]}
    table = r["table_cdmtable_note_nlp"]
    assert (table.status, table.num_violated_rows) == ("Failed", None)
    assert "note_nlp" in (table.error or "").lower()
    assert r["field_cdmfield_note_nlp_note_nlp_id"].status == "Not Applicable"
    assert r["field_cdmfield_note_nlp_note_nlp_id"].not_applicable_reason == (
        "Table NOTE_NLP does not exist."
    )
    # DQD flags the failed query of a missing table both as error and not applicable
    required = r["field_isrequired_note_nlp_note_nlp_id"]
    assert required.status == "Error" and required.error
    assert required.not_applicable_reason == "Table NOTE_NLP does not exist."
    assert r["field_cdmfield_measurement_value_source_value"].status == "Failed"
    completeness = r["field_measurevaluecompleteness_measurement_value_source_value"]
    assert completeness.status == "Error"
    assert completeness.not_applicable_reason == (
        "Field MEASUREMENT.VALUE_SOURCE_VALUE does not exist."
    )
    # the measurement scan failed as a whole; its other checks ran one by one
    high = r["concept_plausiblevaluehigh_measurement_measurement_concept_id_3004501_8840"]
    assert _counts(high) == (1, 3, "Failed")
    assert _counts(r["field_isrequired_measurement_measurement_id"]) == (0, 5, "Passed")
    # an integer field that holds text
    assert _counts(r["field_cdmdatatype_person_year_of_birth"]) == (1, 4, "Failed")
    assert r["field_cdmdatatype_person_year_of_birth"].examples == ["1950.5"]
    assert _counts(r["field_cdmdatatype_person_person_id"]) == (0, 4, "Passed")
    bad = found[-1]
    assert bad.status == "Error" and "no_such_column" in (bad.error or "")
    assert bad.not_applicable_reason is None and bad.pct_violated_rows is None
    con.close()


def test_qualified_schema_prefixes_and_rendering(tiny: duckdb.DuckDBPyConnection) -> None:
    check = next(
        c for c in q.catalogue() if c.check_id == "field_isrequired_person_race_concept_id"
    )
    assert '"memory"."cdm"."person"' in check.query('"memory"."cdm"', '"memory"."vocab"')
    assert '"cdm"."person"' in check.query("cdm", "vocab")
    found = q.run_checks(tiny, '"memory"."cdm"', '"memory"."vocab"', [check], workers=1)
    assert _counts(found[0]) == (1, 4, "Failed")
    assert found[0].query_text.startswith("select")
    assert found[0].examples == []  # examples="failed" by default, and no race_source_value
    assert found[0].execution_time >= 0


def test_thresholds_decide_failed_as_dqd(tiny: duckdb.DuckDBPyConnection) -> None:
    check_id = "field_isprimarykey_condition_occurrence_condition_occurrence_id"  # 2 of 10 rows
    for overrides, status in (
        ({}, "Failed"),
        ({check_id: 20}, "Passed"),
        ({check_id: 19.9}, "Failed"),
    ):
        check = next(c for c in q.catalogue(overrides) if c.check_id == check_id)
        assert q.run_checks(tiny, "cdm", "vocab", [check])[0].status == status


def test_dqd_json_has_the_viewer_fields(
    tiny: duckdb.DuckDBPyConnection, results: dict[str, q.CheckResult]
) -> None:
    found = list(results.values())
    metadata = q.cdm_source_metadata(tiny, "cdm")
    assert metadata["CDM_SOURCE_NAME"] == "Tiny test CDM"
    doc = json.loads(json.dumps(q.dqd_json(found, metadata)))
    assert set(doc) == {
        "startTimestamp",
        "endTimestamp",
        "executionTime",
        "executionTimeSeconds",
        "CheckResults",
        "Metadata",
        "Overview",
    }
    assert isinstance(doc["executionTime"], str) and doc["executionTime"].endswith("secs")
    assert isinstance(doc["executionTimeSeconds"], float)
    meta = doc["Metadata"][0]
    assert meta["CDM_SOURCE_NAME"] == meta["cdmSourceName"] == "Tiny test CDM"
    assert meta["DQD_VERSION"] == meta["dqdVersion"] == q.DQD_VERSION == "2.8.4"
    assert meta["CDM_RELEASE_DATE"] == "2024-01-02"
    types: dict[str, tuple[type, ...]] = {
        "numViolatedRows": (int, type(None)),
        "pctViolatedRows": (float, int, type(None)),
        "numDenominatorRows": (int, type(None)),
        "thresholdValue": (float, int, type(None)),
        "failed": (int,),
        "passed": (int,),
        "isError": (int,),
        "notApplicable": (int,),
    }
    rows = doc["CheckResults"]
    assert len(rows) == len(found)
    for row in rows:
        assert set(q.VIEWER_FIELDS) <= set(row) and set(row) == set(q.JSON_FIELDS)
        for name in q.VIEWER_FIELDS:
            expected = types.get(name, (str, type(None)))
            assert isinstance(row[name], expected), (name, row[name])
        for name in ("checkId", "checkName", "checkLevel", "checkDescription", "cdmTableName"):
            assert isinstance(row[name], str) and row[name]
        assert (
            row["failed"]
            + row["passed"]
            + row["isError"]
            + (row["notApplicable"] and not row["isError"])
            == 1
        )
    o = doc["Overview"]
    assert o["countTotal"] == len(rows)
    assert o["countPassed"] + o["countOverallFailed"] == o["countTotal"]
    assert o["countThresholdFailed"] + o["countErrorFailed"] >= o["countOverallFailed"]
    assert o["countOverallFailed"] == sum(r["failed"] for r in rows) > 0
    for kind in ("Total", "Failed", "Passed"):
        assert sum(
            o[f"count{kind}{c}"] for c in ("Plausibility", "Conformance", "Completeness")
        ) == (
            o["countTotal"]
            if kind == "Total"
            else sum(r["failed" if kind == "Failed" else "passed"] for r in rows)
        )
    assert o["percentPassed"] == round(o["countPassed"] / o["countTotal"] * 100, 2)
    one = next(r for r in rows if r["checkId"] == "field_isrequired_person_race_concept_id")
    assert (one["numViolatedRows"], one["numDenominatorRows"], one["failed"]) == (1, 4, 1)
    assert one["pctViolatedRows"] == 0.25 and one["thresholdValue"] == 0.0
    assert one["executionTime"].endswith(" secs") and one["sqlFile"] == "field_is_not_nullable.sql"


def test_records_fit_the_results_table(results: dict[str, q.CheckResult]) -> None:
    columns = [spec.split()[0] for spec in TABLES["check_results"].split(",")]
    record = results["field_isforeignkey_condition_occurrence_person_id"].record()
    assert list(record) == [c for c in columns if c not in ("run_id", "site", "batch_id")]
    assert json.loads(record["examples"]) == ["ORPHAN"]
    assert (record["status"], record["num_violated_rows"], record["severity"]) == (
        "Failed",
        1,
        "fatal",
    )
