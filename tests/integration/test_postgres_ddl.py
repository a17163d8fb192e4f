"""The generated PostgreSQL DDL runs on a real server and matches the CDM v5.4 spec."""

from __future__ import annotations

import csv
import uuid

import psycopg2
import pytest

from omop_etl import schema, settings

pytestmark = pytest.mark.postgres

PG_TYPES = {
    "integer": "integer",
    "bigint": "bigint",
    "float": "numeric",
    "date": "date",
    "datetime": "timestamp without time zone",
    "varchar(max)": "text",
}


def _spec_rows() -> list[dict[str, str]]:
    path = settings.CDM_SPEC_DIR / "OMOP_CDMv5.4_Field_Level.csv"
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def _expected_type(datatype: str) -> tuple[str, int | None]:
    datatype = datatype.strip().lower()
    if datatype.startswith("varchar(") and datatype != "varchar(max)":
        return "character varying", int(datatype[8:-1])
    return PG_TYPES[datatype], None


@pytest.fixture
def pg_schemas(pg_url):
    """The generated DDL run on the server in two throw-away schemas."""
    suffix = uuid.uuid4().hex[:8]
    cdm, vocab = f"t_cdm_{suffix}", f"t_vocab_{suffix}"
    con = psycopg2.connect(pg_url)
    con.autocommit = True
    try:
        with con.cursor() as cur:
            cur.execute(schema.postgres_ddl(cdm, vocab))
        yield con, cdm, vocab
    finally:
        with con.cursor() as cur:
            cur.execute(f'drop schema if exists "{cdm}" cascade')
            cur.execute(f'drop schema if exists "{vocab}" cascade')
        con.close()


def test_postgres_ddl_creates_every_table_and_field_of_the_spec(pg_schemas):
    con, cdm, vocab = pg_schemas
    with con.cursor() as cur:
        cur.execute(
            "select table_name, column_name, data_type, character_maximum_length, is_nullable "
            "from information_schema.columns where table_schema in (%s, %s) "
            "order by table_name, ordinal_position",
            (cdm, vocab),
        )
        found = {(t, c): (d, n, nullable) for t, c, d, n, nullable in cur.fetchall()}
    rows = _spec_rows()
    assert len(rows) == 432
    assert len(found) == 432
    for row in rows:
        table = row["cdmTableName"].strip().lower()
        field = row["cdmFieldName"].strip().strip('"').lower()
        data_type, length = _expected_type(row["cdmDatatype"])
        required = row["isRequired"].strip().lower() == "yes"
        assert found[(table, field)] == (data_type, length, "NO" if required else "YES"), (
            table,
            field,
        )


def test_postgres_ddl_enforces_primary_and_foreign_keys(pg_schemas):
    con, cdm, vocab = pg_schemas
    with con.cursor() as cur:
        cur.execute(
            "select constraint_type, count(*) from information_schema.table_constraints "
            "where table_schema in (%s, %s) and constraint_type in ('PRIMARY KEY', 'FOREIGN KEY') "
            "group by 1 order by 1",
            (cdm, vocab),
        )
        assert cur.fetchall() == [("FOREIGN KEY", 176), ("PRIMARY KEY", 28)]
        # a condition of a person who does not exist is refused
        with pytest.raises(psycopg2.errors.ForeignKeyViolation):
            cur.execute(
                f'insert into "{cdm}".condition_occurrence (condition_occurrence_id, person_id, '
                "condition_concept_id, condition_start_date, condition_type_concept_id) "
                "values (1, 42, 0, '2020-01-01', 32817)"
            )
