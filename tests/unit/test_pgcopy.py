"""The bulk copy's pure parts: type mapping, the CSV both ends write and read (no server)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from omop_etl import pgcopy
from omop_etl.errors import EtlError


@pytest.mark.parametrize(
    ("duckdb_type", "expected"),
    [
        ("VARCHAR", "text"),
        ("varchar(20)", "text"),
        ("INTEGER", "integer"),
        ("int", "integer"),
        ("BIGINT", "bigint"),
        ("SMALLINT", "smallint"),
        ("TINYINT", "smallint"),
        ("UTINYINT", "smallint"),
        ("USMALLINT", "integer"),
        ("UINTEGER", "bigint"),
        ("UBIGINT", "numeric(20,0)"),
        ("HUGEINT", "numeric(39,0)"),
        ("UHUGEINT", "numeric(39,0)"),
        ("DOUBLE", "double precision"),
        ("FLOAT", "double precision"),
        ("DECIMAL(10,2)", "numeric(10,2)"),
        ("decimal(38, 10)", "numeric(38,10)"),
        ("NUMERIC(5)", "numeric(5,0)"),
        ("DECIMAL", "numeric(18,3)"),
        ("DATE", "date"),
        ("TIME", "time"),
        ("TIMESTAMP", "timestamp"),
        ("TIMESTAMP_MS", "timestamp"),
        ("TIMESTAMP_S", "timestamp"),
        ("TIMESTAMP WITH TIME ZONE", "timestamptz"),
        ("timestamptz", "timestamptz"),
        ("BOOLEAN", "boolean"),
        ("UUID", "uuid"),
    ],
)
def test_pg_type_maps_each_duckdb_type(duckdb_type, expected):
    assert pgcopy.pg_type(duckdb_type) == expected


@pytest.mark.parametrize(
    "duckdb_type", ["BLOB", "INTERVAL", "TIMESTAMP_NS", "INTEGER[]", "STRUCT(a INTEGER)", "JSON"]
)
def test_pg_type_refuses_a_type_whose_text_would_not_come_back_exact(duckdb_type):
    with pytest.raises(EtlError, match=re.escape(f"DuckDB type '{duckdb_type}'")):
        pgcopy.pg_type(duckdb_type)


def test_every_column_type_duckdb_reports_is_mapped():
    """pg_type reads the names DuckDB gives a relation's types, not only the ones we type."""
    con = duckdb.connect()
    relation = con.sql(
        "select 1::tinyint, 1::utinyint, 1::smallint, 1::usmallint, 1::integer, 1::uinteger, "
        "1::bigint, 1::ubigint, 1::hugeint, 1::uhugeint, 1::double, 1::float, 1::decimal(9,2), "
        "'x'::varchar, true, date '2020-01-01', time '01:02:03', timestamp '2020-01-01', "
        "timestamp_ms '2020-01-01', timestamp_s '2020-01-01', timestamptz '2020-01-01', uuid()"
    )
    mapped = [pgcopy.pg_type(str(t)) for t in relation.types]
    assert mapped == [
        "smallint",
        "smallint",
        "smallint",
        "integer",
        "integer",
        "bigint",
        "bigint",
        "numeric(20,0)",
        "numeric(39,0)",
        "numeric(39,0)",
        "double precision",
        "double precision",
        "numeric(9,2)",
        "text",
        "boolean",
        "date",
        "time",
        "timestamp",
        "timestamp",
        "timestamp",
        "timestamptz",
        "uuid",
    ]


def test_copy_in_sql_quotes_every_column():
    sql = pgcopy.copy_in_sql('"cdm"."person"', ["person_id", 'odd"name'])
    assert sql == 'COPY "cdm"."person" ("person_id", "odd""name") FROM STDIN WITH (FORMAT csv)'


def encoded(sql: str, chunk_rows: int = 100) -> list[tuple[bytes, int]]:
    con = duckdb.connect()
    relation = con.sql(sql)
    types = [str(t) for t in relation.types]
    return list(
        pgcopy._csv_chunks(relation.to_arrow_reader(chunk_rows), pgcopy._uint128_columns(types))
    )


def test_csv_chunks_write_null_unquoted_and_the_empty_string_quoted():
    chunks = encoded(
        "select * from (values (1, 'a', true), (2, '', false), (3, null, null), "
        "(4, 'x,\"y\"' || chr(10), true)) t(id, s, b) order by id"
    )
    assert chunks == [(b'1,"a",true\n2,"",false\n3,,\n4,"x,""y""\n",true\n', 4)]


def test_csv_chunks_write_unsigned_128_bit_integers_as_their_true_value():
    """DuckDB's Arrow export gives UHUGEINT >= 2**127 as negative decimal128 values."""
    chunks = encoded(
        "select u::uhugeint from (values ('0'), ('170141183460469231731687303715884105728'), "
        "('340282366920938463463374607431768211455'), (null)) t(u)"
    )
    assert chunks == [
        (
            b"0\n170141183460469231731687303715884105728\n"
            b"340282366920938463463374607431768211455\n\n",
            4,
        )
    ]


def test_csv_chunks_follow_the_batch_size_and_skip_nothing():
    chunks = encoded("select range::integer from range(7) order by 1", chunk_rows=3)
    assert chunks == [(b"0\n1\n2\n", 3), (b"3\n4\n5\n", 3), (b"6\n", 1)]


def test_csv_chunks_send_a_big_batch_in_pieces_and_count_it_on_the_last():
    pieces = encoded("select range::integer from range(40000) order by 1", chunk_rows=40000)
    assert [rows for _, rows in pieces] == [0, 0, 40000]
    assert pieces[0][0].endswith(b"\n16383\n")
    assert b"".join(data for data, _ in pieces) == "".join(f"{i}\n" for i in range(40000)).encode()


def test_unsigned_128_leaves_a_column_without_wrapped_values_as_it_is():
    column = pa.array([0, 5, None], pa.decimal128(38, 0))
    assert pgcopy._unsigned_128(column).to_pylist() == [0, 5, None]


def test_read_csv_sql_reads_postgres_csv_output_exactly(tmp_path: Path):
    """What ``COPY ... TO STDOUT (FORMAT csv)`` writes, as DuckDB must read it back."""
    path = tmp_path / "rows.csv"
    path.write_bytes(
        b'1,"",t,NaN,2021-03-04 14:06:07.654321+09,340282366920938463463374607431768211455\n'
        b"2,,f,-Infinity,1999-12-31 23:59:59+00,\n"
        b'3,"two\nlines, ""quoted""\r",,1e-300,,0\n'
        b'4,"\\.",t,-0,0001-01-01 00:00:00+00,1\n'
    )
    names = ["id", "s", "b", "f", "ts", "u"]
    types = ["INTEGER", "VARCHAR", "BOOLEAN", "DOUBLE", "TIMESTAMPTZ", "UHUGEINT"]
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    rows = con.execute(
        f"select id, s, b, f, ts, u from {pgcopy.read_csv_sql(path, names, types)}"
    ).fetchall()
    utc = dt.UTC
    assert [(*r[:3], repr(r[3])) for r in rows] == [
        (1, "", True, "nan"),
        (2, None, False, "-inf"),
        (3, 'two\nlines, "quoted"\r', None, "1e-300"),
        (4, "\\.", True, "-0.0"),
    ]
    assert [r[4] for r in rows] == [
        dt.datetime(2021, 3, 4, 5, 6, 7, 654321, tzinfo=utc),
        dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=utc),
        None,
        dt.datetime(1, 1, 1, tzinfo=utc),
    ]
    assert [r[5] for r in rows] == [2**128 - 1, None, 0, 1]
