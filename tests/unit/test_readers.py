"""Export dialects: encodings, CSV quirks, Parquet and FHIR NDJSON, through the real pipeline."""

from __future__ import annotations

import json
import textwrap
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HEAD = """
site: tiny
description: tiny dialect test site
id_block: 3
max_reject_rate: 1.0
code_forms: {SNOMED: ".+", LOINC: ".+"}  # the tiny vocabulary's codes (C1, L1 ...)
defaults:
  date_format: "%Y%m%d"
  datetime_format: "%Y%m%d%H%M%S"
value_maps:
  sex: {"남": 8507, "여": 8532, M: 8507, F: 8532, male: 8507, female: 8532}
files:
"""


def _run(tiny, files_yaml: str, files: dict[str, bytes]):
    spec = HEAD + textwrap.indent(textwrap.dedent(files_yaml), "  ")
    (tiny.mappings / "sites" / "tiny.yaml").write_text(spec, encoding="utf-8")
    folder = tiny.root / "export" / "b1"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    tiny.load_vocabulary()
    from omop_etl.pipeline import run_site

    return run_site("tiny", folder, tiny.warehouse)


KOREAN_PATIENTS = """
- name: patients
  pattern: patient.csv
  encoding: cp949
  target: person
  columns:
    person_source_value: 환자번호
    birth_datetime: {column: 생년월일, format: date}
    gender_concept_id: {column: 성별, map: sex, default: 0}
    gender_source_value: 성별
"""


def test_cp949_file_decodes_korean_and_quarantines_undecodable_bytes_as_hex(tiny):
    good = "환자번호,성명,성별,생년월일\r\nP1,김민준,남,19700101\r\nP2,이서연,여,19800202\r\n"
    bad = "P3,박".encode("cp949") + b"\xff\xfe" + ",남,19900303\r\n".encode("cp949")
    summary = _run(tiny, KOREAN_PATIENTS, {"patient.csv": good.encode("cp949") + bad})
    assert sorted(tiny.query("select gender_concept_id from cdm_tiny.person")) == [(8507,), (8532,)]
    assert tiny.query('select record_no, "column", rule, raw_value from stage_tiny.rejects') == [
        (4, "성명", "undecodable:cp949", ("박".encode("cp949") + b"\xff\xfe").hex())
    ]
    (f,) = summary.files
    assert (f.rows_read, f.rows_loaded, f.rows_rejected) == (3, 2, 1)


NOTES = """
- name: patients
  pattern: patients.csv
  target: person
  columns:
    person_source_value: id
    birth_datetime: {column: birth, format: date}
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


def test_utf8_bom_crlf_quoted_newlines_and_undecodable_bytes(tiny):
    patients = "\ufeffid,birth\r\np1,19700101\r\np2,19700101\r\n".encode()
    notes = (
        b'id,code,day,text\r\np1,O1,20200101,"first line\r\nsecond line"\r\n'
        b"p2,O1,20200102,caf\xe9\r\np1,O1,20200103,plain\r\n"
    )
    summary = _run(tiny, NOTES, {"patients.csv": patients, "notes.csv": notes})
    assert sorted(tiny.query("select note_text from cdm_tiny.note")) == [
        ("first line\r\nsecond line",),
        ("plain",),
    ]
    assert tiny.query('select "column", rule, raw_value from stage_tiny.rejects') == [
        ("text", "undecodable:utf-8", b"caf\xe9".hex())
    ]
    counts = {f.source_file: (f.rows_read, f.rows_loaded, f.rows_rejected) for f in summary.files}
    assert counts == {"patients": (2, 2, 0), "notes": (3, 2, 1)}


def test_free_text_identifiers_are_scrubbed_and_counted(tiny):
    patients = b"id,birth\np1,19700101\n"
    notes = (
        b"id,code,day,text\n"
        b"p1,O1,20200101,call 010-1234-5678 after 5\n"
        b"p1,O1,20200102,RRN 900101-1234567 on file\n"
        b"p1,O1,20200103,mail kim@example.com\n"
        b"p1,O1,20200104,dose 10 mg at 08:00\n"
    )
    summary = _run(tiny, NOTES, {"patients.csv": patients, "notes.csv": notes})
    assert sorted(tiny.query("select note_text from cdm_tiny.note")) == [
        ("RRN [REDACTED] on file",),
        ("call [REDACTED] after 5",),
        ("dose 10 mg at 08:00",),
        ("mail [REDACTED]",),
    ]
    assert summary.flags_by_rule == {"scrubbed:note": 3}
    assert tiny.query("select source_file, rule, rows from stage_tiny.flags") == [
        ("notes", "scrubbed:note", 3)
    ]


def test_free_text_is_refused_unless_the_spec_allows_it(tiny):
    import pytest

    from omop_etl.errors import EtlError

    with pytest.raises(EtlError, match=r"columns\.note: free text may carry identifiers"):
        _run(tiny, NOTES.replace("{column: text, free_text: scrub}", "text"), {})


PARQUET = """
- name: patients
  pattern: patients.parquet
  format: parquet
  target: person
  date_format: "%Y-%m-%d"
  columns:
    person_source_value: patient_id
    birth_datetime: {column: birth_date, format: date}
    gender_concept_id: {column: sex, map: sex, default: 0}
- name: events
  pattern: events.parquet
  format: parquet
  target: event
  domain: Condition
  type_concept_id: 32817
  datetime_format: "%Y-%m-%d %H:%M:%S"
  columns:
    person_source_value: patient_id
    code: code
    code_system: system
    start_datetime: start_ts
    value_as_number: value
"""


def test_parquet_typed_columns_and_sentinel_dates(tiny, tmp_path: Path):
    patients = pa.table(
        {
            "patient_id": ["p1", "p2"],
            "birth_date": pa.array([date(1970, 1, 1), date(1900, 1, 1)], pa.date32()),
            "sex": ["male", "female"],
        }
    )
    events = pa.table(
        {
            "patient_id": ["p1", "p1", "p1"],
            "code": ["C1", "L1", "C2"],
            "system": ["SNOMED", "LOINC", "SNOMED"],
            "start_ts": pa.array(
                [datetime(2020, 1, 1, 8), datetime(2020, 1, 2, 9), datetime(9999, 12, 31)],
                pa.timestamp("us"),
            ),
            "value": [None, 5.5, None],
        }
    )
    files = {}
    for name, table in (("patients.parquet", patients), ("events.parquet", events)):
        pq.write_table(table, tmp_path / name)
        files[name] = (tmp_path / name).read_bytes()
    _run(tiny, PARQUET, files)
    assert tiny.query("select condition_concept_id from cdm_tiny.condition_occurrence") == [(1001,)]
    assert tiny.query(
        "select measurement_concept_id, value_as_number from cdm_tiny.measurement"
    ) == [(2001, 5.5)]
    assert sorted(
        tiny.query('select source_file, record_no, "column", rule from stage_tiny.rejects')
    ) == [
        ("events", 3, "start_ts", "sentinel_date:start_datetime"),
        ("patients", 2, "birth_date", "sentinel_date:birth_datetime"),
    ]


FHIR = """
- name: patients
  pattern: Patient.ndjson
  format: ndjson
  target: person
  date_format: "%Y-%m-%d"
  columns:
    person_source_value: {json: "$.id"}
    birth_datetime: {json: "$.birthDate", format: date}
    gender_concept_id: {json: "$.gender", map: sex, default: 0}
- name: conditions
  pattern: Condition.ndjson
  format: ndjson
  target: event
  domain: Condition
  type_concept_id: 32817
  datetime_format: "%Y-%m-%dT%H:%M:%S%z"
  columns:
    person_source_value:
      sql: "replace(json_extract_string(record, '$.subject.reference'), 'Patient/', '')"
    code: {json: "$.code.coding[0].code"}
    code_system: {const: SNOMED}
    start_datetime: {json: "$.onsetDateTime"}
"""


def _ndjson(*resources) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in resources).encode()


def test_fhir_ndjson_resources_and_malformed_lines(tiny):
    patients = _ndjson(
        {
            "resourceType": "Patient",
            "id": "a1",
            "gender": "female",
            "birthDate": "1980-02-02",
            "name": [{"text": "홍길동"}],
        },
    )
    condition = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/a1"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "C1"}]},
        "onsetDateTime": "2021-03-04T10:00:00+09:00",
    }
    conditions = (
        _ndjson(condition)
        + b'{"resourceType": "Condition", "subject": {\n'
        + _ndjson({**condition, "code": {"coding": [{"code": "C2"}]}})
    )
    summary = _run(tiny, FHIR, {"Patient.ndjson": patients, "Condition.ndjson": conditions})
    assert sorted(
        tiny.query(
            "select condition_concept_id, condition_start_date from cdm_tiny.condition_occurrence"
        )
    ) == [
        (1001, date(2021, 3, 4)),
        (1002, date(2021, 3, 4)),
    ]
    assert tiny.query("select record_no, rule from stage_tiny.rejects") == [(2, "malformed_json")]
    counts = {f.source_file: (f.rows_read, f.rows_loaded, f.rows_rejected) for f in summary.files}
    assert counts == {"patients": (1, 1, 0), "conditions": (3, 2, 1)}
