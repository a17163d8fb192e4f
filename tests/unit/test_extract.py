"""Extraction: every source row is loaded, rejected with a rule and a line, or filtered."""

from __future__ import annotations

from pathlib import Path

import pytest

from omop_etl.errors import EtlError
from omop_etl.privacy import pseudonym, site_key


def _reconciliation(tiny) -> dict[str, tuple[int, int, int, int]]:
    return {
        name: (read, loaded, rejected, filtered)
        for name, read, loaded, rejected, filtered in tiny.query(
            "select source_file, rows_read, rows_loaded, rows_rejected, rows_filtered "
            "from stage_tiny.reconciliation"
        )
    }


def test_bad_values_are_rejected_with_file_line_column_rule_and_raw_value(tiny):
    tiny.patient("p1")
    tiny.patient("p2", birth="1970-13-45")  # line 3: impossible date
    tiny.patient("p3")
    tiny.diagnosis("p1", "C1", "2020-01-01")
    tiny.diagnosis("p1", "C1", "01/02/2020")  # line 3: not the spec's date format
    tiny.diagnosis("p1", "", "2020-01-03")  # line 4: no code
    tiny.diagnosis("ghost", "C1", "2020-01-04")  # line 5: unknown patient
    tiny.drug("p1", "D1", "2020-01-01", days="ten")  # line 2: not a whole number
    summary = tiny.run()
    assert tiny.query(
        'select source_file, record_no, "column", rule, raw_value from stage_tiny.rejects '
        "order by source_file, record_no"
    ) == [
        ("diagnoses", 3, "start", "invalid_timestamp:start_datetime", "01/02/2020"),
        ("diagnoses", 4, "code", "missing:code", None),
        # the patient id is kept only as its pseudonym
        ("diagnoses", 5, "patient", "unknown_person", pseudonym("ghost", site_key("tiny"))),
        ("drugs", 2, "days", "invalid_int:days_supply", "ten"),
        ("patients", 3, "birth", "invalid_timestamp:birth_datetime", "1970-13-45"),
    ]
    assert _reconciliation(tiny) == {
        "patients": (3, 2, 1, 0),
        "visits": (0, 0, 0, 0),
        "diagnoses": (4, 1, 3, 0),
        "drugs": (1, 0, 1, 0),
        "charges": (0, 0, 0, 0),
    }
    assert summary.rejects_by_rule == {
        "invalid_int:days_supply": 1,
        "invalid_timestamp:birth_datetime": 1,
        "invalid_timestamp:start_datetime": 1,
        "missing:code": 1,
        "unknown_person": 1,
    }
    assert summary.rows["person"] == 2
    assert summary.rows["condition_occurrence"] == 1


def test_malformed_csv_rows_are_rejected_not_fatal(tiny):
    tiny.patient("p1")
    folder = tiny.write()
    with open(folder / "diagnoses.csv", "a", encoding="utf-8") as fh:
        fh.write("p1,,C1,SNOMED,2020-01-01,,,\r\n")
        fh.write("p1,,C2,SNOMED\r\n")  # line 3: too few fields
        fh.write("p1,,C2,SNOMED,2020-02-02,,,\r\n")
    tiny.load_vocabulary()
    from omop_etl.pipeline import run_site

    run_site("tiny", folder, tiny.warehouse)
    rejects = tiny.query("select source_file, record_no, rule, raw_value from stage_tiny.rejects")
    # the record's text is not kept: it may hold identifiers the spec never reads
    assert rejects == [("diagnoses", 3, "malformed_row:missing_columns", None)]
    assert _reconciliation(tiny)["diagnoses"] == (3, 2, 1, 0)


def test_repeated_events_are_kept_and_a_repeated_patient_is_a_duplicate(tiny):
    tiny.patient("p1")
    tiny.patient("p1")  # the same patient twice
    tiny.diagnosis("p1", "C1", "2020-01-01")
    tiny.diagnosis("p1", "C1", "2020-01-01")  # the same diagnosis again: OMOP keeps both
    tiny.diagnosis("p1", "C1", "2020-01-01")
    summary = tiny.run()
    assert summary.rows["person"] == 1
    assert summary.rows["condition_occurrence"] == 3
    ids = tiny.query("select condition_occurrence_id from cdm_tiny.condition_occurrence")
    assert len(set(ids)) == 3
    assert tiny.query("select source_file, record_no, rule from stage_tiny.rejects") == [
        ("patients", 3, "duplicate:person"),
    ]


def test_a_column_missing_from_the_header_names_site_file_and_column(tiny):
    tiny.patient("p1")
    folder = tiny.write()
    (folder / "drugs.csv").write_text("patient,code,start,stop,days\n", encoding="utf-8")
    tiny.load_vocabulary()
    from omop_etl.pipeline import run_site

    with pytest.raises(EtlError, match=r"site tiny, file drugs.csv: column\(s\) qty .*line 1"):
        run_site("tiny", folder, tiny.warehouse)


def test_a_missing_required_file_is_named(tiny):
    tiny.patient("p1")
    folder = tiny.write()
    (folder / "visits.csv").unlink()
    tiny.load_vocabulary()
    from omop_etl.pipeline import run_site

    with pytest.raises(EtlError, match=r"lacks required file\(s\): visits \(visits.csv\)"):
        run_site("tiny", folder, tiny.warehouse)


def test_a_run_without_vocabulary_says_how_to_load_one(tiny):
    tiny.patient("p1")
    folder = tiny.write()
    from omop_etl.pipeline import run_site

    with pytest.raises(EtlError, match="omop-etl vocab load"):
        run_site("tiny", folder, tiny.warehouse)


def test_cost_lines_are_summed_per_encounter_and_bad_lines_located(tiny):
    tiny.patient("p1")
    tiny.visit("v1", "p1", "2020-01-01 10:00", "2020-01-01 11:00")
    tiny.charge("v1", "10")
    tiny.charge("v1", "5.5")
    tiny.charge("v1", "abc")  # line 4
    tiny.charge("ghost", "3")  # line 5
    tiny.charge("ghost", "4")  # line 6
    summary = tiny.run()
    assert tiny.query(
        "select v.visit_source_value, c.cost_domain_id, c.total_charge, c.cost_type_concept_id "
        "from cdm_tiny.cost c join cdm_tiny.visit_occurrence v "
        "on v.visit_occurrence_id = c.cost_event_id"
    ) == [("v1", "Visit", 15.5, 32810)]
    assert tiny.query(
        'select record_no, "column", rule, raw_value from stage_tiny.rejects '
        "where source_file = 'charges' order by 1"
    ) == [
        (4, "amount", "invalid_double:total_charge", "abc"),
        (5, "visit", "unknown_visit", "ghost"),
        (6, "visit", "unknown_visit", "ghost"),
    ]
    assert _reconciliation(tiny)["charges"] == (5, 2, 3, 0)
    assert summary.rows["cost"] == 1


def test_reject_line_numbers_hold_in_a_large_file(tiny):
    """Line numbers of rejects stay right deep into a large file (400,000 rows, 14 MB)."""
    tiny.patient("p1")
    folder = tiny.write()
    rows = 400_000
    bad = {1_234: "2020-02-30", 399_321: "yesterday"}  # data row -> bad date
    with open(folder / "diagnoses.csv", "w", encoding="utf-8") as fh:
        fh.write("patient,visit,code,system,start,stop,value,unit\n")
        for i in range(rows):
            fh.write(f"p1,,NOPE{i},SNOMED,{bad.get(i, '2020-01-01')},,,\n")
    tiny.load_vocabulary()
    from omop_etl.pipeline import run_site

    summary = run_site("tiny", folder, tiny.warehouse)
    assert tiny.query("select record_no, raw_value from stage_tiny.rejects order by 1") == [
        (1_234 + 2, "2020-02-30"),
        (399_321 + 2, "yesterday"),
    ]
    assert summary.rows["condition_occurrence"] == rows - 2


def test_a_pattern_matching_several_files_accounts_for_each_file(tiny):
    spec = tiny.mappings / "sites" / "tiny.yaml"
    spec.write_text(spec.read_text().replace("pattern: diagnoses.csv", "pattern: diagnoses*.csv"))
    tiny.patient("p1")
    folder = tiny.write()
    (folder / "diagnoses.csv").unlink()
    header = "patient,visit,code,system,start,stop,value,unit\n"
    (folder / "diagnoses_1.csv").write_text(
        header + "p1,,C1,SNOMED,2020-01-01,,,\np1,,C1,SNOMED,bad,,,\n", encoding="utf-8"
    )
    (folder / "diagnoses_2.csv").write_text(
        header + "ghost,,C1,SNOMED,2020-01-02,,,\np1,,C2,SNOMED,2020-01-03,,,\n"
        "p1,,C2,SNOMED,2020-01-04,,,\n",
        encoding="utf-8",
    )
    tiny.load_vocabulary()
    from omop_etl.pipeline import run_site

    summary = run_site("tiny", folder, tiny.warehouse)
    by_file = {
        Path(f.path).name: (f.rows_read, f.rows_loaded, f.rows_rejected) for f in summary.files
    }
    assert by_file["diagnoses_1.csv"] == (2, 1, 1)
    assert by_file["diagnoses_2.csv"] == (3, 2, 1)
    assert [
        (Path(path).name, line, rule)
        for path, line, rule in tiny.query(
            "select file_path, record_no, rule from stage_tiny.rejects order by 1, 2"
        )
    ] == [
        ("diagnoses_1.csv", 3, "invalid_timestamp:start_datetime"),
        ("diagnoses_2.csv", 2, "unknown_person"),
    ]
    assert summary.rows["condition_occurrence"] == 3


def test_a_file_the_spec_does_not_describe_is_reported_not_ignored(tiny, capsys):
    tiny.patient("p1")
    folder = tiny.write()
    (folder / "notes.csv").write_text("id,text\n1,hello\n", encoding="utf-8")
    tiny.load_vocabulary()
    from omop_etl.cli import print_summary
    from omop_etl.pipeline import run_site

    summary = run_site("tiny", folder, tiny.warehouse)
    assert [(f.source_file, Path(f.path).name, f.note) for f in summary.files if not f.target] == [
        ("(not in spec)", "notes.csv", "not described by the site spec; not read")
    ]
    print_summary(summary)
    assert "warning: notes.csv: not described by the site spec; not read" in " ".join(
        capsys.readouterr().out.split()
    )
