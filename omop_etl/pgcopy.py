"""Bulk transport between the embedded DuckDB engine and a PostgreSQL warehouse.

Both directions speak PostgreSQL's CSV ``COPY`` format, the fastest input both
engines parse natively. CSV tells NULL from the empty string only by quoting
(an unquoted empty field is NULL, ``""`` is the empty string), so every encoder
and decoder here is set up to keep that difference; every value type that may
cross is listed in ``pg_type``, and only listed types are sent.

DuckDB -> PostgreSQL streams: DuckDB hands out Arrow record batches of
``chunk_rows`` rows, pyarrow's C++ writer encodes each to CSV, and psycopg2 sends
each chunk to ``COPY ... FROM STDIN`` as it reads it, so Python holds one chunk at
a time. The socket's buffers (megabytes on a local connection) let PostgreSQL
parse one chunk while the next is encoded; a producer thread measured no faster.
PostgreSQL -> DuckDB goes through a temporary CSV file that DuckDB's parallel
reader loads in one statement.

Neither direction commits: the caller owns the PostgreSQL transaction.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import psycopg2
import psycopg2.extensions
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from omop_etl.errors import EtlError
from omop_etl.sql import literal, quote_ident

# DuckDB type name (upper case, aliases included) -> PostgreSQL column type. Only types
# whose CSV text both engines parse back to the same value are listed: no BLOB (pyarrow
# writes raw bytes, PostgreSQL reads bytea escapes), no TIMESTAMP_NS (PostgreSQL keeps
# microseconds), no INTERVAL, TIMETZ or nested types.
_PG_TYPES = {
    "VARCHAR": "text",
    "TEXT": "text",
    "STRING": "text",
    "CHAR": "text",
    "BPCHAR": "text",
    "BOOLEAN": "boolean",
    "BOOL": "boolean",
    "LOGICAL": "boolean",
    "TINYINT": "smallint",
    "INT1": "smallint",
    "UTINYINT": "smallint",
    "SMALLINT": "smallint",
    "INT2": "smallint",
    "SHORT": "smallint",
    "USMALLINT": "integer",
    "INTEGER": "integer",
    "INT": "integer",
    "INT4": "integer",
    "SIGNED": "integer",
    "UINTEGER": "bigint",
    "BIGINT": "bigint",
    "INT8": "bigint",
    "LONG": "bigint",
    "UBIGINT": "numeric(20,0)",
    "HUGEINT": "numeric(39,0)",
    "INT128": "numeric(39,0)",
    "UHUGEINT": "numeric(39,0)",
    "UINT128": "numeric(39,0)",
    "DOUBLE": "double precision",
    "FLOAT8": "double precision",
    "FLOAT": "double precision",
    "FLOAT4": "double precision",
    "REAL": "double precision",
    "DATE": "date",
    "TIME": "time",
    "TIMESTAMP": "timestamp",
    "DATETIME": "timestamp",
    "TIMESTAMP_US": "timestamp",
    "TIMESTAMP_MS": "timestamp",
    "TIMESTAMP_S": "timestamp",
    "TIMESTAMPTZ": "timestamptz",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "UUID": "uuid",
}
_DECIMAL = re.compile(r"(?:DECIMAL|NUMERIC)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)")
_VARCHAR_LENGTH = re.compile(r"VARCHAR\s*\(\s*\d+\s*\)")

# pyarrow quotes every string field under "needed" (so "" is the empty string) and
# leaves NULL an unquoted empty field: PostgreSQL's CSV reading of both. Rows are
# converted 16 k at a time (the default 1 k costs ~20% more CPU on CDM tables).
CSV_WRITE_OPTIONS = pa_csv.WriteOptions(
    include_header=False, quoting_style="needed", batch_size=16_384
)
_UINT128_WRAP = pa.scalar(2**128, pa.decimal256(39, 0))
_COPY_READ_SIZE = 1 << 20
_PIECE_ROWS = 16_384  # rows per CSV piece handed to psycopg2 (a chunk is one or more)


def pg_type(duckdb_type: str) -> str:
    """The PostgreSQL column type that holds every value of a DuckDB column type exactly.

    >>> pg_type("DECIMAL(10,2)")
    'numeric(10,2)'
    >>> pg_type("UHUGEINT")
    'numeric(39,0)'
    """
    name = " ".join(str(duckdb_type).split()).upper()
    decimal = _DECIMAL.fullmatch(name)
    if decimal:
        return f"numeric({decimal[1]},{decimal[2] or 0})"
    if name in ("DECIMAL", "NUMERIC"):
        return "numeric(18,3)"  # DuckDB's default width and scale
    if _VARCHAR_LENGTH.fullmatch(name):
        return "text"  # DuckDB does not enforce a VARCHAR length
    if name not in _PG_TYPES:
        raise EtlError(f"no PostgreSQL column type for DuckDB type {duckdb_type!r}")
    return _PG_TYPES[name]


def copy_in_sql(table_sql: str, columns: Sequence[str]) -> str:
    """The ``COPY ... FROM STDIN`` statement for ``columns`` of ``table_sql``."""
    names = ", ".join(quote_ident(c) for c in columns)
    return f"COPY {table_sql} ({names}) FROM STDIN WITH (FORMAT csv)"


def copy_to_postgres(
    duck: duckdb.DuckDBPyConnection,
    select_sql: str,
    pg_cursor: Any,
    table_sql: str,
    columns: Sequence[str],
    *,
    chunk_rows: int = 100_000,
    on_chunk: Callable[[int], None] | None = None,
) -> int:
    """Copy the rows of a DuckDB query into ``columns`` of a PostgreSQL table; rows copied.

    ``on_chunk(rows_so_far)`` runs after each chunk was handed to PostgreSQL; an
    exception it raises aborts the COPY and is raised as it is. Nothing is committed:
    a failed COPY raises, and the caller's rollback leaves no row.
    """
    _check_utf8(pg_cursor)
    relation = duck.sql(select_sql)
    if relation is None:
        raise EtlError("copy_to_postgres needs a query that returns rows")
    types = [str(t) for t in relation.types]
    if len(types) != len(columns):
        raise EtlError(
            f"the query returns {len(types)} columns, {len(columns)} target columns given"
        )
    for duck_type in types:
        pg_type(duck_type)  # refuses a type whose CSV text would not come back exact
    batches = relation.to_arrow_reader(chunk_rows)
    chunks = _csv_chunks(batches, _uint128_columns(types))
    reader = _ChunkReader(chunks, on_chunk)
    try:
        pg_cursor.copy_expert(copy_in_sql(table_sql, columns), reader, size=_COPY_READ_SIZE)
    except psycopg2.Error as exc:
        if reader.error is not None:  # psycopg2 reports it as "error in .read() call"
            raise reader.error from exc
        raise
    finally:
        chunks.close()
        batches.close()  # an unread DuckDB result would block the connection's next query
    return reader.rows


def _check_utf8(pg_cursor: Any) -> None:
    """Both directions move UTF-8 bytes; another client encoding would garble text."""
    encoding = pg_cursor.connection.encoding
    if encoding.upper().replace("-", "") != "UTF8":
        raise EtlError(f"PostgreSQL bulk copy needs client_encoding UTF8, not {encoding}")


def _uint128_columns(types: Sequence[str]) -> list[int]:
    """Positions of UHUGEINT columns: DuckDB hands them to Arrow as signed decimal128."""
    return [i for i, t in enumerate(types) if t.upper() in ("UHUGEINT", "UINT128")]


def _unsigned_128(column: pa.Array) -> pa.Array:
    """A UHUGEINT column as its true values: DuckDB's Arrow export wraps those >= 2**127.

    DuckDB 2.0.1 writes a UHUGEINT's 128 bits into a decimal128(38, 0) as they are, so
    2**128 - 1 reads as -1; adding 2**128 to the negative ones in decimal256 restores
    them (vectorized; DuckDB's own UHUGEINT -> VARCHAR cast runs at ~40 k rows/s).
    """
    wide = column.cast(pa.decimal256(39, 0), safe=False)
    negative = pc.less(wide, pa.scalar(0, pa.decimal256(39, 0)))
    if not pc.any(negative).as_py():
        return wide
    return pc.if_else(negative, pc.add(wide, _UINT128_WRAP), wide)


def _csv_chunks(
    batches: pa.RecordBatchReader, uint128: Sequence[int]
) -> Iterator[tuple[bytes, int]]:
    """Each record batch as PostgreSQL CSV pieces: (bytes, the batch's rows on its last piece).

    Pieces of ``_PIECE_ROWS`` rows let PostgreSQL start on a batch's first rows while
    the rest are encoded (10% faster at 100 k rows a batch than one piece a batch).
    """
    for batch in batches:
        for i in uint128:
            batch = batch.set_column(i, batch.schema.field(i).name, _unsigned_128(batch[i]))
        rows = batch.num_rows
        for start in range(0, rows, _PIECE_ROWS):
            sink = pa.BufferOutputStream()
            pa_csv.write_csv(batch.slice(start, _PIECE_ROWS), sink, CSV_WRITE_OPTIONS)
            last = start + _PIECE_ROWS >= rows
            yield sink.getvalue().to_pybytes(), rows if last else 0


class _ChunkReader:
    """The file-like object ``copy_expert`` reads: one encoded piece per ``read``.

    psycopg2 sends whatever ``read`` returns with one ``PQputCopyData`` and stops at
    ``b""``, so a piece is returned whole whatever size is asked. When ``read`` is
    called again the previous piece has been handed over; after a chunk's last
    piece, that is when ``on_chunk`` hears of the chunk.
    """

    def __init__(self, chunks: Iterator[tuple[bytes, int]], on_chunk: Callable[[int], None] | None):
        self._chunks = chunks
        self._on_chunk = on_chunk
        self._pending = 0
        self.rows = 0
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return self._next_chunk()
        except BaseException as exc:  # psycopg2 turns it into QueryCanceled: keep the original
            self.error = exc
            raise

    def _next_chunk(self) -> bytes:
        if self._pending:
            self.rows += self._pending
            self._pending = 0
            if self._on_chunk is not None:
                self._on_chunk(self.rows)
        for data, rows in self._chunks:
            self._pending = rows
            return data
        return b""


def copy_from_postgres(
    pg_cursor: Any, select_sql: str, duck: duckdb.DuckDBPyConnection, duck_table_sql: str
) -> int:
    """Append the rows of a PostgreSQL query to an existing DuckDB table; rows copied.

    The DuckDB table's column types decide how each field is parsed; the query must
    return its columns in the table's order.
    """
    _check_utf8(pg_cursor)
    names, types = _duck_columns(duck, duck_table_sql)
    with tempfile.TemporaryDirectory(prefix="omop_etl_pgcopy_") as folder:
        path = Path(folder) / "rows.csv"
        with path.open("wb") as fh, _exact_text_output(pg_cursor):
            pg_cursor.copy_expert(f"COPY ({select_sql}) TO STDOUT WITH (FORMAT csv)", fh)
        inserted = duck.execute(
            f"insert into {duck_table_sql} select * from {read_csv_sql(path, names, types)}"
        ).fetchall()  # all, not one: a half-read result would block the connection
    return int(inserted[0][0])


def _duck_columns(
    duck: duckdb.DuckDBPyConnection, duck_table_sql: str
) -> tuple[list[str], list[str]]:
    """Names and types of a DuckDB table's columns, in order."""
    relation = duck.sql(f"select * from {duck_table_sql}")
    return list(relation.columns), [str(t) for t in relation.types]


def read_csv_sql(path: Path, names: Sequence[str], types: Sequence[str]) -> str:
    """A DuckDB ``read_csv`` of PostgreSQL CSV output with these column names and types.

    ``allow_quoted_nulls=false`` keeps ``""`` the empty string (DuckDB reads it as NULL
    by default); quoted fields may hold newlines; nothing is sniffed.
    """
    columns = ", ".join(f"{literal(n)}: {literal(t)}" for n, t in zip(names, types, strict=True))
    return (
        f"read_csv({literal(str(path))}, columns = {{{columns}}}, header = false, "
        "auto_detect = false, delim = ',', quote = '\"', escape = '\"', nullstr = '', "
        "allow_quoted_nulls = false, strict_mode = true, max_line_size = 1073741824)"
    )


# Session settings that make PostgreSQL's text output parse back exactly: ISO dates
# whatever the server's DateStyle, and shortest-exact floats (any extra_float_digits > 0).
_TEXT_OUTPUT_SETTINGS = {"DateStyle": "ISO, YMD", "extra_float_digits": "3"}


@contextmanager
def _exact_text_output(pg_cursor: Any) -> Iterator[None]:
    """Set ``_TEXT_OUTPUT_SETTINGS`` for the session, then restore the caller's values.

    After an error the transaction is aborted and cannot run the restore; the
    caller's rollback then undoes the change anyway.
    """
    names = list(_TEXT_OUTPUT_SETTINGS)
    pg_cursor.execute("select " + ", ".join("current_setting(%s)" for _ in names), names)
    saved = dict(zip(names, pg_cursor.fetchone(), strict=True))
    _set_config(pg_cursor, _TEXT_OUTPUT_SETTINGS)
    try:
        yield
    finally:
        status = pg_cursor.connection.get_transaction_status()
        if status != psycopg2.extensions.TRANSACTION_STATUS_INERROR:
            _set_config(pg_cursor, saved)


def _set_config(pg_cursor: Any, settings: dict[str, str]) -> None:
    for name, value in settings.items():
        pg_cursor.execute("select set_config(%s, %s, false)", (name, value))
