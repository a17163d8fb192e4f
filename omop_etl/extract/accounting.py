"""What became of every record: counts per file from staging, and the rejects table.

Staging rows carry their rule; the rejects table names each rejected record by the
export's own record number (the header is record 1), the column and the raw value.
Records the normalizing reader refused are recorded from its list; the others are
found by a second read of the file, which numbers the records in file order.
"""

from __future__ import annotations

import re

import duckdb

from omop_etl.errors import EtlError
from omop_etl.extract.outcome import SUPERSEDED
from omop_etl.extract.readers import Source, encoding_name, undecodable_field_hex
from omop_etl.extract.records import Damaged
from omop_etl.extract.select import NO_ELEMENTS, Read, case, file_select, mapped
from omop_etl.extract.sources import ExportFile
from omop_etl.sql import literal, quote_ident
from omop_etl.staging import SUMMED_BY

KEPT = f"(reject is null or reject = {literal(SUPERSEDED)})"

# Rules given by the referential and duplicate steps, and the staging field each is about.
REFERENTIAL_FIELD = {
    "unknown_person": "person_source_value",
    "unknown_visit": "visit_source_value",
    "duplicate:person": "person_source_value",
    "duplicate:visit": "visit_source_value",
    "duplicate:care_site": "care_site_source_value",
    "duplicate:provider": "provider_source_value",
    "duplicate:event": None,
    "duplicate:payer_plan": None,
}


_QUOTED = re.compile(r"""(["'])(?:(?!\1).){1,}?\1""")


def first_line(exc: Exception) -> str:
    """The first line of an engine error about the export's data, its quoted values
    left out: an error message must not carry a record's contents (the file, entry and
    column named beside it locate the record).

    >>> first_line(ValueError("Conversion Error: Could not decode 'S2VpbQ' as base64"))
    "Conversion Error: Could not decode '…' as base64"
    """
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    return _QUOTED.sub(lambda m: f"{m.group(1)}…{m.group(1)}", text.splitlines()[0])


def drop_parser_rejects(con: duckdb.DuckDBPyConnection, tag: str) -> None:
    con.execute(f"drop table if exists {quote_ident(tag + '_errors')}")
    con.execute(f"drop table if exists {quote_ident(tag + '_scans')}")


def refused(
    con: duckdb.DuckDBPyConnection, tag: str, source: Source | None = None
) -> dict[int, Damaged]:
    """The records DuckDB's CSV reader refused in one read, by record number (the header
    is record 1), as damaged records with their rule, column and (undecodable bytes)
    the raw bytes of the field as hex; the reader's own tables are dropped. Without
    ``source``, the rules only."""
    errors = quote_ident(tag + "_errors")
    try:
        rows = con.execute(
            "select line, bool_or(error_type = 'INVALID ENCODING'), min(error_type), "
            "string_agg(distinct column_name, ', '), "
            f"min(byte_position) filter (where error_type = 'INVALID ENCODING') "
            f"from {errors} group by line order by line"
        ).fetchall()
    except duckdb.CatalogException:
        rows = []
    drop_parser_rejects(con, tag)
    found = {}
    for i, (line, encoding, error, column, position) in enumerate(rows):
        if encoding:
            rule = f"undecodable:{encoding_name(source.fs)}" if source else "undecodable"
            raw = (
                undecodable_field_hex(source, position)
                if source and position and i < _MAX_HEX_LOOKUPS
                else None
            )
            found[int(line)] = Damaged(int(line), rule, column, raw)
        else:
            kind = error.lower().replace(" ", "_")
            rule = (
                "oversized_record" if kind == "line_size_over_maximum" else f"malformed_row:{kind}"
            )
            found[int(line)] = Damaged(int(line), rule)
    return found


# Raw bytes of undecodable fields are looked up one by one; past this many per file the
# rejects keep the record number only.
_MAX_HEX_LOOKUPS = 10_000


def seen(
    con: duckdb.DuckDBPyConnection, table: str, file_no: int, batch_id: str, summed: bool
) -> int:
    """The records staging holds rows of (a record with elements counts once)."""
    rows = "source_rows" if summed else "1"
    (n,) = con.execute(
        f"select coalesce(sum({rows}), 0) from {table} where file_no = ? and batch_id = ? "
        "and (element_no is null or element_no <= 1)",
        [file_no, batch_id],
    ).fetchone()
    return int(n)


def row_counts(
    con: duckdb.DuckDBPyConnection, work_sql: str, targets: set[str], batch_id: str
) -> tuple[dict[int, tuple[int, int, int, int]], dict[int, dict[str, int]]]:
    """(loaded, rejected, filtered, records without elements) per file of the batch, and
    its flagged rows by flag.

    A row a later batch superseded was loaded (its newer version is what the CDM shows).
    """
    counts: dict[int, tuple[int, int, int, int]] = {}
    flags: dict[int, dict[str, int]] = {}
    empty = f"reject = {literal(NO_ELEMENTS)}"
    for target in sorted(targets):
        rows = "source_rows" if target in SUMMED_BY else "1"
        table = f"{work_sql}.{quote_ident(target)}"
        for file_no, *numbers in con.execute(
            f"select file_no, coalesce(sum({rows}) filter (where {KEPT}), 0), "
            f"coalesce(sum({rows}) filter (where not {KEPT} and reject not like 'filter:%' "
            f"and not {empty}), 0), "
            f"coalesce(sum({rows}) filter (where reject like 'filter:%'), 0), "
            f"count(*) filter (where {empty}) "
            f"from {table} where batch_id = ? group by file_no",
            [batch_id],
        ).fetchall():
            counts[file_no] = tuple(int(n) for n in numbers)
        for file_no, flag, n in con.execute(
            f"select file_no, flag, sum({rows}) from {table} "
            f"where batch_id = ? and {KEPT} and flag is not null group by all order by all",
            [batch_id],
        ).fetchall():
            flags.setdefault(file_no, {})[flag] = int(n)
    return counts, flags


def record_damaged(
    con: duckdb.DuckDBPyConnection, work_sql: str, batch_id: str, entry: str, file: ExportFile
) -> None:
    """Rejects for the records the normalizing reader refused."""
    if file.damaged:
        con.executemany(
            f"insert into {work_sql}.rejects values (?, ?, ?, ?, ?, ?, ?)",
            [
                [batch_id, entry, str(file.path), d.record_no, d.column, d.rule, d.raw]
                for d in file.damaged
            ],
        )


def _skip_table(con: duckdb.DuckDBPyConnection, name: str, file: ExportFile) -> str | None:
    """A table mapping a read-order number to the export's record number, when the
    reader did not see some records: (records seen before a skipped one, shift)."""
    if not file.damaged:
        return None
    first = file.open().first_line
    data = [d.record_no - first + 1 for d in file.damaged]
    lows: dict[int, int] = {}
    for shift, ordinal in enumerate(data, start=1):
        lows[ordinal - shift] = shift
    con.execute(f"create or replace temp table {name} (low bigint, shift bigint)")
    con.executemany(f"insert into {name} values (?, ?)", list(lows.items()))
    return name


def record_rejects(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    file: ExportFile,
    read: Read,
    work_sql: str,
    *,
    examples: bool,
) -> dict[str, int]:
    """Second read of a file with rejects: their record numbers, columns and raw values.

    This read numbers the records in file order. It finds the rows that broke a
    value rule itself; rows rejected later by a referential rule (duplicates,
    unknown ids) are matched to staging by their row key. Where several records
    share a key (exact duplicates, lines of one summed group), the later records
    carry the rejects. ``examples``: also return the first record number of each
    flag that points at a value (out_of_window:...).
    """
    fs = source.fs
    tag = f"rej2_{read.file_no}"
    select = file_select(source, read, tag, record_no=True)
    fields = set(mapped(fs))
    labels = {r.field: r.label for r in fs.columns}
    ref_rules = [(r, f) for r, f in REFERENTIAL_FIELD.items() if f is None or f in fields]
    ref_column = case(
        [
            (f"slot.reject = {literal(r)}", literal(labels.get(f, f) if f else None))
            for r, f in ref_rules
        ]
    )
    ref_raw = case(
        [
            (f"slot.reject = {literal(r)}", f"cast(src.{quote_ident(f)} as varchar)")
            for r, f in ref_rules
            if f
        ]
    )
    table = f"{work_sql}.{quote_ident(fs.target)}"
    rows = "source_rows" if fs.target in SUMMED_BY else "1"
    path = str(source.path)
    skips = _skip_table(con, f"_skips_{read.file_no}", file)
    offset = source.first_line - 1
    src = f"_second_read_{read.file_no}"
    if skips:
        number = f"src._record_no + coalesce(sk.shift, 0) + {offset}"
        joined = f"({select}) as src asof left join {skips} as sk on src._record_no > sk.low"
    else:
        number = f"src._record_no + {offset}"
        joined = f"({select}) as src"
    # rows are matched to the records of the second read by row key; where the entry
    # declares a record key its rows carry their record number, which matches exactly
    numbered = bool(fs.record_key) and read.ordered
    staged_match = "row_key, record_no" if numbered else "row_key"
    src_match = "row_key, _record_no" if numbered else "row_key"
    sql = f"""
        with staged as (
            -- a copy's key has its copy number folded in (copies.sql): xor undoes it
            select case when copy_no > 1 then xor(row_key, md5_number('copy ' || copy_no))
                else row_key end as row_key,
                {"record_no" if numbered else "null"} as record_no,
                reject, sum({rows}) as n
            from {table}
            where file_no = ? and batch_id = ?
                and (reject like 'duplicate:%' or reject like 'unknown_%')
            group by all
        ),
        slot as (
            select *, sum(n) over (partition by {staged_match} order by reject) as upto
            from staged
        ),
        candidate as (
            select *, row_number() over (
                partition by {src_match} order by _record_no desc
            ) as from_end
            from {src}
            where reject is null and ({src_match}) in (select ({staged_match}) from staged)
        )
        select batch_id, source_file, ?, _export_no, _col, reject, _raw
        from {src}
        where reject is not null and reject not like 'filter:%'
            and reject <> {literal(NO_ELEMENTS)}
        union all
        select src.batch_id, src.source_file, ?, src._export_no,
            {ref_column},
            slot.reject,
            {ref_raw}
        from candidate as src
        inner join slot
            on slot.row_key = src.row_key
            {"and slot.record_no = src._record_no" if numbered else ""}
            and src.from_end > slot.upto - slot.n and src.from_end <= slot.upto
    """
    con.execute("set preserve_insertion_order = true")
    try:
        con.execute(
            f"create or replace temp table {src} as "
            f"select src.*, {number} as _export_no from {joined}"
        )
        con.execute(
            f"insert into {work_sql}.rejects {sql}", [read.file_no, read.batch_id, path, path]
        )
        if not examples:
            return {}
        return dict(
            con.execute(
                f"select flag, min(_export_no) from {src} "
                "where reject is null and flag like 'out_of_window:%' group by flag"
            ).fetchall()
        )
    except duckdb.Error as exc:
        raise EtlError(f"site {read.spec.site}, file {source.name}: {first_line(exc)}") from exc
    finally:
        con.execute("set preserve_insertion_order = false")
        con.execute(f"drop table if exists {src}")
        if skips:
            con.execute(f"drop table if exists {skips}")
        drop_parser_rejects(con, tag)
