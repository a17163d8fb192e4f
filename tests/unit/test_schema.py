"""CDM v5.4 DDL generated from the OHDSI spec, checked against the spec CSVs and DuckDB."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterator

import duckdb
import pytest

from omop_etl import schema, settings
from omop_etl.errors import EtlError

VOCABULARY = [
    "concept",
    "vocabulary",
    "domain",
    "concept_class",
    "concept_relationship",
    "relationship",
    "concept_synonym",
    "concept_ancestor",
    "source_to_concept_map",
    "drug_strength",
]
CDM = [
    "person",
    "observation_period",
    "visit_occurrence",
    "visit_detail",
    "condition_occurrence",
    "drug_exposure",
    "procedure_occurrence",
    "device_exposure",
    "measurement",
    "observation",
    "death",
    "note",
    "note_nlp",
    "specimen",
    "fact_relationship",
    "location",
    "care_site",
    "provider",
    "payer_plan_period",
    "cost",
    "drug_era",
    "dose_era",
    "condition_era",
    "episode",
    "episode_event",
    "metadata",
    "cdm_source",
    "cohort",
    "cohort_definition",
]
# Spec datatype -> DuckDB information_schema.columns.data_type (DuckDB drops VARCHAR lengths).
DUCKDB_REPORTED_TYPES = {
    "integer": "INTEGER",
    "float": "DOUBLE",
    "date": "DATE",
    "datetime": "TIMESTAMP",
}


def _raw_csv(name: str) -> list[dict[str, str]]:
    """The spec CSV read directly, independently of omop_etl.schema."""
    with (settings.CDM_SPEC_DIR / name).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _raw_fields_by_table() -> dict[str, list[dict[str, str]]]:
    by_table: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in _raw_csv("OMOP_CDMv5.4_Field_Level.csv"):
        by_table[row["cdmTableName"]].append(row)
    return dict(by_table)


def _reported_type(spec_type: str) -> str:
    lowered = spec_type.lower()
    return "VARCHAR" if lowered.startswith("varchar(") else DUCKDB_REPORTED_TYPES[lowered]


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    yield connection
    connection.close()


def _insert_person(con: duckdb.DuckDBPyConnection, person_id: int) -> None:
    con.execute(
        "INSERT INTO cdm.person (person_id, gender_concept_id, year_of_birth, "
        "race_concept_id, ethnicity_concept_id) VALUES (?, 8507, 1980, 0, 0)",
        [person_id],
    )


def test_spec_has_39_tables_and_432_fields() -> None:
    spec = schema.load_spec()
    assert len(spec) == 39
    assert sum(len(table.fields) for table in spec.values()) == 432
    assert len(_raw_csv("OMOP_CDMv5.4_Table_Level.csv")) == 39
    assert len(_raw_csv("OMOP_CDMv5.4_Field_Level.csv")) == 432


def test_table_lists_split_the_spec_by_schema() -> None:
    assert schema.vocabulary_tables() == VOCABULARY
    assert schema.cdm_tables() == CDM
    assert list(schema.load_spec()) == CDM[:27] + VOCABULARY + CDM[27:]
    assert schema.load_spec()["cohort"].schema_name == "RESULTS"
    assert schema.load_spec()["concept"].schema_name == "VOCAB"
    assert schema.load_spec()["person"].schema_name == "CDM"


def test_field_model_reads_keys_and_references() -> None:
    spec = schema.load_spec()
    assert spec["condition_occurrence"].fields[1] == schema.Field(
        table="condition_occurrence",
        name="person_id",
        datatype="integer",
        required=True,
        primary_key=False,
        fk_table="person",
        fk_field="person_id",
    )
    assert spec["person"].primary_key == spec["person"].fields[0]
    assert spec["person"].fields[0].name == "person_id"
    assert spec["cohort"].primary_key is None
    assert sum(table.primary_key is not None for table in spec.values()) == 28


def test_reserved_word_field_is_unquoted_in_the_model() -> None:
    quoted = {
        row["cdmFieldName"]
        for row in _raw_csv("OMOP_CDMv5.4_Field_Level.csv")
        if row["cdmFieldName"].startswith('"')
    }
    assert quoted == {'"offset"'}
    assert schema.load_spec()["note_nlp"].field_names[4] == "offset"


def test_duckdb_columns_match_the_spec_field_by_field(con: duckdb.DuckDBPyConnection) -> None:
    schema.create_schema(con, "cdm")
    rows = con.execute(
        "SELECT table_name, column_name, data_type, is_nullable "
        "FROM information_schema.columns WHERE table_schema = 'cdm' "
        "ORDER BY table_name, ordinal_position"
    ).fetchall()
    actual: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for table, column, data_type, nullable in rows:
        actual[table].append((column, data_type, nullable))

    expected = {
        table: [
            (
                row["cdmFieldName"].strip('"'),
                _reported_type(row["cdmDatatype"]),
                "NO" if row["isRequired"] == "Yes" else "YES",
            )
            for row in fields
        ]
        for table, fields in _raw_fields_by_table().items()
    }
    assert sorted(actual) == sorted(expected)
    for table, columns in expected.items():
        assert actual[table] == columns, table
    assert len(rows) == 432


def test_duckdb_ddl_text_for_a_small_table() -> None:
    assert schema.create_table_sql("domain", "vocab", "duckdb") == (
        'CREATE TABLE IF NOT EXISTS "vocab"."domain" (\n'
        '    "domain_id" VARCHAR(20) NOT NULL,\n'
        '    "domain_name" VARCHAR(255) NOT NULL,\n'
        '    "domain_concept_id" INTEGER NOT NULL\n'
        ")"
    )


def test_postgresql_ddl_text_maps_types() -> None:
    note = schema.create_table_sql("note", "cdm", "postgresql").splitlines()
    assert '    "note_text" TEXT NOT NULL,' in note
    assert '    "note_datetime" TIMESTAMP,' in note
    measurement = schema.create_table_sql("measurement", "cdm", "postgresql").splitlines()
    assert '    "value_as_number" NUMERIC,' in measurement
    assert '    "measurement_time" VARCHAR(10),' in measurement
    visit = schema.create_table_sql("visit_occurrence", "cdm", "postgresql").splitlines()
    assert '    "visit_type_concept_id" INTEGER NOT NULL,' in visit  # spelt "Integer" in the spec


@pytest.mark.parametrize(
    ("datatype", "duckdb_type", "postgresql_type"),
    [
        ("integer", "INTEGER", "INTEGER"),
        ("Integer", "INTEGER", "INTEGER"),
        ("bigint", "BIGINT", "BIGINT"),
        ("float", "DOUBLE", "NUMERIC"),
        ("date", "DATE", "DATE"),
        ("datetime", "TIMESTAMP", "TIMESTAMP"),
        ("varchar(50)", "VARCHAR(50)", "VARCHAR(50)"),
        ("varchar(MAX)", "VARCHAR", "TEXT"),
        ("VARCHAR(max)", "VARCHAR", "TEXT"),
    ],
)
def test_sql_type(datatype: str, duckdb_type: str, postgresql_type: str) -> None:
    assert schema.sql_type(datatype, "duckdb") == duckdb_type
    assert schema.sql_type(datatype, "postgresql") == postgresql_type


def test_unknown_datatype_or_dialect_raises() -> None:
    with pytest.raises(EtlError, match="unknown CDM spec datatype 'nvarchar'"):
        schema.sql_type("nvarchar", "duckdb")
    with pytest.raises(EtlError, match="unknown SQL dialect 'mysql'"):
        schema.create_table_sql("person", "cdm", "mysql")


def test_create_schema_is_idempotent(con: duckdb.DuckDBPyConnection) -> None:
    schema.create_schema(con, "cdm")
    _insert_person(con, 1)
    schema.create_schema(con, "cdm")
    tables = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'cdm'"
    ).fetchone()
    assert tables == (39,)
    assert con.execute("SELECT person_id FROM cdm.person").fetchall() == [(1,)]


def test_create_schema_with_a_table_subset(con: duckdb.DuckDBPyConnection) -> None:
    schema.create_schema(con, "vocab", schema.vocabulary_tables())
    names = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'vocab' "
        "ORDER BY table_name"
    ).fetchall()
    assert [name for (name,) in names] == sorted(VOCABULARY)


def test_primary_key_index_rejects_a_duplicate_id(con: duckdb.DuckDBPyConnection) -> None:
    schema.create_schema(con, "cdm")
    schema.apply_constraints(con, "cdm")
    _insert_person(con, 1)
    with pytest.raises(duckdb.ConstraintException):
        _insert_person(con, 1)
    con.execute("INSERT INTO cdm.domain VALUES ('Drug', 'Drug', 13)")
    with pytest.raises(duckdb.ConstraintException):
        con.execute("INSERT INTO cdm.domain VALUES ('Drug', 'Other', 14)")
    assert con.execute("SELECT count(*) FROM cdm.person").fetchone() == (1,)


def test_apply_constraints_creates_the_expected_indexes_idempotently(
    con: duckdb.DuckDBPyConnection,
) -> None:
    schema.create_schema(con, "cdm")
    schema.apply_constraints(con, "cdm")
    schema.apply_constraints(con, "cdm")
    indexes = con.execute(
        "SELECT table_name, index_name, is_unique, expressions FROM duckdb_indexes() "
        "WHERE schema_name = 'cdm'"
    ).fetchall()
    assert len(indexes) == 93
    assert len({name for _, name, _, _ in indexes}) == 93
    assert sum(unique for _, _, unique, _ in indexes) == 28
    by_table: dict[str, set[tuple[str, bool, str]]] = defaultdict(set)
    for table, name, unique, expressions in indexes:
        by_table[table].add((name, unique, expressions))
    assert by_table["condition_occurrence"] == {
        ("xpk_condition_occurrence", True, "[condition_occurrence_id]"),
        ("idx_condition_occurrence_person_id", False, "[person_id]"),
        ("idx_condition_occurrence_condition_concept_id", False, "[condition_concept_id]"),
        ("idx_condition_occurrence_visit_occurrence_id", False, "[visit_occurrence_id]"),
    }
    assert by_table["person"] == {
        ("xpk_person", True, "[person_id]"),
        ("idx_person_gender_concept_id", False, "[gender_concept_id]"),
    }
    assert by_table["concept"] == {
        ("xpk_concept", True, "[concept_id]"),
        ("idx_concept_concept_code", False, "[concept_code]"),
        ("idx_concept_vocabulary_id", False, "[vocabulary_id]"),
        ("idx_concept_domain_id", False, "[domain_id]"),
        ("idx_concept_concept_class_id", False, "[concept_class_id]"),
    }
    assert "cohort" not in by_table


def test_apply_constraints_reports_duplicates_as_etl_error(
    con: duckdb.DuckDBPyConnection,
) -> None:
    schema.create_schema(con, "cdm", ["person"])
    _insert_person(con, 7)
    _insert_person(con, 7)
    with pytest.raises(EtlError, match=r"^cdm\.person: cannot apply .*xpk_person"):
        schema.apply_constraints(con, "cdm")


def test_apply_constraints_needs_cdm_tables(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(EtlError, match="schema 'missing' has no CDM tables"):
        schema.apply_constraints(con, "missing")


@pytest.mark.parametrize(
    "name", ["bad-name", "Cdm", "1cdm", 'cdm"; DROP TABLE x; --', "", "a" * 64]
)
def test_invalid_identifier_raises(con: duckdb.DuckDBPyConnection, name: str) -> None:
    with pytest.raises(EtlError):
        schema.create_schema(con, name)
    with pytest.raises(EtlError):
        schema.create_table_sql("person", name)
    assert con.execute("SELECT count(*) FROM information_schema.tables").fetchone() == (0,)


def test_unknown_table_raises_before_anything_is_created(
    con: duckdb.DuckDBPyConnection,
) -> None:
    with pytest.raises(EtlError, match=r"'persons' is not a CDM v5\.4 table"):
        schema.create_schema(con, "cdm", ["person", "persons"])
    schemata = con.execute(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'cdm'"
    ).fetchone()
    assert schemata == (0,)


def test_reserved_word_column_is_quoted_in_ddl() -> None:
    assert '    "offset" VARCHAR(50),' in schema.create_table_sql("note_nlp", "_x1").splitlines()
    assert schema.create_table_sql("note_nlp", "_x1").startswith(
        'CREATE TABLE IF NOT EXISTS "_x1"."note_nlp" (\n'
    )


def test_duckdb_gets_no_foreign_keys() -> None:
    assert schema.foreign_key_sql("condition_occurrence", "cdm", "vocab", "duckdb") == []


def test_postgres_ddl_contains_keys_and_indexes() -> None:
    ddl = schema.postgres_ddl("cdm", "vocab")
    statements = ddl.split(";\n")
    assert statements[-1] == ""
    assert statements[:2] == [
        'CREATE SCHEMA IF NOT EXISTS "cdm"',
        'CREATE SCHEMA IF NOT EXISTS "vocab"',
    ]
    assert (
        'ALTER TABLE "cdm"."condition_occurrence" ADD CONSTRAINT '
        '"fpk_condition_occurrence_person_id" FOREIGN KEY ("person_id") '
        'REFERENCES "cdm"."person" ("person_id");\n'
    ) in ddl
    assert (
        'ALTER TABLE "cdm"."condition_occurrence" ADD CONSTRAINT '
        '"fpk_condition_occurrence_condition_concept_id" FOREIGN KEY ("condition_concept_id") '
        'REFERENCES "vocab"."concept" ("concept_id");\n'
    ) in ddl
    assert (
        'ALTER TABLE "vocab"."concept" ADD CONSTRAINT "fpk_concept_domain_id" '
        'FOREIGN KEY ("domain_id") REFERENCES "vocab"."domain" ("domain_id");\n'
    ) in ddl
    assert (
        'ALTER TABLE "cdm"."person" ADD CONSTRAINT "xpk_person" PRIMARY KEY ("person_id");\n'
    ) in ddl
    assert (
        'CREATE INDEX IF NOT EXISTS "idx_condition_occurrence_person_id" '
        'ON "cdm"."condition_occurrence" ("person_id");\n'
    ) in ddl
    assert (
        'ALTER TABLE "cdm"."condition_occurrence" '
        'CLUSTER ON "idx_condition_occurrence_person_id";\n'
    ) in ddl
    assert 'CREATE TABLE IF NOT EXISTS "vocab"."concept" (\n' in ddl
    assert 'CREATE TABLE IF NOT EXISTS "cdm"."concept" (' not in ddl

    foreign_keys = sum(
        row["isForeignKey"] == "Yes" for row in _raw_csv("OMOP_CDMv5.4_Field_Level.csv")
    )
    assert foreign_keys == 176
    assert ddl.count(" FOREIGN KEY ") == 176
    assert ddl.count(" PRIMARY KEY ") == 28
    assert ddl.count("CREATE TABLE IF NOT EXISTS ") == 39
    assert ddl.count("CREATE INDEX IF NOT EXISTS ") == 65

    def positions(fragment: str) -> list[int]:
        return [i for i, statement in enumerate(statements) if fragment in statement]

    tables, keys = positions("CREATE TABLE"), positions(" PRIMARY KEY ")
    references, indexes = positions(" FOREIGN KEY "), positions("CREATE INDEX")
    assert max(tables) < min(keys) and max(keys) < min(references)
    assert max(references) < min(indexes)
