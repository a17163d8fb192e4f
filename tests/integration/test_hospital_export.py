"""A hand-written export in the shape of a real hospital's (tests/data/hospital_export):
every record of every file accounted for, with the exact CDM rows it gives."""

from __future__ import annotations

import gzip
import shutil
from datetime import date, datetime
from pathlib import Path

import pytest

DATA = Path(__file__).parents[1] / "data" / "hospital_export"


@pytest.fixture
def hospital(tiny, monkeypatch):
    """The hospital's spec beside the tiny site's, its export written as the hospital
    sends it (hosp/ and icu/ files gzip'd), and a run of it."""
    shutil.copy(DATA / "hospital.yaml", tiny.mappings / "sites" / "hospital.yaml")
    monkeypatch.setenv("OMOP_ETL_SECRET_HOSPITAL", "test-secret-of-hospital-not-for-real-data")
    export = tiny.root / "hospital" / "2152-03-31"
    for path in sorted((DATA / "source").rglob("*.*")):
        relative = path.relative_to(DATA / "source")
        target = export / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if relative.parts[0] in ("hosp", "icu"):
            target.with_name(target.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        else:
            target.write_bytes(path.read_bytes())
    _load_vocabulary(tiny)
    from omop_etl.pipeline import run_site

    summary = run_site("hospital", export, tiny.warehouse)
    return tiny, summary


# the tiny test vocabulary (tests/conftest.py) and the concepts this export also needs
EXTRA_CONCEPTS = [
    (8527, "White", "Race", "Race", "Race", "S", "5"),
    (8516, "Black or African American", "Race", "Race", "Race", "S", "3"),
    (8515, "Asian", "Race", "Race", "Race", "S", "2"),
    (32856, "Lab", "Type Concept", "Type Concept", "Type Concept", "S", "OMOP4976929"),
]


def _load_vocabulary(tiny) -> None:
    import duckdb
    from conftest import write_athena

    from omop_etl import vocabulary

    folder = write_athena(tiny.root / "athena")
    with open(folder / "CONCEPT.csv", "a", encoding="utf-8") as fh:
        for concept in EXTRA_CONCEPTS:
            fh.write("\t".join(map(str, concept)) + "\t19700101\t20991231\t\n")
    con = duckdb.connect(tiny.warehouse.location)
    try:
        vocabulary.load_vocabulary(con, folder, "vocab")
    finally:
        con.close()


def _by_file(tiny) -> dict[tuple[str, str], tuple]:
    rows = tiny.query(
        "select source_file, file_path, rows_read, rows_produced, rows_loaded, rows_rejected, "
        "rows_filtered, records_empty from stage_hospital.reconciliation"
    )
    return {(r[0], r[1].split("/2152-03-31/")[-1]): tuple(r[2:]) for r in rows}


def test_every_record_of_every_file_is_accounted_for(hospital):
    tiny, summary = hospital
    assert summary.status == "published"
    # (read, produced, loaded, rejected, filtered, records without rows)
    assert _by_file(tiny) == {
        ("patients", "hosp/patients.csv.gz"): (3, 3, 3, 0, 0, 0),
        ("admissions", "hosp/admissions.csv.gz"): (4, 4, 4, 0, 0, 0),
        ("transfers", "hosp/transfers.csv.gz"): (4, 4, 3, 0, 1, 0),
        ("care_units", "hosp/transfers.csv.gz"): (4, 4, 2, 1, 1, 0),
        ("diagnoses", "hosp/diagnoses_icd.csv.gz"): (5, 5, 4, 1, 0, 0),
        ("icd_dictionary", "hosp/d_icd_diagnoses.csv.gz"): (3, 3, 0, 0, 3, 0),
        ("procedures", "hosp/procedures.csv.gz"): (4, 4, 4, 0, 0, 0),
        ("labs", "hosp/labevents.csv.gz"): (4, 4, 2, 2, 0, 0),
        ("lab_items", "hosp/d_labitems.csv.gz"): (1, 1, 0, 0, 1, 0),
        ("vitals", "icu/vitalsign.csv.gz"): (3, 5, 5, 0, 0, 1),
        ("notes", "hosp/discharge.csv.gz"): (4, 4, 2, 2, 0, 0),
        ("observations", "fhir/Observation.000.ndjson"): (3, 3, 2, 1, 0, 0),
        ("observation_components", "fhir/Observation.000.ndjson"): (3, 3, 2, 1, 0, 1),
    }
    oversized = len(
        next(
            line
            for line in (DATA / "source" / "hosp" / "discharge.csv").read_bytes().splitlines()
            if line.startswith(b"40002,")
        )
    )
    assert tiny.query(
        'select source_file, record_no, "column", rule, raw_value from stage_hospital.rejects '
        "order by source_file, record_no"
    ) == [
        ("care_units", 3, "careunit", "duplicate:care_site", "Medicine"),
        ("diagnoses", 6, "subject_id, hadm_id", "lookup_missing:admission", None),
        ("labs", 3, None, "duplicate:event", None),  # labevent 2 again in record 4
        ("labs", 5, "itemid", "lookup_missing:item", None),
        ("notes", 3, None, "oversized_record", str(oversized)),
        ("notes", 4, None, "malformed_row:unterminated_quote", None),
        ("observation_components", 3, "record (element 0)", "malformed_json", None),
        ("observations", 3, "record", "malformed_json", None),
    ]
    assert tiny.query(
        "select source_file, rule, rows, example_record from stage_hospital.flags order by all"
    ) == [
        ("notes", "scrubbed:note", 1, None),
        ("patients", "out_of_window:death_datetime", 1, 4),
    ]


def test_the_cdm_rows_of_the_hospital_export(hospital):
    tiny, summary = hospital
    rows = summary.rows
    assert (
        rows["person"],
        rows["death"],
        rows["visit_occurrence"],
        rows["care_site"],
        rows["condition_occurrence"],
        rows["procedure_occurrence"],
        rows["measurement"],
        rows["observation"],
        rows["note"],
    ) == (3, 1, 4, 2, 5, 4, 11, 3, 2)
    # ages at an anchor year; race from the latest admission; the 1800 death dropped
    assert tiny.query(
        "select year_of_birth, gender_concept_id, race_concept_id, race_source_value "
        "from cdm_hospital.person order by year_of_birth"
    ) == [
        (2090, 8532, 8527, "WHITE"),
        (2106, 8507, 8516, "BLACK/AFRICAN AMERICAN"),
        (2120, 8507, 8515, "ASIAN"),
    ]
    assert tiny.query("select death_date from cdm_hospital.death") == [(date(2152, 3, 1),)]
    # diagnoses take their admission's time; ICD-10 I1 maps to two conditions
    assert tiny.query(
        "select condition_start_datetime, condition_concept_id, condition_source_value, "
        "condition_status_source_value from cdm_hospital.condition_occurrence order by all"
    ) == [
        (datetime(2150, 1, 5, 8), 0, "4019", "secondary"),
        (datetime(2150, 1, 5, 8), 1001, "I1", "primary"),
        (datetime(2150, 1, 5, 8), 1002, "I1", "primary"),
        (datetime(2151, 2, 10, 22), 1001, "I1", "primary"),
        (datetime(2151, 2, 10, 22), 1002, "I1", "primary"),
    ]
    # three same-day therapy sessions are three procedures
    assert tiny.query(
        "select procedure_date, count(*), count(distinct procedure_occurrence_id) "
        "from cdm_hospital.procedure_occurrence group by 1 order by 1"
    ) == [(date(2150, 1, 6), 3, 3), (date(2150, 1, 7), 1, 1)]
    # labs (the corrected result wins), wide vital signs, the FHIR panel's components;
    # the FHIR times with an offset are in the site's time zone (America/New_York)
    assert tiny.query(
        "select measurement_datetime, measurement_source_value, measurement_concept_id, "
        "value_as_number, unit_source_value from cdm_hospital.measurement order by all"
    ) == [
        (datetime(2150, 1, 5, 8, 30), "L1", 2001, 88.0, "/min"),
        (datetime(2150, 1, 5, 8, 30), "VS_DBP", 0, 80.0, "mm[Hg]"),
        (datetime(2150, 1, 5, 8, 30), "VS_SBP", 0, 120.0, "mm[Hg]"),
        (datetime(2150, 1, 5, 8, 30), "VS_TEMP", 0, 98.6, "[degF]"),
        (datetime(2150, 1, 5, 9), "L1", 2001, 1.2, "mg/dL"),
        (datetime(2150, 1, 5, 9, 15), "85354-9", 0, None, None),
        (datetime(2150, 1, 5, 9, 15), "L1", 2001, 76.0, "mg/dL"),
        (datetime(2150, 1, 5, 9, 15), "L1", 2001, 118.0, "mg/dL"),
        (datetime(2150, 1, 6, 9), "L1", 2001, 1.0, "mg/dL"),
        (datetime(2151, 2, 11, 8), "L1", 2001, 72.0, "/min"),
        (datetime(2151, 2, 12, 9), "L1", 2001, 5.5, "mg/dL"),
    ]
    assert tiny.query("select note_text from cdm_hospital.note order by 1") == [
        ("Addendum, family informed.",),
        ("Discharged home. Call [REDACTED] with questions.",),
    ]
    assert tiny.query("select care_site_name from cdm_hospital.care_site order by 1") == [
        ("Emergency Department",),
        ("Medicine",),
    ]
    # the stay with an emergency department transfer is an ER and inpatient visit
    assert tiny.query(
        "select visit_source_value, visit_concept_id, admitted_from_source_value, "
        "discharged_to_source_value from cdm_hospital.visit_occurrence order by 1"
    ) == [
        ("20001", 262, "EMERGENCY ROOM", "HOME"),
        ("20002", 9201, "PHYSICIAN REFERRAL", "HOME HEALTH CARE"),
        ("20003", 9201, "TRANSFER FROM HOSPITAL", "DIED"),
        ("20004", 9201, "WALK-IN/SELF REFERRAL", "HOME"),
    ]
