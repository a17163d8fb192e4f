"""Each transform rule on a tiny site, through the real pipeline, with exact values."""

from __future__ import annotations

from datetime import date

ID_BASE = 3 << 27  # the tiny site's id block is 3


def test_domain_routing_follows_the_standard_concept(tiny):
    tiny.patient("p1")
    tiny.diagnosis("p1", "C1", "2020-01-01")
    # a LOINC lab code in the diagnosis file lands in measurement
    tiny.diagnosis("p1", "L1", "2020-01-02", system="LOINC", value="5.5", unit="mg/dL")
    tiny.run()
    assert tiny.query(
        "select condition_concept_id, condition_source_value, condition_start_date "
        "from cdm_tiny.condition_occurrence"
    ) == [(1001, "C1", date(2020, 1, 1))]
    assert tiny.query(
        "select measurement_concept_id, measurement_source_value, value_as_number, "
        "unit_concept_id, unit_source_value from cdm_tiny.measurement"
    ) == [(2001, "L1", 5.5, 8840, "mg/dL")]


def test_one_source_code_mapping_to_two_concepts_gives_two_rows(tiny):
    tiny.patient("p1")
    tiny.diagnosis("p1", "I1", "2020-03-01", system="ICD10CM")
    tiny.run()
    assert tiny.query(
        "select condition_concept_id, condition_source_concept_id, condition_source_value "
        "from cdm_tiny.condition_occurrence order by 1"
    ) == [(1001, 3001, "I1"), (1002, 3001, "I1")]
    ids = tiny.query("select condition_occurrence_id from cdm_tiny.condition_occurrence")
    assert len({i for (i,) in ids}) == 2


def test_unmapped_codes_are_kept_with_concept_zero(tiny):
    tiny.patient("p1")
    tiny.diagnosis("p1", "NOPE", "2020-01-01")  # unknown SNOMED code
    tiny.diagnosis("p1", "X9", "2020-01-01", system="LOCALSYS")  # unknown vocabulary
    tiny.drug("p1", "D404", "2020-01-01")
    summary = tiny.run()
    assert tiny.query(
        "select condition_concept_id, condition_source_concept_id, condition_source_value "
        "from cdm_tiny.condition_occurrence order by condition_source_value"
    ) == [(0, 0, "NOPE"), (0, 0, "X9")]
    # the unmapped drug stays in its file's default domain
    assert tiny.query("select drug_concept_id, drug_source_value from cdm_tiny.drug_exposure") == [
        (0, "D404")
    ]
    assert summary.rows["observation"] == 0


def test_maps_to_value_fills_value_as_concept_id(tiny):
    tiny.patient("p1")
    tiny.diagnosis("p1", "I2", "2021-05-05", system="ICD10CM")
    tiny.run()
    assert tiny.query(
        "select observation_concept_id, value_as_concept_id, observation_source_concept_id "
        "from cdm_tiny.observation"
    ) == [(4001, 4501, 3002)]


def test_observation_period_gap_of_548_days_starts_a_new_period(tiny):
    tiny.patient("p1")
    tiny.diagnosis("p1", "C1", "2020-01-01", stop="2020-01-10")
    tiny.diagnosis("p1", "C2", "2021-07-10")  # 547 days after 2020-01-10: same period
    tiny.diagnosis("p1", "C1", "2023-01-09")  # 548 days after 2021-07-10: new period
    tiny.patient("p2")
    tiny.diagnosis("p2", "C1", "2019-06-01")
    tiny.run()
    assert tiny.query_named(
        "select p.person_source_value, op.observation_period_start_date, "
        "op.observation_period_end_date, op.period_type_concept_id "
        "from cdm_tiny.observation_period op join cdm_tiny.person p using (person_id)"
    ) == [
        ("p1", date(2020, 1, 1), date(2021, 7, 10), 32817),
        ("p1", date(2023, 1, 9), date(2023, 1, 9), 32817),
        ("p2", date(2019, 6, 1), date(2019, 6, 1), 32817),
    ]


def test_death_alone_makes_no_observation_period(tiny):
    tiny.patient("p1", death="2022-02-02")
    tiny.patient("p2", sex="F")
    tiny.diagnosis("p2", "C1", "2020-01-01")
    tiny.run()
    assert tiny.query_named(
        "select p.person_source_value, d.death_date, d.death_type_concept_id "
        "from cdm_tiny.death d join cdm_tiny.person p using (person_id)"
    ) == [("p1", date(2022, 2, 2), 32817)]
    assert tiny.query_named(
        "select p.person_source_value from cdm_tiny.observation_period "
        "join cdm_tiny.person p using (person_id)"
    ) == [("p2",)]


def test_condition_era_merges_within_30_days(tiny):
    tiny.patient("p1")
    tiny.diagnosis("p1", "C1", "2020-01-01", stop="2020-01-05")
    tiny.diagnosis("p1", "C1", "2020-02-04")  # 30 days after the end: same era
    tiny.diagnosis("p1", "C1", "2020-03-07")  # 31 days after 2020-02-05: new era
    tiny.diagnosis("p1", "NOPE", "2020-01-01")  # unmapped: no era
    tiny.run()
    assert tiny.query(
        "select condition_concept_id, condition_era_start_date, condition_era_end_date, "
        "condition_occurrence_count from cdm_tiny.condition_era order by 2"
    ) == [
        (1001, date(2020, 1, 1), date(2020, 2, 5), 2),
        (1001, date(2020, 3, 7), date(2020, 3, 8), 1),
    ]


def test_occurrences_tied_on_start_and_end_make_one_era(tiny):
    # found by the five-site demo: the era windows ordered tied rows differently
    for p in range(20):
        tiny.patient(f"p{p}")
        for v in range(12):  # same day, same end: only the value differs
            tiny.diagnosis(f"p{p}", "C1", "2020-01-01", value=str(v))
        tiny.diagnosis(f"p{p}", "C1", "2020-01-20")
    tiny.run()
    assert tiny.query(
        "select condition_era_start_date, condition_era_end_date, condition_occurrence_count, "
        "count(*) from cdm_tiny.condition_era group by all"
    ) == [(date(2020, 1, 1), date(2020, 1, 21), 13, 20)]


def test_drug_era_rolls_up_to_the_ingredient_with_30_day_persistence(tiny):
    tiny.patient("p1")
    tiny.drug("p1", "D1", "2020-01-01", days="10")  # ends 2020-01-10
    tiny.drug("p1", "D2", "2020-02-09", stop="2020-02-19")  # 30 days later: same era
    tiny.drug("p1", "D1", "2020-03-21", stop="2020-03-25")  # 31 days later: new era
    tiny.run()
    assert tiny.query("select drug_exposure_end_date from cdm_tiny.drug_exposure order by 1") == [
        (date(2020, 1, 10),),
        (date(2020, 2, 19),),
        (date(2020, 3, 25),),
    ]
    assert tiny.query(
        "select drug_concept_id, drug_era_start_date, drug_era_end_date, drug_exposure_count, "
        "gap_days from cdm_tiny.drug_era order by 2"
    ) == [
        (5101, date(2020, 1, 1), date(2020, 2, 19), 2, 30),
        (5101, date(2020, 3, 21), date(2020, 3, 25), 1, 0),
    ]


def test_dose_era_where_drug_strength_allows(tiny):
    tiny.patient("p1")
    tiny.drug("p1", "D1", "2020-01-01", days="10", qty="20")  # 10 mg x 20 / 10 days = 20 mg/day
    tiny.drug("p1", "D2", "2020-01-01", days="10", qty="20")  # no drug_strength row
    tiny.run()
    assert tiny.query(
        "select drug_concept_id, unit_concept_id, dose_value, dose_era_start_date, "
        "dose_era_end_date from cdm_tiny.dose_era"
    ) == [(5101, 8576, 20.0, date(2020, 1, 1), date(2020, 1, 10))]


def test_emergency_then_inpatient_is_one_visit_262_with_two_details(tiny):
    tiny.patient("p1")
    tiny.visit("er", "p1", "2020-01-01 10:00", "2020-01-01 14:00", "ER")
    tiny.visit("ip", "p1", "2020-01-01 14:00", "2020-01-05 09:00", "IP")
    tiny.visit("op", "p1", "2020-03-01 09:00", "2020-03-01 09:30", "OP")
    tiny.visit("ip2", "p1", "2020-06-01 09:00", "2020-06-03 09:30", "IP")
    tiny.diagnosis("p1", "C1", "2020-01-02", visit="ip")
    tiny.run()
    visits = tiny.query(
        "select visit_concept_id, visit_start_datetime::varchar, visit_end_datetime::varchar, "
        "visit_source_value from cdm_tiny.visit_occurrence order by visit_start_datetime"
    )
    assert visits == [
        (262, "2020-01-01 10:00:00", "2020-01-05 09:00:00", "er"),
        (9202, "2020-03-01 09:00:00", "2020-03-01 09:30:00", "op"),
        (9201, "2020-06-01 09:00:00", "2020-06-03 09:30:00", "ip2"),
    ]
    assert tiny.query(
        "select d.visit_detail_concept_id, d.visit_detail_source_value, "
        "d.visit_occurrence_id = v.visit_occurrence_id "
        "from cdm_tiny.visit_detail d join cdm_tiny.visit_occurrence v "
        "on v.visit_source_value = 'er' order by 2"
    ) == [(9203, "er", True), (9201, "ip", True)]
    # the diagnosis of the inpatient encounter points at the merged visit and its detail
    assert tiny.query(
        "select v.visit_source_value, d.visit_detail_source_value "
        "from cdm_tiny.condition_occurrence c "
        "join cdm_tiny.visit_occurrence v using (visit_occurrence_id) "
        "join cdm_tiny.visit_detail d using (visit_detail_id)"
    ) == [("er", "ip")]
    # preceding visit links
    assert tiny.query(
        "select v.visit_source_value, p.visit_source_value from cdm_tiny.visit_occurrence v "
        "left join cdm_tiny.visit_occurrence p "
        "on p.visit_occurrence_id = v.preceding_visit_occurrence_id order by v.visit_start_date"
    ) == [("er", None), ("op", "er"), ("ip2", "op")]


def test_a_sub_encounter_is_a_visit_detail_of_its_parents_visit(tiny):
    tiny.patient("p1")
    tiny.visit("stay", "p1", "2020-01-01 10:00", "2020-01-03 10:00", "OP")
    tiny.visit("ward", "p1", "2020-01-01 12:00", "2020-01-02 10:00", "OP", parent="stay")
    tiny.diagnosis("p1", "C1", "2020-01-01", visit="ward")
    summary = tiny.run()
    assert summary.rows["visit_occurrence"] == 1
    assert tiny.query(
        "select d.visit_detail_source_value, parent.visit_detail_source_value "
        "from cdm_tiny.visit_detail d "
        "left join cdm_tiny.visit_detail parent "
        "on parent.visit_detail_id = d.parent_visit_detail_id order by 1"
    ) == [("stay", None), ("ward", "stay")]
    assert tiny.query(
        "select v.visit_source_value, d.visit_detail_source_value "
        "from cdm_tiny.condition_occurrence c "
        "join cdm_tiny.visit_occurrence v using (visit_occurrence_id) "
        "join cdm_tiny.visit_detail d using (visit_detail_id)"
    ) == [("stay", "ward")]


def _snapshot(tiny) -> dict[str, list[tuple]]:
    tables = [
        "person",
        "visit_occurrence",
        "visit_detail",
        "condition_occurrence",
        "drug_exposure",
        "measurement",
        "observation",
        "observation_period",
        "condition_era",
        "drug_era",
        "death",
        "cdm_source",
        "metadata",
    ]
    return {t: tiny.query(f"select * from cdm_tiny.{t} order by all") for t in tables}


def _populate(tiny) -> None:
    tiny.patient("p1", death="2024-01-01")
    tiny.patient("p2", sex="F")
    tiny.visit("v1", "p1", "2020-01-01 10:00", "2020-01-01 11:00", "OP")
    tiny.diagnosis("p1", "C1", "2020-01-01", visit="v1")
    tiny.diagnosis("p1", "I1", "2020-01-01", system="ICD10CM")
    tiny.diagnosis("p2", "L1", "2021-01-01", system="LOINC", value="1", unit="mg/dL")
    tiny.drug("p2", "D1", "2021-01-01", days="5")


def test_rerun_gives_identical_ids_and_rows(tiny):
    _populate(tiny)
    tiny.run()
    first = _snapshot(tiny)
    tiny.run()
    assert _snapshot(tiny) == first
    assert first["person"][0][0] > ID_BASE  # ids come from the site's block


def test_a_fresh_warehouse_gives_the_same_ids(tiny, tmp_path, monkeypatch):
    from conftest import TinySite

    _populate(tiny)
    tiny.run()
    other = TinySite(tmp_path / "other", monkeypatch)
    _populate(other)
    other.run()
    assert _snapshot(other) == _snapshot(tiny)


def test_ids_never_collide_across_sites(tiny):
    _populate(tiny)
    tiny.add_spec("tiny_b", id_block=4)
    tiny.run()
    tiny.run(site="tiny_b")
    a = {i for (i,) in tiny.query("select person_id from cdm_tiny.person")}
    b = {i for (i,) in tiny.query("select person_id from cdm_tiny_b.person")}
    assert a and b and not a & b
    assert min(b) > 4 << 27


def test_later_batch_reuses_the_patients_ids(tiny):
    tiny.patient("p1")
    tiny.diagnosis("p1", "C1", "2020-01-01")
    tiny.run(folder=tiny.root / "export" / "batch1")
    ((pid,),) = tiny.query("select person_id from cdm_tiny.person")
    ((cid,),) = tiny.query("select condition_occurrence_id from cdm_tiny.condition_occurrence")
    tiny.patient("p0")
    tiny.diagnosis("p1", "C2", "2020-05-01")
    tiny.run(folder=tiny.root / "export" / "batch2")
    p1 = tiny.pseudonym("p1")
    assert tiny.query(
        f"select person_id from cdm_tiny.person where person_source_value = '{p1}'"
    ) == [(pid,)]
    assert tiny.query(
        "select condition_occurrence_id from cdm_tiny.condition_occurrence "
        "where condition_source_value = 'C1'"
    ) == [(cid,)]
