"""Bulk copy DuckDB <-> PostgreSQL on a real server: every value comes back exactly."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import duckdb
import numpy as np
import psycopg2
import psycopg2.errors
import pytest

from omop_etl import pgcopy
from omop_etl.errors import EtlError

pytestmark = pytest.mark.postgres

# One row per text value: the values CSV, COPY and their NULL conventions could confuse.
NASTY_TEXT = [
    "plain",
    "",
    None,
    "comma, inside",
    'quote " inside',
    '""',
    "new\nline",
    "carriage\rreturn",
    "crlf\r\nend",
    "tab\tinside",
    "back\\slash",
    "\\.",  # COPY's end-of-data marker, alone on a line
    "before\n\\.\nafter",
    "\\N",  # the text format's NULL
    "NULL",
    "서울대학교병원 진료기록: 제2형 당뇨병",
    " padded ",
    '"',
    ",",
    "\n",
    "'",
]
UTC = dt.UTC
KST = dt.timezone(dt.timedelta(hours=9))
NON_FINITE = [float("nan"), float("inf"), float("-inf")]

# column, DuckDB type, the values its rows cycle through (row i takes values[i % len]).
COLUMNS: list[tuple[str, str, list[Any]]] = [
    ("b", "BOOLEAN", [True, False, None]),
    ("ti", "TINYINT", [-128, 127, 0, None]),
    ("uti", "UTINYINT", [0, 255, None]),
    ("si", "SMALLINT", [-32768, 32767, None]),
    ("usi", "USMALLINT", [0, 65535, None]),
    ("i", "INTEGER", [-(2**31), 2**31 - 1, 0, None]),
    ("ui", "UINTEGER", [0, 2**32 - 1, None]),
    ("bi", "BIGINT", [-(2**63), 2**63 - 1, None]),
    ("ub", "UBIGINT", [0, 2**64 - 1, None]),
    ("h", "HUGEINT", [-(2**127), 2**127 - 1, 0, None]),
    ("u", "UHUGEINT", [0, 2**127 - 1, 2**127, 2**128 - 1, None]),
    (
        "f64",
        "DOUBLE",
        [0.1, 1e-300, 123456.789, -0.0, 5e-324, 1.7976931348623157e308, 1 / 3, *NON_FINITE, None],
    ),
    ("f32", "FLOAT", [0.1, 0.5, -0.0, 3.4028234663852886e38, 1e-45, float("nan"), None]),
    ("dec", "DECIMAL(18,4)", [Decimal("12345678901234.5678"), Decimal("-0.0001"), None]),
    ("dec38", "DECIMAL(38,10)", [Decimal("1234567890123456789012345678.0123456789"), None]),
    ("d", "DATE", [dt.date(2020, 2, 29), dt.date(1, 1, 1), dt.date(9999, 12, 31), None]),
    ("tm", "TIME", [dt.time(0, 0), dt.time(23, 59, 59, 999999), dt.time(12, 0, 0, 500000), None]),
    (
        "ts",
        "TIMESTAMP",
        [dt.datetime(2021, 3, 4, 5, 6, 7, 123456), dt.datetime(1900, 1, 1, 0, 0, 0, 1), None],
    ),
    ("ts_ms", "TIMESTAMP_MS", [dt.datetime(2021, 3, 4, 5, 6, 7, 123000), None]),
    ("ts_s", "TIMESTAMP_S", [dt.datetime(1970, 1, 1, 0, 0, 1), None]),
    (
        "tstz",
        "TIMESTAMPTZ",
        [
            dt.datetime(2021, 3, 4, 5, 6, 7, 654321, tzinfo=UTC),
            dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=KST),
            None,
        ],
    ),
    (
        "uu",
        "UUID",
        [
            uuid.UUID(int=0),
            uuid.UUID(int=2**128 - 1),
            uuid.UUID("0b9e5f3a-6c1d-4e2f-8a7b-9c0d1e2f3a4b"),
            None,
        ],
    ),
]
NAMES = ["id", "s", *(name for name, _, _ in COLUMNS)]
TYPES = ["INTEGER", "VARCHAR", *(duck_type for _, duck_type, _ in COLUMNS)]


def source_rows() -> list[tuple[Any, ...]]:
    """The test table's rows: one per nasty text, every other column cycling its values."""
    return [
        (i, text, *(values[i % len(values)] for _, _, values in COLUMNS))
        for i, text in enumerate(NASTY_TEXT)
    ]


def canonical(value: Any) -> Any:
    """A form in which equal means the same value: floats by repr (-0.0, nan), UUIDs as text."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def canonical_rows(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    return [tuple(canonical(v) for v in row) for row in rows]


def create_duck_table(duck: duckdb.DuckDBPyConnection, name: str) -> None:
    columns = ", ".join(f"{n} {t}" for n, t in zip(NAMES, TYPES, strict=True))
    duck.execute(f"create table {name} ({columns})")


@pytest.fixture
def duck() -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB holding ``src``: every type, the nasty values."""
    con = duckdb.connect()
    create_duck_table(con, "src")
    marks = ", ".join("?" for _ in NAMES)
    con.executemany(f"insert into src values ({marks})", source_rows())
    yield con
    con.close()


@pytest.fixture
def pg(pg_url: str) -> Iterator[tuple[Any, str]]:
    """A connection (in a transaction) and a throw-away schema, dropped afterwards."""
    schema = f"t_pgcopy_{uuid.uuid4().hex[:8]}"
    con = psycopg2.connect(pg_url)
    with con.cursor() as cur:
        cur.execute(f"create schema {schema}")
    con.commit()
    try:
        yield con, schema
    finally:
        con.rollback()
        with con.cursor() as cur:
            cur.execute(f"drop schema if exists {schema} cascade")
        con.commit()
        con.close()


def create_pg_table(con: Any, table: str, not_null: str | None = None) -> None:
    columns = ", ".join(
        f"{n} {pgcopy.pg_type(t)}{' not null' if n == not_null else ''}"
        for n, t in zip(NAMES, TYPES, strict=True)
    )
    with con.cursor() as cur:
        cur.execute(f"create table {table} ({columns})")
    con.commit()


def pg_rows(con: Any, table: str) -> list[tuple[Any, ...]]:
    with con.cursor() as cur:
        cur.execute("set extra_float_digits = 3")  # psycopg2 reads floats from their text
        cur.execute(f"select * from {table} order by id")
        return cur.fetchall()


def expected_in_postgres() -> list[tuple[Any, ...]]:
    """What psycopg2 reads back from PostgreSQL for ``source_rows``.

    A FLOAT (float32) arrives as the shortest decimal of the float32, so in a double
    precision column 0.1 is 0.1, not 0.100000001490116.
    """
    f32 = NAMES.index("f32")
    return [
        tuple(
            float(str(np.float32(v))) if i == f32 and v is not None else v
            for i, v in enumerate(row)
        )
        for row in source_rows()
    ]


def test_round_trip_duckdb_postgres_duckdb_is_exact_for_every_type(duck, pg):
    con, schema = pg
    table = f"{schema}.t"
    create_pg_table(con, table)
    with con.cursor() as cur:
        cur.execute("set TimeZone = 'Asia/Seoul'")  # not UTC: offsets must travel
        copied = pgcopy.copy_to_postgres(duck, "select * from src order by id", cur, table, NAMES)
    con.commit()
    assert copied == len(NASTY_TEXT) == 21

    in_pg = pg_rows(con, table)
    assert [row[1] for row in in_pg] == NASTY_TEXT
    assert canonical_rows(in_pg) == canonical_rows(expected_in_postgres())

    create_duck_table(duck, "back")
    with con.cursor() as cur:
        cur.execute("set DateStyle = 'SQL, DMY'; set extra_float_digits = 0")
        back = pgcopy.copy_from_postgres(cur, f"select * from {table}", duck, "back")
        cur.execute("select current_setting('DateStyle'), current_setting('extra_float_digits')")
        assert cur.fetchone() == ("SQL, DMY", "0")  # the caller's settings are back
    assert back == 21
    got = duck.execute("select * from back order by id").fetchall()
    want = duck.execute("select * from src order by id").fetchall()
    assert canonical_rows(got) == canonical_rows(want)
    nulls = duck.execute("select count(*) filter (s is null), count(*) filter (s = '') from back")
    assert nulls.fetchall() == [(1, 1)]


def test_source_rows_survive_duckdb_unchanged(duck):
    """The comparison above is only as good as its source: DuckDB keeps every value."""
    rows = duck.execute("select * from src order by id").fetchall()
    f32 = NAMES.index("f32")
    expected = [
        tuple(float(np.float32(v)) if i == f32 and v is not None else v for i, v in enumerate(row))
        for row in source_rows()
    ]
    assert canonical_rows(rows) == canonical_rows(expected)


def test_chunks_are_reported_as_they_are_handed_over(duck, pg):
    con, schema = pg
    table = f"{schema}.t"
    create_pg_table(con, table)
    seen: list[int] = []
    with con.cursor() as cur:
        copied = pgcopy.copy_to_postgres(
            duck,
            "select * from src order by id",
            cur,
            table,
            NAMES,
            chunk_rows=4,
            on_chunk=seen.append,
        )
    con.commit()
    assert copied == 21
    assert seen == [4, 8, 12, 16, 20, 21]
    assert canonical_rows(pg_rows(con, table)) == canonical_rows(expected_in_postgres())


def test_many_chunks_of_a_larger_table_arrive_in_full(pg):
    """50,000 rows in chunks of 20,000, each sent in pieces: every row arrives once."""
    con, schema = pg
    duck = duckdb.connect()
    duck.execute(
        "create table big as select range::integer id, "
        "case range % 3 when 0 then null when 1 then '' else 'v' || range || chr(10) end s "
        "from range(50000)"
    )
    with con.cursor() as cur:
        cur.execute(f"create table {schema}.big (id integer, s text)")
        seen: list[int] = []
        copied = pgcopy.copy_to_postgres(
            duck,
            "select * from big",
            cur,
            f"{schema}.big",
            ["id", "s"],
            chunk_rows=20000,
            on_chunk=seen.append,
        )
        assert copied == 50000
        assert seen == [20000, 40000, 50000]
        cur.execute(
            f"select count(*), count(*) filter (where s is null), "
            f"count(*) filter (where s = ''), sum(id) from {schema}.big"
        )
        assert cur.fetchone() == (50000, 16667, 16667, 1249975000)
        duck.execute("create table back (id integer, s varchar)")
        assert pgcopy.copy_from_postgres(cur, f"select * from {schema}.big", duck, "back") == 50000
    diff = "select count(*) from (select * from big except all select * from back)"
    assert duck.execute(diff).fetchall() == [(0,)]
    assert duck.execute("select count(*) from back").fetchall() == [(50000,)]


def test_zero_rows_copy_nothing_both_ways(duck, pg):
    con, schema = pg
    table = f"{schema}.t"
    create_pg_table(con, table)
    seen: list[int] = []
    with con.cursor() as cur:
        copied = pgcopy.copy_to_postgres(
            duck, "select * from src where false", cur, table, NAMES, on_chunk=seen.append
        )
        assert (copied, seen) == (0, [])
        cur.execute(f"select count(*) from {table}")
        assert cur.fetchone() == (0,)
        create_duck_table(duck, "back")
        assert pgcopy.copy_from_postgres(cur, f"select * from {table}", duck, "back") == 0
    assert duck.execute("select count(*) from back").fetchall() == [(0,)]


def test_a_postgres_error_raises_and_the_rollback_leaves_nothing(duck, pg):
    con, schema = pg
    table = f"{schema}.t"
    create_pg_table(con, table, not_null="s")
    seen: list[int] = []
    with con.cursor() as cur, pytest.raises(psycopg2.errors.NotNullViolation, match='"s"'):
        pgcopy.copy_to_postgres(
            duck,
            "select * from src order by id",
            cur,
            table,
            NAMES,
            chunk_rows=4,
            on_chunk=seen.append,
        )
    assert seen[0] == 4  # chunks had reached the server before it refused the row
    con.rollback()
    with con.cursor() as cur:
        cur.execute(f"select count(*) from {table}")
        assert cur.fetchone() == (0,)


def test_an_empty_string_is_not_null_for_a_not_null_column(duck, pg):
    con, schema = pg
    table = f"{schema}.t"
    create_pg_table(con, table, not_null="s")
    with con.cursor() as cur:
        sql = "select * from src where s is not null order by id"
        assert pgcopy.copy_to_postgres(duck, sql, cur, table, NAMES) == 20
        cur.execute(f"select count(*) from {table} where s = ''")
        assert cur.fetchone() == (1,)


def test_an_on_chunk_error_surfaces_as_itself_and_duckdb_stays_usable(duck, pg):
    con, schema = pg
    table = f"{schema}.t"
    create_pg_table(con, table)

    def stop(rows: int) -> None:
        raise RuntimeError(f"stopped after {rows} rows")

    with con.cursor() as cur, pytest.raises(RuntimeError, match="stopped after 4 rows"):
        pgcopy.copy_to_postgres(
            duck, "select * from src", cur, table, NAMES, chunk_rows=4, on_chunk=stop
        )
    con.rollback()
    assert duck.execute("select count(*) from src").fetchall() == [(21,)]
    with con.cursor() as cur:
        cur.execute(f"select count(*) from {table}")
        assert cur.fetchone() == (0,)


def test_wrong_column_count_and_unsupported_types_are_refused_before_copying(duck, pg):
    con, schema = pg
    with con.cursor() as cur:
        cur.execute(f"create table {schema}.x (a integer, b bytea)")
        with pytest.raises(EtlError, match="2 columns, 1 target columns"):
            pgcopy.copy_to_postgres(duck, "select 1, 2", cur, f"{schema}.x", ["a"])
        with pytest.raises(EtlError, match="'BLOB'"):
            pgcopy.copy_to_postgres(duck, "select 1, 'x'::blob", cur, f"{schema}.x", ["a", "b"])
        cur.execute(f"select count(*) from {schema}.x")
        assert cur.fetchone() == (0,)
