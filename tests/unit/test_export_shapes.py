"""Export shapes of real hospitals: compressed files in sub-folders, lookups between the
files of a batch, one file for several entries, records that give several events,
de-identified dates, repeated events, and records counted from the file itself."""

from __future__ import annotations

import gzip
import json
import textwrap
from datetime import datetime

import pytest
import zstandard

from omop_etl.errors import EtlError

HEAD = """
site: tiny
description: tiny export-shape test site
id_block: 3
max_reject_rate: 1.0
code_forms: {SNOMED: ".+", LOINC: ".+", RxNorm: ".+"}  # the tiny vocabulary's codes
defaults:
  date_format: "%Y-%m-%d"
  datetime_format: "%Y-%m-%d %H:%M:%S"
value_maps:
  sex: {M: 8507, F: 8532}
"""

PATIENTS = """
- name: patients
  pattern: {pattern}
  target: person
  columns:
    person_source_value: id
    birth_datetime: {{column: birth, format: date}}
"""


def _export(tiny, files_yaml: str, files: dict[str, bytes], head: str = HEAD, batch: str = "b1"):
    spec = textwrap.dedent(head) + "files:\n" + textwrap.indent(textwrap.dedent(files_yaml), "  ")
    (tiny.mappings / "sites" / "tiny.yaml").write_text(spec, encoding="utf-8")
    folder = tiny.root / "export" / batch
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _run(tiny, files_yaml: str, files: dict[str, bytes], **kwargs):
    folder = _export(tiny, files_yaml, files, **kwargs)
    tiny.load_vocabulary()
    from omop_etl.pipeline import run_site

    return run_site("tiny", folder, tiny.warehouse)


def _recon(tiny) -> dict[tuple[str, str], tuple]:
    """(entry, file name) -> (read, produced, loaded, rejected, filtered, empty)."""
    rows = tiny.query(
        "select source_file, file_path, rows_read, rows_produced, rows_loaded, rows_rejected, "
        "rows_filtered, records_empty from stage_tiny.reconciliation"
    )
    return {(r[0], r[1].split("/export/b1/")[-1]): tuple(r[2:]) for r in rows}


def _rejects(tiny) -> list[tuple]:
    return tiny.query(
        'select source_file, record_no, "column", rule, raw_value from stage_tiny.rejects '
        "order by source_file, record_no, rule"
    )


# -- compressed files and folders -------------------------------------------------------

COMPRESSED = """
- name: patients
  pattern: hosp/patients.csv.gz
  target: person
  columns:
    person_source_value: id
    birth_datetime: {column: birth, format: date}
    gender_concept_id: {column: sex, map: sex, default: 0}
- name: diagnoses
  pattern: "hosp/diagnoses_*.csv.zst"
  target: event
  domain: Condition
  type_concept_id: 32817
  columns:
    person_source_value: id
    code: code
    code_system: {const: SNOMED}
    start_datetime: {column: day, format: date}
- name: notes
  pattern: "**/notes.csv.gz"
  encoding: cp949
  target: event
  domain: Observation
  type_concept_id: 32817
  columns:
    person_source_value: 환자
    code: {const: O1}
    code_system: {const: SNOMED}
    start_datetime: {column: 일자, format: date}
    note: {column: 내용, free_text: scrub}
"""


def test_gzip_zstd_and_cp949_files_in_sub_folders_are_read_as_plain_ones(tiny):
    zstd = zstandard.ZstdCompressor()
    files = {
        "hosp/patients.csv.gz": gzip.compress(b"id,birth,sex\np1,1970-01-01,M\np2,1980-02-02,F\n"),
        "hosp/diagnoses_2026.csv.zst": zstd.compress(
            b"id,code,day\np1,C1,2020-01-01\np2,C2,2020-01-02\np2,C1,2020-13-01\n"
        ),
        "icu/2026/notes.csv.gz": gzip.compress(
            "환자,일자,내용\np1,2020-01-03,경과 양호\n".encode("cp949")
        ),
        "icu/readme.txt": b"not part of the spec\n",
    }
    summary = _run(tiny, COMPRESSED, files)
    assert summary.rows["person"] == 2
    assert sorted(tiny.query("select condition_concept_id from cdm_tiny.condition_occurrence")) == [
        (1001,),
        (1002,),
    ]
    assert tiny.query("select note_text from cdm_tiny.note") == [("경과 양호",)]
    assert _rejects(tiny) == [
        ("diagnoses", 4, "day", "invalid_timestamp:start_datetime", "2020-13-01"),
    ]
    recon = _recon(tiny)
    assert recon[("patients", "hosp/patients.csv.gz")] == (2, 2, 2, 0, 0, 0)
    assert recon[("diagnoses", "hosp/diagnoses_2026.csv.zst")] == (3, 3, 2, 1, 0, 0)
    assert recon[("notes", "icu/2026/notes.csv.gz")] == (1, 1, 1, 0, 0, 0)
    # a file of a sub-folder that no pattern matches is reported, as top-level ones are
    assert recon[("(not in spec)", "icu/readme.txt")] == (0, 0, 0, 0, 0, 0)


def test_a_pattern_that_leaves_the_export_folder_is_refused_by_spec_check(tiny):
    with pytest.raises(EtlError, match=r"pattern: '\.\./other/p\.csv': '\.\.' leaves the export"):
        _run(tiny, PATIENTS.format(pattern="../other/p.csv"), {})


def test_a_symlink_that_leaves_the_export_folder_is_refused_with_its_rule(tiny, tmp_path):
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("id,birth\np1,1970-01-01\n")
    folder = _export(tiny, PATIENTS.format(pattern="hosp/*.csv"), {})
    (folder / "hosp").mkdir(parents=True)
    (folder / "hosp" / "patients.csv").symlink_to(outside)
    tiny.load_vocabulary()
    from omop_etl.pipeline import run_site

    with pytest.raises(
        EtlError,
        match=r"site tiny, file hosp/patients\.csv \(patients\): refused by rule "
        r"symlink_outside_export: it is a symbolic link to .*elsewhere\.csv, outside",
    ):
        run_site("tiny", folder, tiny.warehouse)


# -- lookups between the files of a batch; one file, several entries ----------------------

HOSPITAL = """
- name: patients
  pattern: hosp/patients.csv
  target: person
  lookups:
    stay:                      # race lives in admissions, one row per stay
      file: admissions
      key: subject_id
      columns: [race, admittime]
      choose: {latest: admittime}
  columns:
    person_source_value: subject_id
    birth_datetime: {column: dob, format: date}
    race_source_value: {lookup: stay.race}
- name: admissions
  pattern: hosp/admissions.csv
  target: visit
  type_concept_id: 32817
  columns:
    visit_source_value: hadm_id
    person_source_value: subject_id
    start_datetime: admittime
    end_datetime: dischtime
    visit_concept_id: {const: 9201}
    care_site_source_value: ward
    admitted_from_source_value: admission_location
    discharged_to_source_value: discharge_location
- name: wards                  # the same file gives the care sites
  pattern: hosp/admissions.csv
  target: care_site
  record_key: ward
  columns:
    care_site_source_value: ward
    care_site_name: {sql: "'Ward ' || ward"}
- name: diagnoses              # no date of their own: the admission has it
  pattern: hosp/diagnoses_icd.csv
  target: event
  domain: Condition
  type_concept_id: 32817
  lookups:
    admission:
      file: admissions
      key: [subject_id, hadm_id]
      columns: [admittime]
    names:
      file: dictionary
      key: {icd_code: code}
      columns: {title: long_title}
      missing: keep
  columns:
    person_source_value: subject_id
    visit_source_value: hadm_id
    code: icd_code
    code_system: {const: SNOMED}
    code_name: {lookup: names.title}
    start_datetime: {lookup: admission.admittime}
    status_source_value: {sql: "case when seq_num = '1' then 'primary' else 'secondary' end"}
- name: dictionary
  pattern: hosp/d_icd_diagnoses.csv
  skip: code dictionary (read as the lookup of diagnoses)
"""

HOSPITAL_FILES = {
    "hosp/patients.csv": b"subject_id,dob\n10,2110-05-05\n11,2120-06-06\n",
    "hosp/admissions.csv": (
        b"subject_id,hadm_id,admittime,dischtime,ward,race,admission_location,discharge_location\n"
        b"10,100,2150-01-01 08:00:00,2150-01-05 12:00:00,W1,WHITE,EMERGENCY ROOM,HOME\n"
        b"10,101,2151-03-01 09:00:00,2151-03-02 10:00:00,W2,ASIAN,CLINIC REFERRAL,HOME\n"
        b"11,102,2152-07-07 07:00:00,2152-07-08 08:00:00,W1,BLACK,TRANSFER,SKILLED NURSING\n"
    ),
    "hosp/diagnoses_icd.csv": (
        b"subject_id,hadm_id,seq_num,icd_code\n"
        b"10,100,1,C1\n"
        b"10,100,2,C2\n"
        b"10,101,1,C1\n"
        b"11,999,1,C2\n"  # record 5: an admission the export does not hold
        b"11,100,1,C2\n"  # record 6: the admission of another patient
    ),
    "hosp/d_icd_diagnoses.csv": b"code,long_title\nC1,Condition one\nC2,Condition two\n",
}

DEIDENTIFIED = HEAD + "date_window: {earliest: 2100-01-01, latest: 2300-12-31}\n"


def test_lookups_bring_dates_names_and_race_from_other_files_of_the_batch(tiny):
    summary = _run(tiny, HOSPITAL, HOSPITAL_FILES, head=DEIDENTIFIED)
    # the latest stay's race
    assert sorted(tiny.query("select race_source_value from cdm_tiny.person")) == [
        ("ASIAN",),
        ("BLACK",),
    ]
    assert sorted(
        tiny.query(
            "select condition_start_datetime, condition_source_value, "
            "condition_status_source_value from cdm_tiny.condition_occurrence"
        )
    ) == [
        (datetime(2150, 1, 1, 8), "C1", "primary"),
        (datetime(2150, 1, 1, 8), "C2", "secondary"),
        (datetime(2151, 3, 1, 9), "C1", "primary"),
    ]
    assert sorted(
        tiny.query("select care_site_source_value, care_site_name from cdm_tiny.care_site")
    ) == [
        ("W1", "Ward W1"),
        ("W2", "Ward W2"),
    ]
    assert sorted(
        tiny.query(
            "select admitted_from_source_value, discharged_to_source_value "
            "from cdm_tiny.visit_occurrence"
        )
    ) == [
        ("CLINIC REFERRAL", "HOME"),
        ("EMERGENCY ROOM", "HOME"),
        ("TRANSFER", "SKILLED NURSING"),
    ]
    assert _rejects(tiny) == [
        ("diagnoses", 5, "subject_id, hadm_id", "lookup_missing:admission", None),
        ("diagnoses", 6, "subject_id, hadm_id", "lookup_missing:admission", None),
        # the second and third stay in W1 and W2: the later record supersedes
        ("wards", 2, "ward", "duplicate:care_site", "W1"),
    ]
    recon = _recon(tiny)
    assert recon[("admissions", "hosp/admissions.csv")] == (3, 3, 3, 0, 0, 0)
    assert recon[("wards", "hosp/admissions.csv")] == (3, 3, 2, 1, 0, 0)
    assert recon[("diagnoses", "hosp/diagnoses_icd.csv")] == (5, 5, 3, 2, 0, 0)
    assert recon[("dictionary", "hosp/d_icd_diagnoses.csv")] == (2, 2, 0, 0, 2, 0)
    assert summary.status == "published"


def test_several_records_with_one_key_and_no_choice_are_ambiguous(tiny):
    spec = HOSPITAL.replace("      choose: {latest: admittime}\n", "")
    _run(tiny, spec, HOSPITAL_FILES, head=DEIDENTIFIED)
    assert [r for r in _rejects(tiny) if r[0] == "patients"] == [
        ("patients", 2, "subject_id", "lookup_ambiguous:stay", None),
    ]
    assert tiny.query("select race_source_value from cdm_tiny.person") == [("BLACK",)]


STATUS = (
    "status_source_value: {sql: \"case when seq_num = '1' then 'primary' else 'secondary' end\"}"
)


def test_spec_sql_sees_only_the_record_and_its_lookups(tiny):
    reading = HOSPITAL.replace(
        STATUS,
        'status_source_value: {sql: "(select max(code) '
        "from read_csv('hosp/d_icd_diagnoses.csv'))\"}",
    )
    with pytest.raises(
        EtlError,
        match=r"site tiny, spec diagnoses\.columns\.status_source_value\.sql: spec SQL sees only "
        r"the record and its lookups: no subqueries \(to use another file of the batch, "
        r"declare a lookup\)",
    ):
        _run(tiny, reading, HOSPITAL_FILES, head=DEIDENTIFIED)
    scalar = HOSPITAL.replace(
        STATUS,
        "status_source_value: {sql: \"read_text('/etc/hostname')\"}",
    )
    with pytest.raises(EtlError, match=r"status_source_value\.sql: .*table function"):
        _run(tiny, scalar, HOSPITAL_FILES, head=DEIDENTIFIED)
    uses_lookup = HOSPITAL.replace(
        STATUS,
        'status_source_value: {sql: "admission.admittime"}',
    )
    _run(tiny, uses_lookup, HOSPITAL_FILES, head=DEIDENTIFIED)
    assert sorted(
        tiny.query("select condition_status_source_value from cdm_tiny.condition_occurrence")
    ) == [
        ("2150-01-01 08:00:00",),
        ("2150-01-01 08:00:00",),
        ("2151-03-01 09:00:00",),
    ]


# -- one record, several events ---------------------------------------------------------

FHIR = """
- name: patients
  pattern: "Patient.*.ndjson"
  format: ndjson
  target: person
  columns:
    person_source_value: {json: "$.id"}
    birth_datetime: {json: "$.birthDate", format: iso8601}
    race_source_value:
      json: "$.extension[?(@.url=='http://hl7.org/fhir/us/core/StructureDefinition/us-core-race')].extension[?(@.url=='ombCategory')].valueCoding.code"
- name: observations
  pattern: "Observation.*.ndjson"
  format: ndjson
  target: event
  domain: Measurement
  type_concept_id: 32817
  columns: &observation
    person_source_value:
      {json: "$.subject.reference", transform: "replace({value}, 'Patient/', '')"}
    code: {json: "$.code.coding[?(@.system=='http://loinc.org')].code"}
    code_system: {const: LOINC}
    start_datetime: {json: "$.effectiveDateTime", format: iso8601}
    value_as_number: {json: "$.valueQuantity.value"}
- name: observation_components     # a panel's values: one event per component
  pattern: "Observation.*.ndjson"
  format: ndjson
  target: event
  domain: Measurement
  type_concept_id: 32817
  each: {json: "$.component"}
  columns:
    person_source_value:
      {json: "$.subject.reference", transform: "replace({value}, 'Patient/', '')"}
    code: {element: "$.code.coding[?(@.system=='http://loinc.org')].code"}
    code_system: {const: LOINC}
    start_datetime: {json: "$.effectiveDateTime", format: iso8601}
    value_as_number: {element: "$.valueQuantity.value"}
    unit_source_value: {element: "$.valueQuantity.unit"}
"""

RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"


def _ndjson(*resources) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in resources).encode()


def _coding(code: str) -> dict:
    return {
        "coding": [
            {"system": "urn:local", "code": "x"},
            {"system": "http://loinc.org", "code": code},
        ]
    }


def test_fhir_panel_components_each_become_an_event_counted_apart_from_records(tiny):
    patient = {
        "resourceType": "Patient",
        "id": "a1",
        "birthDate": "1980-02-02",
        "extension": [
            {"url": "other", "valueString": "x"},
            {
                "url": RACE,
                "extension": [
                    {"url": "text", "valueString": "Asian"},
                    {"url": "ombCategory", "valueCoding": {"code": "2028-9"}},
                ],
            },
        ],
    }
    panel = {
        "resourceType": "Observation",
        "subject": {"reference": "Patient/a1"},
        "code": _coding("L1"),
        "effectiveDateTime": "2021-03-04T01:00:00Z",
        "component": [
            {"code": _coding("L1"), "valueQuantity": {"value": 120, "unit": "mg/dL"}},
            {"code": _coding("L1"), "valueQuantity": {"value": 80, "unit": "mg/dL"}},
            {"code": _coding("L1"), "valueQuantity": {"value": "high", "unit": "mg/dL"}},
        ],
    }
    single = {**panel, "component": None, "valueQuantity": {"value": 5.5}}
    del single["component"]
    observations = _ndjson(panel, single) + b"{not json\n" + b"\n"
    summary = _run(
        tiny,
        FHIR,
        {"Patient.000.ndjson": _ndjson(patient), "Observation.000.ndjson": observations},
    )
    assert tiny.query("select race_source_value from cdm_tiny.person") == [("2028-9",)]
    measurements = tiny.query("select value_as_number, unit_source_value from cdm_tiny.measurement")
    assert sorted(measurements, key=lambda m: (m[0] is None, m[0] or 0)) == [
        (5.5, None),
        (80.0, "mg/dL"),
        (120.0, "mg/dL"),
        (None, None),  # the panel's own observation, with no value
    ]
    recon = _recon(tiny)
    # three records (a blank line is none): the panel, a single value, a broken line
    assert recon[("observations", "Observation.000.ndjson")] == (3, 3, 2, 1, 0, 0)
    # the panel gives three rows, the single value none, the broken line one reject
    assert recon[("observation_components", "Observation.000.ndjson")] == (3, 4, 2, 2, 0, 1)
    assert _rejects(tiny) == [
        (
            "observation_components",
            1,
            "element $.valueQuantity.value (element 3)",
            "invalid_double:value_as_number",
            "high",
        ),
        ("observation_components", 3, "record (element 0)", "malformed_json", None),
        ("observations", 3, "record", "malformed_json", None),
    ]
    assert summary.status == "published"


WIDE = """
- name: patients
  pattern: patients.csv
  target: person
  columns:
    person_source_value: id
    birth_datetime: {column: birth, format: date}
- name: vitals                 # one column per vital sign
  pattern: vitals.csv
  target: event
  domain: Measurement
  type_concept_id: 32817
  each: {columns: [glucose, weight]}
  columns:
    person_source_value: patient
    start_datetime: taken
    code: {element: name, map: vital_codes}
    code_system: {const: LOINC}
    value_as_number: {element: value}
    unit_source_value: {element: name, map: vital_units}
"""
WIDE_HEAD = (
    HEAD
    + """
value_maps:
  sex: {M: 8507}
  vital_codes: {glucose: L1, weight: W1}
  vital_units: {glucose: mg/dL, weight: kg}
"""
)


def test_a_wide_row_gives_one_event_per_column_with_a_value(tiny):
    files = {
        "patients.csv": b"id,birth\np1,1970-01-01\n",
        "vitals.csv": (
            b"patient,taken,glucose,weight\n"
            b"p1,2020-01-01 08:00:00,98,70.5\n"
            b"p1,2020-01-02 08:00:00,,71\n"
            b"p1,2020-01-03 08:00:00,,\n"
        ),
    }
    _run(tiny, WIDE, files, head=WIDE_HEAD)
    assert sorted(
        tiny.query(
            "select measurement_source_value, measurement_concept_id, value_as_number, "
            "unit_source_value from cdm_tiny.measurement"
        )
    ) == [("L1", 2001, 98.0, "mg/dL"), ("W1", 0, 70.5, "kg"), ("W1", 0, 71.0, "kg")]
    assert _recon(tiny)[("vitals", "vitals.csv")] == (3, 3, 3, 0, 0, 1)


# -- dates of de-identified exports, time zones ------------------------------------------

DATED = """
- name: patients
  pattern: patients.csv
  target: person
  columns:
    person_source_value: id
    birth_datetime: {column: birth, format: date}
    death_datetime: {column: death, format: date}
- name: visits
  pattern: visits.csv
  target: visit
  type_concept_id: 32817
  columns:
    visit_source_value: id
    person_source_value: patient
    start_datetime: {column: start, format: iso8601}
    end_datetime: {column: stop, format: iso8601}
    visit_concept_id: {const: 9202}
"""


def test_dates_outside_the_window_are_the_rows_defect_not_the_batchs(tiny):
    head = HEAD.replace("max_reject_rate: 1.0", "max_reject_rate: 0.5") + (
        "timezone: Asia/Seoul\ndate_window: {earliest: 2100-01-01, latest: 2300-12-31}\n"
    )
    files = {
        "patients.csv": b"id,birth,death\np1,2101-01-01,1800-01-01\np2,2102-02-02,\n",
        "visits.csv": (
            b"id,patient,start,stop\n"
            b"v1,p1,2150-03-04T01:00:00Z,2150-03-04T12:00:00+09:00\n"  # offsets: to Seoul
            b"v2,p2,2150-03-05T10:00:00,\n"  # no offset: the site's own time
            b"v3,p2,2025-01-01T10:00:00,\n"  # before the window: the visit is nothing
        ),
    }
    summary = _run(tiny, DATED, files, head=head)
    assert summary.status == "published"
    # the death date of 1800 is dropped and flagged; the patient stays
    assert sorted(
        tiny.query(
            "select year_of_birth, death_datetime is null from cdm_tiny.person "
            "left join cdm_tiny.death using (person_id)"
        )
    ) == [
        (2101, True),
        (2102, True),
    ]
    assert tiny.query("select rule, rows, example_record from stage_tiny.flags") == [
        ("out_of_window:death_datetime", 1, 2)
    ]
    assert sorted(
        tiny.query("select visit_start_datetime, visit_end_datetime from cdm_tiny.visit_occurrence")
    ) == [
        (datetime(2150, 3, 4, 10), datetime(2150, 3, 4, 12)),
        (datetime(2150, 3, 5, 10), datetime(2150, 3, 5, 10)),  # no end: the visit's start
    ]
    assert _rejects(tiny) == [
        ("visits", 4, "start", "out_of_window:start_datetime", "2025-01-01T10:00:00"),
    ]


def test_a_batch_with_many_dates_outside_the_window_is_blocked_with_the_window_named(tiny):
    head = HEAD.replace("max_reject_rate: 1.0", "max_reject_rate: 0.05")
    files = {
        "patients.csv": b"id,birth,death\np1,1970-01-01,\n",
        "visits.csv": b"id,patient,start,stop\nv1,p1,2150-03-04,\nv2,p1,2020-01-01,\n",
    }
    from omop_etl.pipeline import BatchBlocked

    with pytest.raises(
        BatchBlocked,
        match=r"out_of_window:start_datetime \(1; dates must lie in 1900-01-02\.\.\d{4}-\d\d-\d\d "
        r"\(the spec's date_window\); e\.g\. visits\.csv record 2\)",
    ):
        _run(tiny, DATED, files, head=head)


# -- repeated events, record keys ---------------------------------------------------------

THERAPY = """
- name: patients
  pattern: patients.csv
  target: person
  columns:
    person_source_value: id
    birth_datetime: {column: birth, format: date}
- name: procedures
  pattern: procedures.csv
  target: event
  domain: Procedure
  type_concept_id: 32817
  columns:
    person_source_value: patient
    code: code
    code_system: {const: SNOMED}
    start_datetime: {column: day, format: date}
- name: orders                 # a prescription system's orders: a later record replaces one
  pattern: orders.csv
  target: event
  domain: Drug
  type_concept_id: 32817
  record_key: order_id
  columns:
    person_source_value: patient
    code: code
    code_system: {const: RxNorm}
    start_datetime: {column: day, format: date}
    quantity: qty
- name: copies                 # an export known to repeat rows: exact copies are duplicates
  pattern: copies.csv
  target: event
  domain: Condition
  type_concept_id: 32817
  duplicates: reject
  columns:
    person_source_value: patient
    code: code
    code_system: {const: SNOMED}
    start_datetime: {column: day, format: date}
"""


def test_repeated_events_are_kept_unless_a_record_key_or_the_spec_says_otherwise(tiny):
    files = {
        "patients.csv": b"id,birth\np1,1970-01-01\n",
        # three therapy sessions on one day, alike in every mapped column
        "procedures.csv": (
            b"patient,code,day,room\np1,O1,2020-01-01,A\np1,O1,2020-01-01,B\np1,O1,2020-01-01,A\n"
        ),
        "orders.csv": (
            b"order_id,patient,code,day,qty\n"
            b"7,p1,D1,2020-02-01,10\n8,p1,D1,2020-02-02,5\n7,p1,D1,2020-02-01,20\n"
        ),
        "copies.csv": b"patient,code,day\np1,C1,2020-03-01\np1,C1,2020-03-01\n",
    }
    summary = _run(tiny, THERAPY, files)
    assert summary.rows["observation"] == 3  # O1 is an Observation concept
    assert len(set(tiny.query("select observation_id from cdm_tiny.observation"))) == 3
    assert sorted(tiny.query("select quantity from cdm_tiny.drug_exposure")) == [(5.0,), (20.0,)]
    assert summary.rows["condition_occurrence"] == 1
    assert _rejects(tiny) == [
        ("copies", 3, None, "duplicate:event", None),
        ("orders", 2, None, "duplicate:event", None),  # order 7 again in record 4
    ]
    ids = sorted(tiny.query("select observation_id from cdm_tiny.observation"))
    from omop_etl.pipeline import run_site

    run_site("tiny", tiny.root / "export" / "b1", tiny.warehouse)
    assert sorted(tiny.query("select observation_id from cdm_tiny.observation")) == ids


# -- records counted from the file --------------------------------------------------------


def test_a_record_over_the_readers_limit_is_a_reject_not_a_silent_loss(tiny):
    big = b"x" * (33 << 20)
    files = {
        "patients.csv": b"id,birth\np1,1970-01-01\np2,1970-01-01\n",
        "notes.csv": b"id,code,day,text\np1,O1,2020-01-01,short\np1,O1,2020-01-02,"
        + big
        + b"\np2,O1,2020-01-03,short too\n",
    }
    notes = """
- name: notes
  pattern: notes.csv
  target: event
  domain: Observation
  type_concept_id: 32817
  columns:
    person_source_value: id
    code: code
    code_system: {const: SNOMED}
    start_datetime: {column: day, format: date}
    note: {column: text, free_text: scrub}
"""
    _run(tiny, PATIENTS.format(pattern="patients.csv") + notes, files)
    assert tiny.query("select count(*) from cdm_tiny.note") == [(2,)]
    assert _rejects(tiny) == [
        ("notes", 3, None, "oversized_record", str(len(b"p1,O1,2020-01-02,") + len(big)))
    ]
    assert _recon(tiny)[("notes", "notes.csv")] == (3, 3, 2, 1, 0, 0)


def test_a_quote_that_never_closes_costs_its_record_only_and_later_numbers_stay_exact(tiny):
    files = {
        "patients.csv": b"id,birth\np1,1970-01-01\n",
        "diagnoses.csv": (
            b"id,code,day,desc\n"
            b"p1,C1,2020-01-01,plain\n"
            b'p1,C1,2020-01-02,"never closed\n'  # record 3
            b"p1,C2,2020-01-03,plain\n"
            b'p1,C2,2020-01-04,"two\nlines"\n'
            b"p1,C2,2020-01-05,too,many\n"  # record 6
            b"p1,C1,2020-13-06,plain\n"  # record 7: its number counts the records before
            b"p1,C1,2020-01-07,plain\n"
        ),
    }
    diagnoses = """
- name: diagnoses
  pattern: diagnoses.csv
  target: event
  domain: Condition
  type_concept_id: 32817
  columns:
    person_source_value: id
    code: code
    code_system: {const: SNOMED}
    start_datetime: {column: day, format: date}
"""
    _run(tiny, PATIENTS.format(pattern="patients.csv") + diagnoses, files)
    assert _rejects(tiny) == [
        ("diagnoses", 3, None, "malformed_row:unterminated_quote", None),
        ("diagnoses", 6, None, "malformed_row:too_many_columns", None),
        ("diagnoses", 7, "day", "invalid_timestamp:start_datetime", "2020-13-06"),
    ]
    assert tiny.query("select count(*) from cdm_tiny.condition_occurrence") == [(4,)]
    assert _recon(tiny)[("diagnoses", "diagnoses.csv")] == (7, 7, 4, 3, 0, 0)


def test_mixed_line_endings_are_read_record_by_record(tiny):
    files = {"patients.csv": b"id,birth\r\np1,1970-01-01\np2,1970-01-02\r\n\r\np3,1970-01-03"}
    _run(tiny, PATIENTS.format(pattern="patients.csv"), files)
    assert sorted(tiny.query("select year_of_birth, day_of_birth from cdm_tiny.person")) == [
        (1970, 1),
        (1970, 2),
        (1970, 3),
    ]
    assert _recon(tiny)[("patients", "patients.csv")] == (3, 3, 3, 0, 0, 0)


# -- renamed columns, specs that extend others, id blocks ------------------------------------


def test_a_column_may_have_one_of_several_names(tiny):
    spec = """
- name: patients
  pattern: patients.csv
  target: person
  columns:
    person_source_value: id
    birth_datetime: {column: [BIRTH_DATE, BIRTHDATE], format: date}
"""
    _run(tiny, spec, {"patients.csv": b"id,BIRTHDATE\np1,1970-01-01\n"})
    assert tiny.query("select year_of_birth from cdm_tiny.person") == [(1970,)]
    with pytest.raises(
        EtlError,
        match=r"site tiny, file patients\.csv: none of the columns BIRTH_DATE, BIRTHDATE named in "
        r"the spec \(patients\.birth_datetime\) is in the header",
    ):
        _run(tiny, spec, {"patients.csv": b"id,DOB\np1,1970-01-01\n"}, batch="b2")


def test_a_spec_extends_a_bundled_one_with_its_name_and_id_block(tiny):
    (tiny.mappings / "sites" / "base_shape.yaml").write_text(
        textwrap.dedent(HEAD)
        .replace("site: tiny", "site: base_shape")
        .replace("id_block: 3", "id_block: 9")
        + "files:\n"
        + textwrap.indent(textwrap.dedent(PATIENTS.format(pattern="patients.csv")), "  ")
    )
    (tiny.mappings / "sites" / "tiny.yaml").write_text(
        "site: tiny\nextends: base_shape\nid_block: 3\nvalue_maps: {extra: {a: 1}, sex: {X: 0}}\n"
    )
    from omop_etl.spec import load_spec

    spec = load_spec("tiny")
    assert (spec.site, spec.id_block, [f.name for f in spec.files]) == ("tiny", 3, ["patients"])
    assert spec.value_maps == {"sex": {"M": 8507, "F": 8532, "X": 0}, "extra": {"a": 1}}


def test_two_sites_with_one_id_block_are_refused(tiny):
    tiny.add_spec("tiny_b", id_block=3)
    from omop_etl.spec import check_id_block, load_spec

    with pytest.raises(EtlError, match=r"id_block 3 is also the id block of tiny_b"):
        check_id_block(load_spec("tiny"))
    tiny.patient("p1")
    with pytest.raises(EtlError, match=r"id_block 3 is also the id block of tiny_b"):
        tiny.run()


PROCEDURES = """
- name: patients
  pattern: Patient.ndjson
  format: ndjson
  target: person
  columns:
    person_source_value: {json: "$.id"}
    birth_datetime: {json: "$.birthDate", format: iso8601}
    gender_concept_id: {json: "$.gender", map: sex, default: 0}
- name: procedures
  pattern: Procedure.ndjson
  format: ndjson
  target: event
  domain: Procedure
  type_concept_id: 32817
  columns:
    person_source_value:
      {json: "$.subject.reference", transform: "replace({value}, 'Patient/', '')"}
    code: {json: "$.code.coding[0].code"}
    code_system: {const: SNOMED}
    start_datetime: {json: ["$.performedDateTime", "$.performedPeriod.start"], format: iso8601}
    end_datetime: {json: "$.performedPeriod.end", format: iso8601}
"""


def test_a_json_rule_takes_the_first_of_several_paths_and_unknown_map_values_are_flagged(tiny):
    patients = _ndjson(
        {"id": "a1", "birthDate": "1980-02-02", "gender": "M"},
        {"id": "a2", "birthDate": "1981-03-03", "gender": "unknown"},
    )
    procedure = {"subject": {"reference": "Patient/a1"}, "code": {"coding": [{"code": "O1"}]}}
    procedures = _ndjson(
        {**procedure, "performedDateTime": "2021-01-01T08:00:00Z"},
        {
            **procedure,
            "performedPeriod": {"start": "2021-02-01T08:00:00Z", "end": "2021-02-01T09:30:00Z"},
        },
    )
    summary = _run(tiny, PROCEDURES, {"Patient.ndjson": patients, "Procedure.ndjson": procedures})
    assert sorted(
        tiny.query("select observation_datetime from cdm_tiny.observation")  # O1: Observation
    ) == [(datetime(2021, 1, 1, 8),), (datetime(2021, 2, 1, 8),)]
    assert sorted(
        tiny.query("select gender_concept_id, gender_source_value from cdm_tiny.person")
    ) == [
        (0, None),
        (8507, None),
    ]
    assert summary.flags_by_rule == {"unmapped_value:gender_concept_id": 1}


RESENT = """
- name: patients
  pattern: Patient.ndjson
  format: ndjson
  target: person
  columns:
    person_source_value: {json: "$.id"}
    birth_datetime: {json: "$.birthDate", format: iso8601}
- name: observations
  pattern: "Observation.*.ndjson"
  format: ndjson
  target: event
  domain: Measurement
  type_concept_id: 32817
  record_key: "$.id"
  columns:
    person_source_value:
      {json: "$.subject.reference", transform: "replace({value}, 'Patient/', '')"}
    code: {json: "$.code.coding[0].code"}
    code_system: {const: LOINC}
    start_datetime: {json: "$.effectiveDateTime", format: iso8601}
    value_as_number: {json: "$.valueQuantity.value"}
"""


def test_a_resource_sent_again_in_a_later_file_supersedes_the_earlier_one(tiny):
    observation = {
        "subject": {"reference": "Patient/a1"},
        "code": {"coding": [{"code": "L1"}]},
        "effectiveDateTime": "2021-01-01T08:00:00Z",
    }
    files = {
        "Patient.ndjson": _ndjson({"id": "a1", "birthDate": "1980-02-02"}),
        "Observation.000.ndjson": _ndjson(
            {**observation, "id": "o1", "valueQuantity": {"value": 1}},
            {**observation, "id": "o2", "valueQuantity": {"value": 7}},
        ),
        "Observation.001.ndjson": _ndjson(
            {**observation, "id": "o1", "valueQuantity": {"value": 2}},  # o1 corrected
        ),
    }
    _run(tiny, RESENT, files)
    assert sorted(tiny.query("select value_as_number from cdm_tiny.measurement")) == [
        (2.0,),
        (7.0,),
    ]
    assert _rejects(tiny) == [("observations", 1, None, "duplicate:event", None)]
    assert tiny.query(
        "select file_path like '%Observation.000.ndjson' from stage_tiny.rejects"
    ) == [(True,)]
