"""Dated batches of an incremental site, the reject threshold, codes in canonical form."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import duckdb
import pytest

from omop_etl.errors import EtlError
from omop_etl.reports import USAGI_COLUMNS, write_unmapped_report

CDM_TABLES = ("person", "visit_occurrence", "condition_occurrence", "drug_exposure", "death")


def _checksums(tiny) -> dict[str, list[tuple]]:
    return {t: sorted(tiny.query(f"select * from cdm_tiny.{t}")) for t in CDM_TABLES}


def _first_batch(tiny) -> Path:
    tiny.patient("p1")
    tiny.patient("p2", sex="F")
    tiny.visit("v1", "p1", "2020-01-01 08:00", "2020-01-01 09:00")
    tiny.diagnosis("p1", "C1", "2020-01-01", visit="v1")
    tiny.drug("p2", "D1", "2020-01-05", days="10")
    return tiny.write(tiny.root / "export" / "2020-01-31")


def _second_batch(tiny) -> Path:
    """Only what is new: a new patient, p2's death, new events of p1 and p2."""
    for rows in tiny.tables.values():
        rows.clear()
    tiny.patient("p2", sex="F", death="2020-02-20")
    tiny.patient("p3")
    tiny.visit("v2", "p1", "2020-02-01 08:00", "2020-02-01 09:00")
    tiny.diagnosis("p1", "C2", "2020-02-01", visit="v2")
    tiny.diagnosis("p2", "C1", "2020-02-02")
    tiny.diagnosis("p3", "C1", "2020-02-03")
    return tiny.write(tiny.root / "export" / "2020-02-29")


def test_a_later_batch_adds_to_the_earlier_and_keeps_its_ids(tiny):
    tiny.load_vocabulary()
    from omop_etl.pipeline import run_site

    run_site("tiny", _first_batch(tiny), tiny.warehouse)
    first = _checksums(tiny)
    summary = run_site("tiny", _second_batch(tiny), tiny.warehouse)
    second = _checksums(tiny)
    # everything of the first batch is still there, with the same ids
    assert set(first["condition_occurrence"]) <= set(second["condition_occurrence"])
    assert set(first["drug_exposure"]) == set(second["drug_exposure"])
    assert set(first["visit_occurrence"]) <= set(second["visit_occurrence"])
    assert len(second["person"]) == 3 and len(second["condition_occurrence"]) == 4
    # p2's row of the second batch supersedes the first (she died), same person_id
    p2 = tiny.pseudonym("p2")
    assert tiny.query(
        "select d.death_date from cdm_tiny.death d join cdm_tiny.person p using (person_id) "
        f"where p.person_source_value = '{p2}'"
    ) == [(date(2020, 2, 20),)]
    assert {r[0] for r in first["person"]} <= {r[0] for r in second["person"]}
    # the batch's own accounting: its rows only, none rejected
    assert {f.source_file: f.rows_loaded for f in summary.files} == {
        "patients": 2,
        "visits": 1,
        "diagnoses": 3,
        "drugs": 0,
        "charges": 0,
    }
    assert summary.rejects_by_rule == {}


def test_reprocessing_a_batch_changes_nothing(tiny):
    tiny.load_vocabulary()
    from omop_etl.pipeline import run_site

    first = _first_batch(tiny)
    run_site("tiny", first, tiny.warehouse)
    second = _second_batch(tiny)
    run_site("tiny", second, tiny.warehouse)
    before = _checksums(tiny)
    run_site("tiny", second, tiny.warehouse)
    assert _checksums(tiny) == before
    run_site("tiny", first, tiny.warehouse)  # an old batch again: the newer records stay
    assert _checksums(tiny) == before
    assert tiny.query(
        "select batch_id, count(*) from results.run_log where site = 'tiny' group by 1 order by 1"
    ) == [("2020-01-31", 2), ("2020-02-29", 2)]


def test_a_batch_over_the_reject_limit_is_not_published(tiny):
    tiny.load_vocabulary()
    from omop_etl.pipeline import run_site

    run_site("tiny", _first_batch(tiny), tiny.warehouse)
    before = _checksums(tiny)
    spec = tiny.mappings / "sites" / "tiny.yaml"
    spec.write_text(spec.read_text().replace("max_reject_rate: 1.0", "max_reject_rate: 0.2"))
    for rows in tiny.tables.values():
        rows.clear()
    tiny.patient("p4")
    tiny.diagnosis("ghost", "C1", "2020-03-01")
    tiny.diagnosis("ghost", "C2", "2020-03-02")
    tiny.diagnosis("p4", "C1", "2020-03-03x")
    folder = tiny.write(tiny.root / "export" / "2020-03-31")
    with pytest.raises(EtlError) as caught:
        run_site("tiny", folder, tiny.warehouse)
    message = str(caught.value)
    assert "3 of 4 rows rejected (75.0%), over the site's limit of 20.0%" in message
    assert (
        "Worst rules: unknown_person (2; e.g. diagnoses.csv record 2), "
        "invalid_timestamp:start_datetime (1; e.g. diagnoses.csv record 4)"
    ) in message
    assert _checksums(tiny) == before
    assert tiny.query("select status from results.run_log where batch_id = '2020-03-31'") == [
        ("blocked",)
    ]
    assert tiny.query(
        "select rule, count(*) from stage_tiny.rejects where batch_id = '2020-03-31' "
        "group by 1 order by 1"
    ) == [("invalid_timestamp:start_datetime", 1), ("unknown_person", 2)]


def test_kcd7_codes_match_their_map_however_written_and_unmapped_codes_are_reported(tiny):
    tiny.patient("p1")
    for i, code in enumerate(["E11.9", "e119", "E119 ", "U99.9", "U99.9", "X00"]):
        tiny.diagnosis("p1", code, f"2020-01-0{i + 1}", system="KCD7")
    codemap = tiny.root / "kcd7.csv"
    codemap.write_text(
        "source_code,source_concept_id,source_vocabulary_id,source_code_description,"
        "target_concept_id,target_vocabulary_id,valid_start_date,valid_end_date,invalid_reason\n"
        "E11.9,0,KCD7,Type 2 diabetes,1001,SNOMED,1970-01-01,2099-12-31,\n",
        encoding="utf-8",
    )
    tiny.load_vocabulary()
    con = duckdb.connect(tiny.warehouse.location)
    try:
        from omop_etl.vocabulary import load_code_maps

        load_code_maps(con, [codemap], "vocab")
    finally:
        con.close()
    summary = tiny.run()
    assert sorted(
        tiny.query(
            "select condition_concept_id, condition_source_value from cdm_tiny.condition_occurrence"
        )
    ) == [(0, "U999"), (0, "U999"), (0, "X00"), (1001, "E119"), (1001, "E119"), (1001, "E119")]
    assert summary.unmapped_codes == 2
    out = tiny.root / "unmapped.csv"
    con = duckdb.connect(tiny.warehouse.location, read_only=True)
    try:
        assert write_unmapped_report(con, "tiny", summary.batch_id, out) == 2
    finally:
        con.close()
    with open(out, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == USAGI_COLUMNS
    assert rows[1:] == [
        ["U999", "U999", "2", "KCD7", "Condition"],
        ["X00", "X00", "1", "KCD7", "Condition"],
    ]


def test_a_batch_failing_its_contract_is_not_published_and_the_results_are_kept(tiny):
    tiny.load_vocabulary()
    from omop_etl.pipeline import run_site

    run_site("tiny", _first_batch(tiny), tiny.warehouse)
    before = _checksums(tiny)
    assert tiny.query(
        "select count(*), bool_and(success) from results.contract_results "
        "where batch_id = '2020-01-31'"
    ) == [(tiny.query("select count(*) from results.contract_results")[0][0], True)]
    for rows in tiny.tables.values():
        rows.clear()
    tiny.patient("p5")
    tiny.drug("p5", "D1", "2020-03-01", days="400")  # a year and more of days' supply
    folder = tiny.write(tiny.root / "export" / "2020-03-31")
    with pytest.raises(
        EtlError, match=r"1 contract expectation\(s\) failed, nothing was published"
    ):
        run_site("tiny", folder, tiny.warehouse)
    assert _checksums(tiny) == before
    assert tiny.query(
        "select suite, expectation, column_name, element_count, unexpected_count "
        "from results.contract_results where batch_id = '2020-03-31' and not success"
    ) == [("tiny.event", "expect_column_values_to_be_between", "days_supply", 1, 1)]
    assert tiny.query("select status from results.run_log where batch_id = '2020-03-31'") == [
        ("blocked",)
    ]


def test_a_fatal_cdm_check_blocks_the_batch_and_the_dashboard_says_why(tiny, monkeypatch):
    tiny.load_vocabulary()
    from omop_etl.cli import write_dashboard
    from omop_etl.pipeline import run_site
    from transforms import runner

    run_site("tiny", _first_batch(tiny), tiny.warehouse)
    before = _checksums(tiny)
    real = runner.sql_text

    def broken(kind: str, name: str) -> str:  # a transform bug: a concept id that does not exist
        sql = real(kind, name)
        if (kind, name) == ("cdm", "person"):
            sql = sql.replace("coalesce(p.gender_concept_id, 0)", "999999", 1)
        return sql

    monkeypatch.setattr(runner, "sql_text", broken)
    with pytest.raises(EtlError, match=r"fatal CDM check\(s\) failed, nothing was published: "):
        run_site("tiny", _second_batch(tiny), tiny.warehouse)
    assert _checksums(tiny) == before
    ((message,),) = tiny.query(
        "select message from results.run_log where batch_id = '2020-02-29' and status = 'blocked'"
    )
    assert "isForeignKey PERSON.GENDER_CONCEPT_ID failed (3 rows)" in message
    assert tiny.query(
        "select status, severity, num_violated_rows from results.check_results "
        "where batch_id = '2020-02-29' and check_name = 'isForeignKey' "
        "and cdm_table_name = 'PERSON' and cdm_field_name = 'GENDER_CONCEPT_ID'"
    ) == [("Failed", "fatal", 3)]
    index = write_dashboard(tiny.warehouse, tiny.root / "dashboard")
    assert "isForeignKey PERSON.GENDER_CONCEPT_ID failed" in index.read_text(encoding="utf-8")


def test_a_site_overrides_a_check_threshold_in_its_spec(tiny):
    check = (
        "field_standardconceptrecordcompleteness_condition_occurrence_condition_status_concept_id"
    )
    tiny.patient("p1")
    tiny.diagnosis("p1", "C1", "2020-01-01")
    tiny.run()
    spec = tiny.mappings / "sites" / "tiny.yaml"
    spec.write_text(spec.read_text() + f"check_thresholds: {{{check}: 100}}\n")
    tiny.run()
    statuses = tiny.query(
        "select c.status, c.threshold_value from results.check_results c "
        "join results.run_log r using (run_id) "
        f"where c.check_id = '{check}' order by r.finished_at"
    )
    # every condition has status concept 0: over DQD's 5% by default, within the site's 100%
    assert statuses == [("Failed", 5.0), ("Passed", 100.0)]


def test_a_changed_code_map_makes_a_remap_due_and_the_same_command_does_it(tiny):
    from omop_etl import vocabulary
    from omop_etl.pipeline import remap_due, run_export

    tiny.patient("p1")
    tiny.diagnosis("p1", "X9", "2020-01-01", system="LOCAL")
    area = tiny.root / "area"
    tiny.write(area / "2020-01-31")
    tiny.load_vocabulary()
    (summary,), skipped = run_export("tiny", area, tiny.warehouse)
    assert skipped == [] and summary.remap is None
    assert tiny.query("select condition_concept_id from cdm_tiny.condition_occurrence") == [(0,)]
    ((release, maps),) = tiny.query(
        "select vocabulary_release, code_maps_digest from results.run_log"
    )
    assert release == "tiny-test-vocab (22/9/3/10 rows)" and len(maps) == 16
    assert remap_due(tiny.warehouse, "tiny") is None
    assert run_export("tiny", area, tiny.warehouse) == ([], ["2020-01-31"])

    local = tiny.root / "local.csv"
    local.write_text(
        "source_code,source_concept_id,source_vocabulary_id,source_code_description,"
        "target_concept_id,target_vocabulary_id,valid_start_date,valid_end_date,invalid_reason\n"
        "X9,0,LOCAL,condition nine,1001,SNOMED,,,\n"
    )
    con = duckdb.connect(tiny.warehouse.location)
    vocabulary.load_code_maps(con, [local])
    con.close()
    batch, why = remap_due(tiny.warehouse, "tiny")
    assert batch == "2020-01-31"
    assert why.startswith(
        "a re-map is due: since batch 2020-01-31 was published, the code maps changed (digest "
    )
    (summary,), skipped = run_export("tiny", area, tiny.warehouse)
    assert (summary.batch_id, summary.remap, skipped) == ("2020-01-31", why, [])
    assert tiny.query("select condition_concept_id from cdm_tiny.condition_occurrence") == [(1001,)]
    assert remap_due(tiny.warehouse, "tiny") is None
    assert run_export("tiny", area, tiny.warehouse) == ([], ["2020-01-31"])


def test_the_site_dag_maps_its_latest_batch_again_when_the_vocabulary_changed(tiny, monkeypatch):
    from omop_etl import tasks, vocabulary
    from omop_etl.pipeline import run_export

    tiny.patient("p1")
    tiny.diagnosis("p1", "C1", "2020-01-01")
    area = tiny.root / "exports" / "tiny"
    tiny.write(area / "2020-01-31")
    tiny.write(area / "2020-02-29")
    tiny.load_vocabulary()
    monkeypatch.setenv("OMOP_ETL_EXPORTS", str(tiny.root / "exports"))
    monkeypatch.setenv("OMOP_ETL_WAREHOUSE", tiny.warehouse.location)
    assert tasks.pending_batches("tiny") == ["2020-01-31", "2020-02-29"]
    run_export("tiny", area, tiny.warehouse)
    assert tasks.pending_batches("tiny") == []
    # a new vocabulary release: one concept more
    athena = tiny.root / "athena"
    with open(athena / "CONCEPT.csv", "a", encoding="utf-8") as fh:
        fh.write(
            "1003\tCondition three\tCondition\tSNOMED\tDisorder\tS\tC3\t19700101\t20991231\t\n"
        )
    con = duckdb.connect(tiny.warehouse.location)
    vocabulary.load_vocabulary(con, athena, "vocab")
    con.close()
    assert tasks.pending_batches("tiny") == ["2020-02-29"]  # the latest published batch
