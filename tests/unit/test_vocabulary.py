"""The vocabulary loader: Athena folders, the metadata supplement and local code maps."""

from __future__ import annotations

import csv
import datetime as dt
import shutil
from pathlib import Path

import duckdb
import pytest

from omop_etl import settings
from omop_etl.errors import EtlError
from omop_etl.vocabulary import (
    VOCABULARY_TABLES,
    load_code_maps,
    load_vocabulary,
    vocabulary_status,
)
from omop_etl.warehouse import connect_memory

TINY = Path(__file__).resolve().parents[1] / "data" / "vocab_tiny"
TINY_SUPPLEMENT = TINY / "supplement"
CODEMAPS = TINY / "codemaps"

# Data lines (header excluded) of the bundled demo files, counted with `wc -l` minus one.
DEMO_ROWS = {
    "concept": 33973,
    "vocabulary": 59,
    "domain": 50,
    "concept_class": 423,
    "concept_relationship": 24860,
    "relationship": 696,
    "concept_synonym": 0,
    "concept_ancestor": 115241,
    "source_to_concept_map": 2,
    "drug_strength": 0,
}
# Supplement concepts: 33 rows; 10 replace demo placeholder stubs, 23 are new ids.
SUPPLEMENT_ROWS = 35
SUPPLEMENT_REPLACING_PLACEHOLDERS = {
    8507, 8532, 8515, 8516, 8527, 32817, 32827, 32838, 32880, 32882,
}  # fmt: skip

TINY_ROWS = {
    "concept": 4,
    "vocabulary": 3,
    "domain": 3,
    "concept_class": 3,
    "concept_relationship": 3,
    "relationship": 3,
    "concept_synonym": 2,
    "concept_ancestor": 3,
    "source_to_concept_map": 0,
    "drug_strength": 0,
}


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    connection = connect_memory()
    yield connection
    connection.close()


def _athena_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream, delimiter="\t", quoting=csv.QUOTE_NONE))


def _copy_tiny(tmp_path: Path) -> Path:
    folder = tmp_path / "athena"
    shutil.copytree(TINY, folder, ignore=shutil.ignore_patterns("supplement", "codemaps"))
    return folder


def _replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[number - 1] = text + "\n"
    path.write_text("".join(lines), encoding="utf-8")


# ---------------------------------------------------------------------------------------
# The bundled demo vocabulary and its supplement


@pytest.fixture(scope="module")
def demo() -> tuple[duckdb.DuckDBPyConnection, dict[str, int]]:
    connection = connect_memory()
    counts = load_vocabulary(
        connection,
        settings.demo_vocabulary_dir(),
        supplement=settings.vocabulary_supplement_dir(),
    )
    yield connection, counts
    connection.close()


def test_demo_with_supplement_row_counts(demo):
    con, counts = demo
    new_concepts = SUPPLEMENT_ROWS - len(SUPPLEMENT_REPLACING_PLACEHOLDERS)
    expected = {**DEMO_ROWS, "concept": DEMO_ROWS["concept"] + new_concepts}
    assert counts == expected
    assert expected["concept"] == 33998
    assert vocabulary_status(con) == expected


def test_demo_dates_are_parsed(demo):
    con, _ = demo
    row = con.execute(
        "SELECT valid_start_date, valid_end_date, invalid_reason, standard_concept "
        "FROM vocab.concept WHERE concept_id = 3030354"
    ).fetchone()
    assert row == (dt.date(2018, 6, 14), dt.date(2018, 6, 15), "U", None)
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'vocab' AND table_name = 'concept'"
        ).fetchall()
    )
    assert types["concept_id"] == "INTEGER"
    assert types["valid_start_date"] == "DATE"


def test_supplement_fills_metadata_concepts(demo):
    con, _ = demo
    rows = dict(
        con.execute(
            "SELECT concept_id, (concept_name, domain_id, vocabulary_id, standard_concept) "
            "FROM vocab.concept WHERE concept_id IN (0, 8507, 8532, 8527, 262, 32817, 756265)"
        ).fetchall()
    )
    assert rows[0] == ("No matching concept", "Metadata", "None", None)
    assert rows[8507] == ("MALE", "Gender", "Gender", "S")
    assert rows[8532] == ("FEMALE", "Gender", "Gender", "S")
    assert rows[8527] == ("White", "Race", "Race", "S")
    assert rows[262] == ("Emergency Room and Inpatient Visit", "Visit", "Visit", "S")
    assert rows[32817] == ("EHR", "Type Concept", "Type Concept", "S")
    assert rows[756265] == ("OMOP CDM Version 5.4.0", "Metadata", "CDM", "S")
    stubs = con.execute(
        "SELECT count(*) FROM vocab.concept WHERE concept_id IN "
        f"({', '.join(map(str, SUPPLEMENT_REPLACING_PLACEHOLDERS))}) AND vocabulary_id = 'Unknown'"
    ).fetchone()[0]
    assert stubs == 0


def test_supplement_ids_do_not_clash_with_demo():
    demo_rows = {
        int(r["concept_id"]): r
        for r in _athena_rows(settings.demo_vocabulary_dir() / "CONCEPT.csv")
    }
    supplement = _athena_rows(settings.vocabulary_supplement_dir() / "CONCEPT.csv")
    ids = [int(r["concept_id"]) for r in supplement]
    assert len(ids) == SUPPLEMENT_ROWS
    assert len(set(ids)) == len(ids), "duplicate ids in the supplement"
    shared = {i for i in ids if i in demo_rows}
    # A shared id is only ever a placeholder stub in the demo, never a real concept.
    assert shared == SUPPLEMENT_REPLACING_PLACEHOLDERS
    for concept_id in shared:
        stub = demo_rows[concept_id]
        assert stub["vocabulary_id"] == "Unknown"
        assert stub["concept_code"] == f"placeholder-{concept_id}"


def test_supplement_rows_refer_to_demo_vocabularies_domains_classes():
    folder = settings.demo_vocabulary_dir()
    vocabularies = {r["vocabulary_id"] for r in _athena_rows(folder / "VOCABULARY.csv")}
    domains = {r["domain_id"] for r in _athena_rows(folder / "DOMAIN.csv")}
    classes = {r["concept_class_id"] for r in _athena_rows(folder / "CONCEPT_CLASS.csv")}
    for row in _athena_rows(settings.vocabulary_supplement_dir() / "CONCEPT.csv"):
        assert row["vocabulary_id"] in vocabularies, row
        assert row["domain_id"] in domains, row
        assert row["concept_class_id"] in classes, row
        assert row["standard_concept"] in ("", "S", "C"), row


# ---------------------------------------------------------------------------------------
# The tiny hand-made folder


def test_tiny_folder_loads(con):
    seen: list[tuple[str, int]] = []
    counts = load_vocabulary(con, TINY, progress=lambda table, rows: seen.append((table, rows)))
    assert counts == TINY_ROWS
    assert seen == [(table.name, TINY_ROWS[table.name]) for table in VOCABULARY_TABLES]


def test_double_quotes_stay_literal(con):
    load_vocabulary(con, TINY)
    name = con.execute("SELECT concept_name FROM vocab.concept WHERE concept_id = 38003565")
    assert name.fetchone()[0] == 'Payer enrollment status "Deceased"'
    synonym = con.execute(
        "SELECT concept_synonym_name FROM vocab.concept_synonym WHERE concept_id = 38003565"
    )
    assert synonym.fetchone()[0] == 'Deceased "payer" status'


def test_tiny_dates_and_nulls(con):
    load_vocabulary(con, TINY)
    row = con.execute(
        "SELECT valid_start_date, valid_end_date, invalid_reason, standard_concept "
        "FROM vocab.concept WHERE concept_id = 3004249"
    ).fetchone()
    assert row == (dt.date(1996, 9, 6), dt.date(2099, 12, 31), None, "S")


def test_reload_is_idempotent(con):
    first = load_vocabulary(con, TINY, supplement=TINY_SUPPLEMENT)
    second = load_vocabulary(con, TINY, supplement=TINY_SUPPLEMENT)
    assert first == second
    assert vocabulary_status(con) == first


def test_tiny_supplement_adds_new_keys_and_replaces_only_placeholders(con):
    counts = load_vocabulary(con, TINY, supplement=TINY_SUPPLEMENT)
    assert counts["concept"] == TINY_ROWS["concept"] + 1  # 9201 new; 8532 replaced a stub
    assert counts["vocabulary"] == TINY_ROWS["vocabulary"] + 1  # Visit new; Gender kept
    names = dict(
        con.execute(
            "SELECT concept_id, concept_name FROM vocab.concept "
            "WHERE concept_id IN (8507, 8532, 9201)"
        ).fetchall()
    )
    assert names == {8507: "MALE", 8532: "FEMALE", 9201: "Inpatient Visit"}
    gender = con.execute(
        "SELECT vocabulary_name FROM vocab.vocabulary WHERE vocabulary_id = 'Gender'"
    )
    assert gender.fetchone()[0] == "OMOP Gender"


def test_windows_line_ends_and_byte_order_mark(con, tmp_path):
    folder = _copy_tiny(tmp_path)
    for path in folder.iterdir():
        bom = b"\xef\xbb\xbf" if path.name == "CONCEPT.csv" else b""
        path.write_bytes(bom + path.read_bytes().replace(b"\n", b"\r\n"))
    assert load_vocabulary(con, folder) == TINY_ROWS
    row = con.execute(
        "SELECT concept_code, invalid_reason FROM vocab.concept WHERE concept_id = 38003565"
    ).fetchone()
    assert row == ("OMOP generated", "D")


def test_reload_replaces_previous_contents(con):
    load_vocabulary(con, settings.demo_vocabulary_dir())
    assert load_vocabulary(con, TINY) == TINY_ROWS


def test_status_is_none_before_loading(con):
    assert vocabulary_status(con) is None
    assert vocabulary_status(con, "elsewhere") is None


def test_other_schema(con):
    counts = load_vocabulary(con, TINY, "vocab_test")
    assert counts == TINY_ROWS
    assert vocabulary_status(con, "vocab_test") == TINY_ROWS
    assert vocabulary_status(con) is None


# ---------------------------------------------------------------------------------------
# Broken folders


def test_missing_concept_file_names_the_folder(con, tmp_path):
    folder = _copy_tiny(tmp_path)
    (folder / "CONCEPT.csv").unlink()
    with pytest.raises(EtlError, match=r"athena has no CONCEPT\.csv"):
        load_vocabulary(con, folder)


def test_missing_folder(con, tmp_path):
    with pytest.raises(EtlError, match="does not exist"):
        load_vocabulary(con, tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("line", "text", "expected"),
    [
        (
            3,
            "abc\tFEMALE\tGender\tGender\tGender\tS\tF\t19700101\t20991231\t",
            r"CONCEPT\.csv: line 3: column concept_id: \"abc\" is not an integer",
        ),
        (
            4,
            "3004249\tSystolic\tMeasurement\tLOINC\tClinical Observation\tS\t8480-6\t"
            "1996096\t20991231\t",
            r"CONCEPT\.csv: line 4: column valid_start_date: \"1996096\" is not a date",
        ),
        (
            2,
            "8507\t\tGender\tGender\tGender\tS\tM\t19700101\t20991231\t",
            r"CONCEPT\.csv: line 2: column concept_name: value is missing",
        ),
        (
            5,
            "38003565\ttoo many\tType Concept\tDeath Type\tDeath Type\t\tX\t19700101\t"
            "20200820\tD\textra",
            r"CONCEPT\.csv: line 5: Expected Number of Columns: 10 Found: 11",
        ),
    ],
)
def test_broken_file_names_file_and_line(con, tmp_path, line, text, expected):
    folder = _copy_tiny(tmp_path)
    _replace_line(folder / "CONCEPT.csv", line, text)
    with pytest.raises(EtlError, match=expected):
        load_vocabulary(con, folder)


def test_broken_header(con, tmp_path):
    folder = _copy_tiny(tmp_path)
    _replace_line(folder / "DOMAIN.csv", 1, "domain_id,domain_name,domain_concept_id")
    with pytest.raises(EtlError, match=r"DOMAIN\.csv: line 1: .*comma-separated"):
        load_vocabulary(con, folder)


def test_failed_load_keeps_the_previous_vocabulary(con, tmp_path):
    before = load_vocabulary(con, TINY)
    folder = _copy_tiny(tmp_path)
    (folder / "CONCEPT.csv").write_text(
        (TINY / "CONCEPT.csv").read_text(encoding="utf-8")
        + "9999\tNew\tVisit\tVisit\tVisit\tS\tNEW\t19700101\t20991231\t\n",
        encoding="utf-8",
    )
    # Every table but the broken ancestor file would load; none of it must stay.
    _replace_line(folder / "concept_ancestor.csv", 3, "3004249\tx\t0\t0")
    with pytest.raises(EtlError, match=r"concept_ancestor\.csv: line 3"):
        load_vocabulary(con, folder)
    assert vocabulary_status(con) == before
    names = con.execute("SELECT count(*) FROM vocab.concept WHERE concept_id = 9999").fetchone()
    assert names[0] == 0


def test_broken_supplement_keeps_the_previous_vocabulary(con, tmp_path):
    before = load_vocabulary(con, TINY)
    supplement = tmp_path / "supplement"
    shutil.copytree(TINY_SUPPLEMENT, supplement)
    _replace_line(
        supplement / "CONCEPT.csv",
        4,
        "9201\tInpatient Visit\tVisit\tVisit\tVisit\tS\tIP\t1970\t20991231\t",
    )
    with pytest.raises(EtlError, match=r"supplement/CONCEPT\.csv: line 4: column valid_start_date"):
        load_vocabulary(con, TINY, supplement=supplement)
    assert vocabulary_status(con) == before


# ---------------------------------------------------------------------------------------
# Local code maps

STCM_HEADER = (
    "source_code,source_concept_id,source_vocabulary_id,source_code_description,"
    "target_concept_id,target_vocabulary_id,valid_start_date,valid_end_date,invalid_reason"
)
START, END = dt.date(1970, 1, 1), dt.date(2099, 12, 31)


def _stcm(con: duckdb.DuckDBPyConnection, vocabulary: str) -> list[tuple]:
    return con.execute(
        "SELECT source_code, source_concept_id, source_code_description, target_concept_id, "
        "target_vocabulary_id, valid_start_date, valid_end_date, invalid_reason "
        "FROM vocab.source_to_concept_map WHERE source_vocabulary_id = ? ORDER BY source_code",
        [vocabulary],
    ).fetchall()


def _code_map(path: Path, *rows: str) -> Path:
    """A code map file with the source_to_concept_map columns and these rows (line 2 on)."""
    path.write_text("\n".join([STCM_HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def _load_error(con: duckdb.DuckDBPyConnection, paths: list[Path], **kwargs) -> str:
    with pytest.raises(EtlError) as caught:
        load_code_maps(con, paths, **kwargs)
    return str(caught.value)


@pytest.fixture
def tiny_with_mmhg(tmp_path: Path) -> Path:
    """The tiny folder plus mm[Hg] (8876, UCUM), the unit its code maps map to."""
    folder = _copy_tiny(tmp_path)
    with (folder / "CONCEPT.csv").open("a", encoding="utf-8") as stream:
        stream.write(
            "8876\tmillimeter mercury column\tUnit\tUCUM\tUnit\tS\tmm[Hg]\t19700101\t20991231\t\n"
        )
    with (folder / "VOCABULARY.csv").open("a", encoding="utf-8") as stream:
        stream.write("UCUM\tUnified Code for Units of Measure\tUCUM\t\t44819107\n")
    return folder


@pytest.fixture
def tiny_vocab(tiny) -> duckdb.DuckDBPyConnection:
    """A warehouse holding the conftest tiny vocabulary (TINY_CONCEPTS): standard SNOMED
    1001/1002, LOINC 2001, non-standard ICD10CM 3001/3002, concept 0."""
    tiny.load_vocabulary()
    connection = duckdb.connect(tiny.warehouse.location)
    yield connection
    connection.close()


def test_code_map_in_source_to_concept_map_form(con, tiny_with_mmhg):
    load_vocabulary(con, tiny_with_mmhg)
    counts = load_code_maps(con, [CODEMAPS / "site_units.csv"])
    assert counts == {str(CODEMAPS / "site_units.csv"): 3}
    assert _stcm(con, "Site units") == [
        ("mmHg", 0, 'millimetre of mercury, "mm Hg"', 8876, "UCUM", dt.date(2020, 1, 1), END, None),
        ("mm[Hg]", 0, "mm[Hg]", 8876, "UCUM", dt.date(2020, 1, 1), END, None),
        ("sys", 0, "systolic", 3004249, "LOINC", START, END, None),
    ]


def test_code_map_in_usagi_form(con):
    load_vocabulary(con, TINY, supplement=TINY_SUPPLEMENT)
    path = CODEMAPS / "usagi_gender.csv"
    assert load_code_maps(con, [path], vocabulary_id="Site gender") == {str(path): 3}
    # Only APPROVED rows of mapping type MAPS_TO; concept 0 is an explicit "no match".
    assert _stcm(con, "Site gender") == [
        ("F", 0, 'Female, "F"', 8532, "Gender", START, END, None),
        ("M", 0, "Male", 8507, "Gender", START, END, None),
        ("X", 0, "Other", 0, "None", START, END, None),
    ]


def test_code_map_in_usagi_review_form(con, tiny_with_mmhg):
    load_vocabulary(con, tiny_with_mmhg)
    path = CODEMAPS / "usagi_review.csv"
    assert load_code_maps(con, [path], vocabulary_id="Site vitals") == {str(path): 2}
    assert _stcm(con, "Site vitals") == [
        ("MMHG", 0, "mm Hg", 8876, "UCUM", START, END, None),
        ("SBP", 0, "Systolic BP", 3004249, "LOINC", START, END, None),
    ]


def test_usagi_vocabulary_defaults_to_the_file_name(con):
    load_vocabulary(con, TINY, supplement=TINY_SUPPLEMENT)
    load_code_maps(con, [CODEMAPS / "usagi_gender.csv"])
    assert len(_stcm(con, "usagi_gender")) == 3


def test_code_maps_reload_is_idempotent_and_keep_other_vocabularies(con):
    load_vocabulary(
        con, settings.demo_vocabulary_dir(), supplement=settings.vocabulary_supplement_dir()
    )
    paths = [CODEMAPS / "site_units.csv", CODEMAPS / "usagi_gender.csv"]
    load_code_maps(con, paths, vocabulary_id="Site gender")
    load_code_maps(con, paths, vocabulary_id="Site gender")
    per_vocabulary = dict(
        con.execute(
            "SELECT source_vocabulary_id, count(*) FROM vocab.source_to_concept_map GROUP BY 1"
        ).fetchall()
    )
    assert per_vocabulary == {"Synthea units": 2, "Site units": 3, "Site gender": 3}


def test_code_map_replaces_rows_of_its_vocabulary(con, tmp_path, tiny_with_mmhg):
    load_vocabulary(con, tiny_with_mmhg)
    load_code_maps(con, [CODEMAPS / "site_units.csv"])
    smaller = tmp_path / "site_units.csv"
    lines = (CODEMAPS / "site_units.csv").read_text(encoding="utf-8").splitlines()
    smaller.write_text("\n".join(lines[:2]) + "\n", encoding="utf-8")
    load_code_maps(con, [smaller])
    assert [row[0] for row in _stcm(con, "Site units")] == ["mmHg"]


def test_good_code_map_loads_every_row_as_written(tiny_vocab, tmp_path):
    path = _code_map(
        tmp_path / "kcd7.csv",
        "E11.9,0,KCD7,type 2,1001,SNOMED,2020-01-01,20211231,",
        "E10,3001,KCD7,type 1,1002,,,,",
        "X00,,KCD7,no match,0,,,,",
        # a retired map row may keep its old, non-standard target: the transforms skip it
        "E11,0,KCD7,old map,3001,ICD10CM,1970-01-01,2019-12-31,D",
        "R03,0,KCD7,blood pressure,2001,LOINC,2021-01-01,2021-01-01,",
    )
    assert load_code_maps(tiny_vocab, [path]) == {str(path): 5}
    assert _stcm(tiny_vocab, "KCD7") == [
        ("E10", 3001, "type 1", 1002, "SNOMED", START, END, None),
        ("E11", 0, "old map", 3001, "ICD10CM", START, dt.date(2019, 12, 31), "D"),
        ("E119", 0, "type 2", 1001, "SNOMED", dt.date(2020, 1, 1), dt.date(2021, 12, 31), None),
        ("R03", 0, "blood pressure", 2001, "LOINC", dt.date(2021, 1, 1), dt.date(2021, 1, 1), None),
        ("X00", 0, "no match", 0, "None", START, END, None),
    ]


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (
            "E11.9,0,KCD7,diabetes,99999999,SNOMED,,,",
            "target concept 99999999 is not in the vocabulary",
        ),
        (
            "E11.9,0,KCD7,diabetes,99999999,,,,",
            "target concept 99999999 is not in the vocabulary",
        ),
        (
            "E11.9,0,KCD7,diabetes,1001,LOINC,,,",
            "target concept 1001 is in vocabulary SNOMED, "
            "not in LOINC as target_vocabulary_id says",
        ),
        (
            "E11.9,0,KCD7,diabetes,3001,ICD10CM,,,",
            "target concept 3001 is not standard (standard_concept empty); "
            "the transforms count only valid standard concepts as mapped",
        ),
        (
            "E11.9,0,KCD7,diabetes,1001,SNOMED,2021-01-01,2020-01-01,",
            "valid_end_date 2020-01-01 is before valid_start_date 2021-01-01",
        ),
        (
            "E11.9,0,KCD7,diabetes,1001,SNOMED,21000101,,",
            "valid_end_date 2099-12-31 is before valid_start_date 2100-01-01",
        ),
        (
            "E11.9,123,KCD7,diabetes,1001,SNOMED,,,",
            "source concept 123 is not in the vocabulary",
        ),
        (
            "E11.9,0,KCD7,diabetes,1001,SNOMED,2020-02-30,,",
            'column valid_start_date: "2020-02-30" is not a date (YYYY-MM-DD or YYYYMMDD)',
        ),
        (
            "E11.9,0,KCD7,diabetes,1001,SNOMED,,2020/01/01,",
            'column valid_end_date: "2020/01/01" is not a date (YYYY-MM-DD or YYYYMMDD)',
        ),
        (
            "E11.9,0,KCD7,diabetes,1001,SNOMED,,,DU",
            'column invalid_reason: "DU" is not a one-letter reason (D or U)',
        ),
        ("E11.9,0,KCD7,diabetes,,SNOMED,,,", "column target_concept_id: value is missing"),
        ("E11.9,0,,diabetes,1001,SNOMED,,,", "column source_vocabulary_id: value is missing"),
    ],
)
def test_bad_code_map_row_is_refused_with_line_code_and_rule(tiny_vocab, tmp_path, row, problem):
    load_code_maps(tiny_vocab, [_code_map(tmp_path / "kcd7.csv", "I10,0,KCD7,x,1002,,,,")])
    path = _code_map(tmp_path / "broken.csv", "I10,0,KCD7,hypertension,1001,SNOMED,,,", row)
    assert _load_error(tiny_vocab, [path]) == (
        f"code map {path}: 1 bad row, nothing was loaded:\n  line 3, code E11.9: {problem}"
    )
    # nothing of the broken file was applied: the KCD7 rows are the earlier ones
    assert _stcm(tiny_vocab, "KCD7") == [("I10", 0, "x", 1002, "SNOMED", START, END, None)]


def test_row_without_source_code(tiny_vocab, tmp_path):
    path = _code_map(tmp_path / "kcd7.csv", ",0,KCD7,diabetes,1001,SNOMED,,,")
    assert _load_error(tiny_vocab, [path]) == (
        f"code map {path}: 1 bad row, nothing was loaded:\n"
        "  line 2, no code: column source_code: value is missing"
    )


def test_invalid_target_concept_is_refused(con, tmp_path):
    load_vocabulary(con, TINY)
    path = _code_map(tmp_path / "death.csv", "dead,0,Site death,deceased,38003565,,,,")
    assert _load_error(con, [path]) == (
        f"code map {path}: 1 bad row, nothing was loaded:\n"
        "  line 2, code dead: target concept 38003565 is invalid (invalid_reason D); "
        "the transforms count only valid standard concepts as mapped"
    )


def test_every_bad_row_of_every_file_is_listed_and_nothing_is_loaded(tiny_vocab, tmp_path):
    good = _code_map(tmp_path / "good.csv", "C1,0,Site conditions,one,1001,,,,")
    kcd7 = _code_map(
        tmp_path / "kcd7.csv",
        "E11.9,0,KCD7,diabetes,99999999,SNOMED,,,",
        "E10,0,KCD7,type 1,1002,SNOMED,,,",
        "I10,0,KCD7,hypertension,1001,SNOMED,2021-01-01,2020-01-01,",
        "J45,0,KCD7,asthma,3002,,,,",
    )
    edi = _code_map(tmp_path / "edi.csv", "641203250,0,EDI,iron,2001,RxNorm,,,")
    assert _load_error(tiny_vocab, [good, kcd7, edi]) == (
        f"code map {kcd7}: 3 bad rows, nothing was loaded:\n"
        "  line 2, code E11.9: target concept 99999999 is not in the vocabulary\n"
        "  line 4, code I10: valid_end_date 2020-01-01 is before valid_start_date 2021-01-01\n"
        "  line 5, code J45: target concept 3002 is not standard (standard_concept empty); "
        "the transforms count only valid standard concepts as mapped\n"
        f"code map {edi}: 1 bad row, nothing was loaded:\n"
        "  line 2, code 641203250: target concept 2001 is in vocabulary LOINC, "
        "not in RxNorm as target_vocabulary_id says"
    )
    rows = tiny_vocab.execute("SELECT count(*) FROM vocab.source_to_concept_map").fetchone()
    assert rows == (0,)


def test_more_than_twenty_bad_rows_are_counted(tiny_vocab, tmp_path):
    path = _code_map(
        tmp_path / "kcd7.csv", *(f"A{i:02},0,KCD7,code {i},{9000 + i},,,," for i in range(25))
    )
    listed = "".join(
        f"\n  line {i + 2}, code A{i:02}: target concept {9000 + i} is not in the vocabulary"
        for i in range(20)
    )
    assert _load_error(tiny_vocab, [path]) == (
        f"code map {path}: 25 bad rows, nothing was loaded:{listed}\n  … and 5 more bad rows"
    )


@pytest.mark.parametrize(
    ("concept", "problem"),
    [
        ("eight", 'column conceptId: "eight" is not an integer'),
        ("4242", "target concept 4242 is not in the vocabulary"),
        (
            "3001",
            "target concept 3001 is not standard (standard_concept empty); "
            "the transforms count only valid standard concepts as mapped",
        ),
    ],
)
def test_bad_usagi_concept(tiny_vocab, tmp_path, concept, problem):
    broken = tmp_path / "usagi.csv"
    shutil.copy(CODEMAPS / "usagi_gender.csv", broken)
    _replace_line(
        broken,
        3,
        f"F,Female,98,,1.00,APPROVED,EQUAL,jdoe,1,{concept},FEMALE,Gender,MAPS_TO,,jdoe,1,",
    )
    assert _load_error(tiny_vocab, [broken], vocabulary_id="Site gender") == (
        f"code map {broken}: 1 bad row, nothing was loaded:\n  line 3, code F: {problem}"
    )


def test_bad_usagi_review_vocabulary(con, tmp_path, tiny_with_mmhg):
    load_vocabulary(con, tiny_with_mmhg)
    broken = tmp_path / "review.csv"
    shutil.copy(CODEMAPS / "usagi_review.csv", broken)
    _replace_line(
        broken,
        3,
        "MMHG,mm Hg,12,,1.00,8876,millimeter mercury column,LOINC,Unit,S,0,0,Unit,mm[Hg],"
        "1970-01-01,2099-12-31,",
    )
    assert _load_error(con, [broken]) == (
        f"code map {broken}: 1 bad row, nothing was loaded:\n  line 3, code MMHG: "
        "target concept 8876 is in vocabulary UCUM, not in LOINC as targetVocabularyId says"
    )


def test_unreadable_code_map_row(con, tmp_path, tiny_with_mmhg):
    load_vocabulary(con, tiny_with_mmhg)
    broken = tmp_path / "broken_units.csv"
    shutil.copy(CODEMAPS / "site_units.csv", broken)
    _replace_line(broken, 3, "mm[Hg],0,Site units,mm[Hg]")
    assert _load_error(con, [broken]) == (
        f"code map {broken}: line 3: Expected Number of Columns: 9 Found: 4; nothing was loaded"
    )


def test_unknown_code_map_layout(con, tmp_path):
    odd = tmp_path / "odd.csv"
    odd.write_text("code,name\nA,a\n", encoding="utf-8")
    with pytest.raises(EtlError, match=r"odd\.csv: line 1: not a code map"):
        load_code_maps(con, [odd])
