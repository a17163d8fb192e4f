"""KCD7 and EDI codes matched against Athena's own Korean vocabularies.

A hospital with a full Athena download needs no KCD-7 or EDI code map: export codes
find their KCD7/EDI concept in canonical form (omop_etl.codes), whichever way either
side writes them, and map through the vocabulary's own 'Maps to'. The vocabulary is
tests/data/athena_korean, a few rows in Athena's exact download layout (its README says
which rows are real and which are invented for the test).
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import duckdb

from omop_etl.codes import NORMAL_FORMS, canonical_case_sql, canonical_systems_sql, normalized_sql
from omop_etl.pipeline import RunSummary, run_site
from omop_etl.sql import literal
from omop_etl.vocabulary import load_code_maps, load_vocabulary
from transforms.runner import sql_text

ATHENA_KOREAN = Path(__file__).resolve().parents[1] / "data" / "athena_korean"

# the vocabulary's concepts (tests/data/athena_korean/CONCEPT.csv)
COVID_19 = 37311061  # SNOMED 840539006, standard
ESSENTIAL_HYPERTENSION = 320128  # SNOMED 59621000, standard
TYPE_2_DIABETES = 201826  # SNOMED 44054006, standard
OXYGEN_THERAPY = 4239130  # SNOMED procedure, standard
AMLODIPINE_5_MG_TABLET = 1332419  # RxNorm clinical drug, standard
GLUCOSE_SERUM = 3004501  # LOINC 2345-7, standard
MG_PER_DL = 8840
KCD7_U07_1 = 42501115  # 'U07.1' Maps to COVID_19
KCD7_U18 = 586415  # 'U18' Maps to COVID_19
KCD7_I10_9 = 42488328  # 'I10.9', no 'Maps to' in this vocabulary
KCD7_E11_9 = 2000000001  # 'E11.9' Maps to TYPE_2_DIABETES (invented id)
EDI_AMLODIPINE = 2000000101  # '645301920' Maps to AMLODIPINE_5_MG_TABLET (invented id)
EDI_OXYGEN = 42360508  # 'M0040' Maps to OXYGEN_THERAPY
EDI_OXYGEN_NIGHT = 42294092  # 'M0040010' Maps to OXYGEN_THERAPY
EDI_GLUCOSE = 2000000102  # 'B2710' Maps to GLUCOSE_SERUM (invented id)


def _korean_site(tiny) -> None:
    """The tiny site with EDI prescriptions, on the Athena Korean vocabulary and no code map."""
    spec = tiny.mappings / "sites" / "tiny.yaml"
    text = spec.read_text(encoding="utf-8")
    assert "code_system: {const: RxNorm}" in text
    spec.write_text(text.replace("code_system: {const: RxNorm}", "code_system: {const: EDI}"))
    con = duckdb.connect(tiny.warehouse.location)
    try:
        load_vocabulary(con, ATHENA_KOREAN, "vocab")
    finally:
        con.close()


def _korean_export(tiny) -> None:
    tiny.patient("p1")
    tiny.patient("p2", sex="F")
    # KCD-7 written three ways, a 3-character code in lower case, Athena's own form
    tiny.diagnosis("p1", "U07.1", "2021-03-01", system="KCD7")
    tiny.diagnosis("p1", "u071", "2021-03-02", system="KCD7")
    tiny.diagnosis("p2", "U071", "2021-03-03", system="KCD7")
    tiny.diagnosis("p2", "u18", "2021-03-04", system="KCD7")
    tiny.diagnosis("p1", "E11.9", "2021-03-05", system="KCD7")
    tiny.diagnosis("p2", "I109", "2021-03-06", system="KCD7")  # a concept without 'Maps to'
    tiny.diagnosis("p1", "U99.9", "2021-03-07", system="KCD7")  # not in the vocabulary
    # EDI fee codes in lower and upper case; their target's domain picks the CDM table
    tiny.diagnosis("p1", "m0040010", "2021-03-08", system="EDI")
    tiny.diagnosis("p2", "M0040", "2021-03-09", system="EDI")
    tiny.diagnosis("p1", "b2710", "2021-03-10", system="EDI", value="105", unit="mg/dL")
    tiny.drug("p2", "645301920", "2021-03-11", stop="2021-04-09", days="30", qty="30")


def _run(tiny) -> RunSummary:
    return run_site("tiny", tiny.write(), tiny.warehouse)


def _conditions(tiny) -> list[tuple]:
    return tiny.query_named(
        "select p.person_source_value, condition_concept_id, condition_source_concept_id, "
        "condition_source_value, condition_start_date "
        "from cdm_tiny.condition_occurrence join cdm_tiny.person p using (person_id)"
    )


def test_kcd7_and_edi_codes_map_through_athenas_own_vocabularies_without_a_code_map(tiny):
    _korean_site(tiny)
    _korean_export(tiny)
    summary = _run(tiny)

    # the vocabulary keeps Athena's forms; only the match compares canonical forms
    assert tiny.query(
        "select concept_code from vocab.concept where concept_id in (42501115, 42294092) "
        "order by concept_id"
    ) == [("M0040010",), ("U07.1",)]
    assert tiny.query("select count(*) from vocab.source_to_concept_map") == [(0,)]

    # condition_source_value is the code in its canonical form, as staged
    assert _conditions(tiny) == sorted(
        [
            ("p1", COVID_19, KCD7_U07_1, "U071", date(2021, 3, 1)),
            ("p1", COVID_19, KCD7_U07_1, "U071", date(2021, 3, 2)),
            ("p2", COVID_19, KCD7_U07_1, "U071", date(2021, 3, 3)),
            ("p2", COVID_19, KCD7_U18, "U18", date(2021, 3, 4)),
            ("p1", TYPE_2_DIABETES, KCD7_E11_9, "E119", date(2021, 3, 5)),
            ("p2", 0, KCD7_I10_9, "I109", date(2021, 3, 6)),
            ("p1", 0, 0, "U999", date(2021, 3, 7)),
        ]
    )
    assert tiny.query_named(
        "select p.person_source_value, procedure_concept_id, procedure_source_concept_id, "
        "procedure_source_value, procedure_date "
        "from cdm_tiny.procedure_occurrence join cdm_tiny.person p using (person_id)"
    ) == [
        ("p1", OXYGEN_THERAPY, EDI_OXYGEN_NIGHT, "M0040010", date(2021, 3, 8)),
        ("p2", OXYGEN_THERAPY, EDI_OXYGEN, "M0040", date(2021, 3, 9)),
    ]
    assert tiny.query_named(
        "select p.person_source_value, measurement_concept_id, measurement_source_concept_id, "
        "measurement_source_value, value_as_number, unit_concept_id, unit_source_value "
        "from cdm_tiny.measurement join cdm_tiny.person p using (person_id)"
    ) == [("p1", GLUCOSE_SERUM, EDI_GLUCOSE, "B2710", 105.0, MG_PER_DL, "mg/dL")]
    assert tiny.query_named(
        "select p.person_source_value, drug_concept_id, drug_source_concept_id, "
        "drug_source_value, drug_exposure_start_date, days_supply "
        "from cdm_tiny.drug_exposure join cdm_tiny.person p using (person_id)"
    ) == [("p2", AMLODIPINE_5_MG_TABLET, EDI_AMLODIPINE, "645301920", date(2021, 3, 11), 30)]
    assert summary.rows["observation"] == 0 and summary.rows["device_exposure"] == 0

    # codes with no standard concept: the unknown one and the one Athena has not mapped
    assert summary.unmapped_codes == 2
    assert tiny.query(
        "select source_vocabulary_id, source_code, frequency, domain_id "
        "from stage_tiny.unmapped_codes order by source_code"
    ) == [("KCD7", "I109", 1, "Condition"), ("KCD7", "U999", 1, "Condition")]


def test_a_code_map_row_without_a_source_concept_gets_the_vocabularys(tiny):
    _korean_site(tiny)
    tiny.patient("p1")
    tiny.diagnosis("p1", "I10.9", "2021-05-01", system="KCD7")
    tiny.diagnosis("p1", "M0040", "2021-05-02", system="EDI")
    tiny.diagnosis("p1", "2345-7", "2021-05-03", system="LOINC", value="99", unit="mg/dL")
    tiny.diagnosis("p1", "U99.9", "2021-05-04", system="KCD7")
    # a local map as hospitals write them: source_concept_id 0, codes in any form
    codemap = tiny.root / "korean.csv"
    codemap.write_text(
        "source_code,source_concept_id,source_vocabulary_id,source_code_description,"
        "target_concept_id,target_vocabulary_id,valid_start_date,valid_end_date,invalid_reason\n"
        "i109,0,KCD7,Essential hypertension,320128,SNOMED,,,\n"
        "m0040,0,EDI,Oxygen inhalation,4239130,SNOMED,,,\n"
        "2345-7,0,LOINC,Glucose,3004501,LOINC,,,\n"
        "U99.9,0,KCD7,Local special-purpose code,37311061,SNOMED,,,\n",
        encoding="utf-8",
    )
    con = duckdb.connect(tiny.warehouse.location)
    try:
        load_code_maps(con, [codemap], "vocab")
    finally:
        con.close()
    summary = _run(tiny)

    # the map's target, the vocabulary's source concept (0 only where it has none)
    assert tiny.query(
        "select condition_concept_id, condition_source_concept_id, condition_source_value "
        "from cdm_tiny.condition_occurrence order by condition_start_date"
    ) == [(ESSENTIAL_HYPERTENSION, KCD7_I10_9, "I109"), (COVID_19, 0, "U999")]
    assert tiny.query(
        "select procedure_concept_id, procedure_source_concept_id, procedure_source_value "
        "from cdm_tiny.procedure_occurrence"
    ) == [(OXYGEN_THERAPY, EDI_OXYGEN, "M0040")]
    assert tiny.query(
        "select measurement_concept_id, measurement_source_concept_id, measurement_source_value "
        "from cdm_tiny.measurement"
    ) == [(GLUCOSE_SERUM, GLUCOSE_SERUM, "2345-7")]
    assert summary.unmapped_codes == 0


def test_the_lookups_canonical_forms_are_those_of_omop_etl_codes():
    sql = sql_text("work", "02_concept_lookup")
    # the text generated from NORMAL_FORMS, as the file holds it
    case = canonical_case_sql("c.concept_code", "c.vocabulary_id", indent=" " * 8)
    assert case in sql, f"paste this CASE into 02_concept_lookup.sql:\n{case}"
    systems = canonical_systems_sql()
    lists = re.findall(r"\bin (\('[^)]*\))", sql)
    assert lists == [systems, systems], f"both vocabulary lists must be {systems}"
    assert set(NORMAL_FORMS) == {"KCD7", "EDI"}

    # and what it does agrees with the form of the export side, for both systems
    samples = [
        ("KCD7", "U07.1", "U071"),
        ("KCD7", "u07.1", "U071"),
        ("KCD7", " E11.9 ", "E119"),
        ("KCD7", "J15", "J15"),
        ("KCD7", "S72.020", "S72020"),
        ("EDI", "m0040010", "M0040010"),
        ("EDI", " 645301920", "645301920"),
        ("EDI", "B2710", "B2710"),
    ]
    values = ", ".join(f"({literal(s)}, {literal(c)})" for s, c, _ in samples)
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"select {case}, {normalized_sql('c.concept_code', 'c.vocabulary_id')} "
            f"from (values {values}) as c (vocabulary_id, concept_code)"
        ).fetchall()
    finally:
        con.close()
    assert rows == [(canonical, canonical) for _, _, canonical in samples]


def test_the_athena_korean_folder_is_in_athenas_layout_and_flags_its_invented_ids():
    concept = (ATHENA_KOREAN / "CONCEPT.csv").read_text(encoding="utf-8").splitlines()
    assert concept[0].split("\t") == [
        "concept_id",
        "concept_name",
        "domain_id",
        "vocabulary_id",
        "concept_class_id",
        "standard_concept",
        "concept_code",
        "valid_start_date",
        "valid_end_date",
        "invalid_reason",
    ]
    rows = [line.split("\t") for line in concept[1:]]
    assert all(len(row) == 10 and re.fullmatch(r"[0-9]{8}", row[7]) for row in rows)
    kcd7 = [row for row in rows if row[3] == "KCD7"]
    # Athena's KCD7 codes: a dot after the 3rd character whenever digits follow
    assert all(re.fullmatch(r"[A-Z][0-9]{2}(\.[0-9]{1,3})?", row[6]) for row in kcd7)
    assert all(row[4] == "KCD7 code" and row[5] == "" for row in kcd7)
    readme = (ATHENA_KOREAN / "README.md").read_text(encoding="utf-8")
    invented = {row[0] for row in rows if int(row[0]) >= 2_000_000_000}
    assert invented == {"2000000001", "2000000101", "2000000102"}
    assert all(f"`{concept_id}`" in readme for concept_id in invented)
