"""Extraction: a site's export folder -> canonical staging tables.

For every file of the spec, one set-based DuckDB statement reads the file,
converts each mapped column to its staging type and records, per row, the
first rule the row breaks (``reject``). Rows are never dropped here: rejected
and filtered rows stay in staging with their rule, and the reconciliation
counts them. Only when a file has rejects is it read a second time, to find
their record numbers and raw values for the rejects table.
"""

from __future__ import annotations

import csv
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from omop_etl import settings
from omop_etl.errors import EtlError
from omop_etl.spec import ColumnRule, FileSpec, SiteSpec
from omop_etl.sql import Ident, literal, quote_ident, render
from omop_etl.staging import KEYED_BY_CONTENT, SQL_TYPES, SUMMED_BY, TARGETS, staging_ddl
from omop_etl.warehouse import cursor

REJECTS_DDL = """
create table if not exists {schema}.rejects (
    batch_id varchar, source_file varchar, file_path varchar, record_no bigint,
    "column" varchar, rule varchar, raw_value varchar
)"""

RECONCILIATION_DDL = """
create table if not exists {schema}.reconciliation (
    batch_id varchar, source_file varchar, file_path varchar, target varchar,
    rows_read bigint, rows_loaded bigint, rows_rejected bigint, rows_filtered bigint,
    note varchar
)"""


NOT_IN_SPEC = "(not in spec)"  # the source_file of export files no spec file describes


@dataclass
class FileResult:
    """What became of one source file."""

    source_file: str
    path: str
    target: str | None
    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    rows_filtered: int = 0
    note: str | None = None


@dataclass(frozen=True)
class _Check:
    """One row rule: ``condition`` true means the row breaks ``rule`` on ``column``."""

    condition: str
    rule: str
    column: str
    raw: str


def find_files(input_dir: Path, spec: SiteSpec) -> dict[str, list[Path]]:
    """Match every spec file pattern in the export folder.

    A missing required file, or a file two patterns match, is an error.
    """
    if not input_dir.is_dir():
        raise EtlError(f"site {spec.site}: input folder {input_dir} does not exist")
    found: dict[str, list[Path]] = {}
    missing = []
    owner: dict[Path, str] = {}
    for fs in spec.files:
        paths = sorted(p for p in input_dir.glob(fs.pattern) if p.is_file())
        if not paths and fs.required and not fs.skip:
            missing.append(f"{fs.name} ({fs.pattern})")
        for path in paths:
            if path in owner:
                raise EtlError(
                    f"site {spec.site}: {path.name} matches the patterns of both "
                    f"{owner[path]} and {fs.name}; make the patterns exclusive"
                )
            owner[path] = fs.name
        found[fs.name] = paths
    if missing:
        raise EtlError(
            f"site {spec.site}: export folder {input_dir} lacks required file(s): "
            + ", ".join(missing)
        )
    return found


def unmatched_files(input_dir: Path, files: dict[str, list[Path]]) -> list[Path]:
    """Files of the export folder that no spec file describes (hidden files aside)."""
    matched = {path for paths in files.values() for path in paths}
    return sorted(
        p
        for p in input_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p not in matched
    )


def read_header(path: Path, fs: FileSpec) -> list[str]:
    """The column names in the first record of a delimited file."""
    with open(path, "rb") as fh:
        first = fh.readline(1 << 20)
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EtlError(f"{path.name}: line 1: header is not valid {fs.read['encoding']}") from exc
    quote = fs.read["quote"] or None
    reader = csv.reader(
        io.StringIO(text),
        delimiter=fs.read["delimiter"],
        quotechar=quote or '"',
        quoting=csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE,
    )
    header = next(reader, [])
    if not header or not any(h.strip() for h in header):
        raise EtlError(f"{path.name}: line 1: empty header")
    return header


def _read_csv_sql(path: Path, fs: FileSpec, header: list[str], rejects: str) -> str:
    columns = ", ".join(f"{literal(h)}: 'VARCHAR'" for h in header)
    opts = fs.read
    nulls = ", ".join(literal(str(v)) for v in opts["null_values"])
    return (
        f"read_csv({literal(str(path))}, header = {str(opts['header']).lower()}, "
        f"auto_detect = false, columns = {{{columns}}}, delim = {literal(opts['delimiter'])}, "
        f"quote = {literal(opts['quote'])}, escape = {literal(opts['escape'])}, "
        f"nullstr = [{nulls}], strict_mode = true, store_rejects = true, "
        f"rejects_table = {literal(rejects + '_errors')}, "
        f"rejects_scan = {literal(rejects + '_scans')})"
    )


def _convert(expr: str, ftype: str, fmt: str | None, fs: FileSpec) -> str:
    """SQL that turns a VARCHAR expression into the staging type (NULL when unparsable)."""
    if ftype == "text":
        return expr
    if ftype in ("int", "double"):
        return f"try_cast({expr} as {SQL_TYPES[ftype]})"
    pattern = {"date": fs.read["date_format"], "datetime": fs.read["datetime_format"]}.get(
        fmt or "", fmt
    )
    if pattern is None:
        pattern = fs.read["datetime_format"] if ftype == "timestamp" else fs.read["date_format"]
    parsed = f"try_strptime({expr}, {literal(pattern)})"
    return f"cast({parsed} as {SQL_TYPES[ftype]})"


def _rule_sql(rule: ColumnRule, ftype: str, fs: FileSpec, spec: SiteSpec) -> tuple[str, str]:
    """(typed expression, raw VARCHAR expression) for one staging field."""
    if rule.const is not None:
        value = literal(rule.const)
        return f"cast({value} as {SQL_TYPES[ftype]})", f"cast({value} as varchar)"
    raw = quote_ident(rule.column) if rule.column else f"({rule.sql})"
    if rule.map:
        mapping = spec.value_maps[rule.map]
        cases = " ".join(f"when {literal(k)} then {literal(v)}" for k, v in mapping.items())
        default = literal(rule.default) if rule.default is not None else "null"
        typed = f"cast(case cast({raw} as varchar) {cases} else {default} end as varchar)"
        return _convert(typed, ftype, None, fs), f"cast({raw} as varchar)"
    if rule.sql and not rule.format:
        typed = f"try_cast({raw} as {SQL_TYPES[ftype]})"
        if rule.default is not None:
            typed = f"coalesce({typed}, {literal(rule.default)})"
        return typed, f"cast({raw} as varchar)"
    typed = _convert(f"cast({raw} as varchar)", ftype, rule.format, fs)
    if rule.default is not None:
        typed = f"coalesce({typed}, cast({literal(rule.default)} as {SQL_TYPES[ftype]}))"
    return typed, f"cast({raw} as varchar)"


def _file_select(
    fs: FileSpec, spec: SiteSpec, source: str, batch_id: str, file_no: int, record_no: bool
) -> str:
    """The SELECT that maps one file onto its staging table, with each row's reject rule."""
    fields = TARGETS[fs.target]
    rules = {r.field: r for r in fs.columns}
    inner = []
    checks: list[_Check] = []
    for name, f in fields.items():
        rule = rules.get(name)
        if rule is None:
            inner.append(f"cast(null as {SQL_TYPES[f.type]}) as {quote_ident(name)}")
            continue
        typed, raw = _rule_sql(rule, f.type, fs, spec)
        inner.append(f"{typed} as {quote_ident(name)}")
        label = rule.column or name
        if rule.const is None and f.type != "text":
            inner.append(f"{raw} as {quote_ident('_raw_' + name)}")
            checks.append(
                _Check(
                    f"{quote_ident('_raw_' + name)} is not null and {quote_ident(name)} is null",
                    f"invalid_{f.type}:{name}",
                    label,
                    quote_ident("_raw_" + name),
                )
            )
        if f.required:
            raw_ref = (
                quote_ident("_raw_" + name) if f.type != "text" and rule.const is None else "null"
            )
            checks.append(_Check(f"{quote_ident(name)} is null", f"missing:{name}", label, raw_ref))
    if record_no:
        inner.append("row_number() over () as _record_no")
    whens = [(c.condition, literal(c.rule)) for c in checks]
    if fs.filter:
        inner.append(f"coalesce(({fs.filter.sql}), false) as _keep")
        whens.append(("not _keep", literal("filter:" + fs.filter.rule)))
    if fs.target in SUMMED_BY:
        # one staging row per group: the row key names the group, line by line too
        row_key = f"cast(hash({literal(fs.name)}, {quote_ident(SUMMED_BY[fs.target])}) as uhugeint)"
    elif fs.target in KEYED_BY_CONTENT:
        # persisted in the key map: md5 is the same in every DuckDB version; over the
        # fields this file maps, in staging order (the others are NULL for every row)
        parts = ", ".join(
            f"coalesce(cast({quote_ident(n)} as varchar), chr(30))" for n in fields if n in rules
        )
        row_key = f"md5_number(concat_ws(chr(31), {literal(fs.name)}, {parts}))"
    else:
        # only matched within one run (duplicates, rejects): the fast hash will do
        names = ", ".join(map(quote_ident, fields))
        row_key = f"cast(hash({literal(fs.name)}, {names}) as uhugeint)"
    outer = [
        f"{literal(batch_id)} as batch_id",
        f"{literal(fs.name)} as source_file",
        f"{file_no} as file_no",
        f"{row_key} as row_key",
        f"{_case(whens)} as reject",
        *(quote_ident(n) for n in fields),
    ]
    if record_no:
        # the second read also says which column broke which rule, and its raw value
        outer += [
            "_record_no",
            f"{_case([(c.condition, literal(c.column)) for c in checks])} as _col",
            f"{_case([(c.condition, c.raw) for c in checks])} as _raw",
        ]
    select = f"select {', '.join(outer)} from (select {', '.join(inner)} from {source})"
    if fs.target in SUMMED_BY and not record_no:
        select = _summed(select, fs.target)
    return select


def _case(whens: list[tuple[str, str]]) -> str:
    """A searched CASE of (condition, value) pairs; NULL when there are none."""
    if not whens:
        return "cast(null as varchar)"
    return "case " + " ".join(f"when {c} then {v}" for c, v in whens) + " end"


def _summed(select: str, target: str) -> str:
    """Lines summed per group key and reject rule; ``source_rows`` counts them."""
    key = SUMMED_BY[target]
    groups = ["batch_id", "source_file", "file_no", "row_key", "reject", quote_ident(key)]
    values = [
        f"{'sum' if f.type == 'double' else 'min'}({quote_ident(n)}) as {quote_ident(n)}"
        for n, f in TARGETS[target].items()
        if n != key
    ]
    return (
        f"select {', '.join(groups)}, {', '.join(values)}, count(*) as source_rows "
        f"from ({select}) group by {', '.join(groups)}"
    )


def extract_site(
    con: duckdb.DuckDBPyConnection,
    spec: SiteSpec,
    input_dir: Path,
    work: Ident,
    batch_id: str,
    progress: Any = None,
) -> list[FileResult]:
    """Load every file of the export into the staging tables of schema ``work``.

    ``work`` holds one batch: its staging tables and its ``rejects`` are created
    anew. Returns, per source file, rows read = loaded + rejected + filtered.
    """
    work_sql = work.sql
    con.execute(f"create schema if not exists {work_sql}")
    for target in TARGETS:
        con.execute(f"drop table if exists {work_sql}.{quote_ident(target)}")
        con.execute(staging_ddl(work_sql, target))
    con.execute(f"drop table if exists {work_sql}.rejects")
    con.execute(REJECTS_DDL.format(schema=work_sql))

    files = find_files(input_dir, spec)
    jobs = [(fs, path) for fs in spec.files for path in files[fs.name]]

    def read(file_no: int) -> FileResult | tuple[list[str], int]:
        fs, path = jobs[file_no]
        if progress:
            progress(fs.name, path)
        cur = cursor(con)  # one connection per thread; appends to a table do not conflict
        try:
            if fs.skip:
                rows = _count_records(cur, path, fs)
                # a skipped file's rows are all filtered, by the spec's named reason
                return FileResult(
                    fs.name, str(path), None, rows, rows_filtered=rows, note=f"skipped: {fs.skip}"
                )
            return _stage_file(cur, spec, fs, path, file_no, work_sql, batch_id)
        finally:
            cur.close()

    # Two files at a time, largest first: small files fill the gaps of the large ones.
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i][1].stat().st_size)
    with ThreadPoolExecutor(max_workers=settings.workers()) as pool:
        futures = {i: pool.submit(read, i) for i in order}
        done = [futures[i].result() for i in range(len(jobs))]
    results: list[FileResult] = [r for r in done if isinstance(r, FileResult)]
    # not silently lost: a file the spec does not describe is reported as not read
    results += [
        FileResult(
            "(not in spec)", str(path), None, note="not described by the site spec; not read"
        )
        for path in unmatched_files(input_dir, files)
    ]
    staged = [
        (file_no, fs, path, *r)
        for file_no, ((fs, path), r) in enumerate(zip(jobs, done, strict=True))
        if not isinstance(r, FileResult)
    ]
    for target, key in DUPLICATE_KEYS.items():
        params = {"work": work, "target": Ident(target), "key": Ident(key)}
        con.execute(render(_DUPLICATE_SQL, {**params, "rule": f"duplicate:{target}"}))
    con.execute(render(_REFERENTIAL_SQL, {"work": work}))
    counts = _row_counts(con, work_sql, {fs.target for _, fs, *_ in staged}, batch_id)
    for file_no, fs, path, header, malformed in staged:
        results.append(
            _account(
                con,
                spec,
                fs,
                path,
                header,
                malformed,
                file_no,
                counts.get(file_no, (0, 0, 0)),
                work_sql,
                batch_id,
            )
        )
    return results


_REFERENTIAL_SQL = Path(__file__).with_name("referential.sql").read_text(encoding="utf-8")
_DUPLICATE_SQL = Path(__file__).with_name("duplicate.sql").read_text(encoding="utf-8")

# The key that makes two staging rows the same thing, per target.
DUPLICATE_KEYS = {
    "person": "person_source_value",
    "visit": "visit_source_value",
    "care_site": "care_site_source_value",
    "provider": "provider_source_value",
    "event": "row_key",
    "payer_plan": "row_key",
}

# Rules given by referential.sql, and the staging field each one is about.
_REFERENTIAL_FIELD = {
    "unknown_person": "person_source_value",
    "unknown_visit": "visit_source_value",
    "duplicate:person": "person_source_value",
    "duplicate:visit": "visit_source_value",
    "duplicate:care_site": "care_site_source_value",
    "duplicate:provider": "provider_source_value",
    "duplicate:event": None,
    "duplicate:payer_plan": None,
}


def _row_counts(
    con: duckdb.DuckDBPyConnection, work_sql: str, targets: set[str], batch_id: str
) -> dict[str, tuple[int, int, int]]:
    """(loaded, rejected, filtered) source rows per file of the batch, one scan per target."""
    counts = {}
    for target in sorted(targets):
        rows = "source_rows" if target in SUMMED_BY else "1"
        for name, *numbers in con.execute(
            f"select file_no, coalesce(sum({rows}) filter (where reject is null), 0), "
            f"coalesce(sum({rows}) filter (where reject not like 'filter:%'), 0), "
            f"coalesce(sum({rows}) filter (where reject like 'filter:%'), 0) "
            f"from {work_sql}.{quote_ident(target)} where batch_id = ? group by file_no",
            [batch_id],
        ).fetchall():
            counts[name] = tuple(numbers)
    return counts


def _count_records(con: duckdb.DuckDBPyConnection, path: Path, fs: FileSpec) -> int:
    header = read_header(path, fs)
    source = _read_csv_sql(path, fs, header, "skipped_file")
    try:
        return con.execute(f"select count(*) from {source}").fetchall()[0][0]
    except duckdb.Error as exc:
        raise EtlError(f"{path.name}: cannot be read: {_first_line(exc)}") from exc
    finally:
        _drop_parser_rejects(con, "skipped_file")


def _stage_file(
    con: duckdb.DuckDBPyConnection,
    spec: SiteSpec,
    fs: FileSpec,
    path: Path,
    file_no: int,
    work_sql: str,
    batch_id: str,
) -> tuple[list[str], int]:
    """First read: every record into staging. Returns the header and malformed-row count."""
    header = read_header(path, fs)
    used = {r.column for r in fs.columns if r.column}
    absent = sorted(used - set(header))
    if absent:
        raise EtlError(
            f"site {spec.site}, file {path.name}: column(s) {', '.join(absent)} named in "
            f"the spec ({fs.name}) are not in the header (line 1)"
        )
    tag = f"rej_{fs.name}"
    source = _read_csv_sql(path, fs, header, tag)
    select = _file_select(fs, spec, source, batch_id, file_no, record_no=False)
    table = f"{work_sql}.{quote_ident(fs.target)}"
    try:
        con.execute(f"insert into {table} by name {select}")
    except duckdb.Error as exc:
        _drop_parser_rejects(con, tag)
        raise EtlError(
            f"site {spec.site}, file {path.name} ({fs.name}): {_first_line(exc)}"
        ) from exc
    return header, _malformed_rows(con, tag, work_sql, batch_id, fs.name, path)


def _account(
    con: duckdb.DuckDBPyConnection,
    spec: SiteSpec,
    fs: FileSpec,
    path: Path,
    header: list[str],
    malformed: int,
    file_no: int,
    counts: tuple[int, int, int],
    work_sql: str,
    batch_id: str,
) -> FileResult:
    """Count what became of a file's rows; record its rejects with their record numbers."""
    loaded, rejected, filtered = counts
    if rejected:
        _record_rejects(con, spec, fs, path, header, file_no, work_sql, batch_id)
    return FileResult(
        fs.name,
        str(path),
        fs.target,
        rows_read=loaded + rejected + filtered + malformed,
        rows_loaded=loaded,
        rows_rejected=rejected + malformed,
        rows_filtered=filtered,
    )


def _malformed_rows(
    con: duckdb.DuckDBPyConnection, tag: str, work_sql: str, batch_id: str, name: str, path: Path
) -> int:
    """Copy rows the CSV parser itself refused (wrong field count, bad quoting) to rejects.

    The parser reports one error per missing column; a refused row is one reject.
    """
    errors = quote_ident(tag + "_errors")
    con.execute(
        f"insert into {work_sql}.rejects select ?, ?, ?, line, "
        f"string_agg(column_name, ', ' order by column_idx), "
        f"'malformed_row:' || replace(lower(min(error_type)), ' ', '_'), "
        f"trim(min(csv_line), chr(13) || chr(10)) "
        f"from {errors} group by line",
        [batch_id, name, str(path)],
    )
    count = con.execute(f"select count(distinct line) from {errors}").fetchall()[0][0]
    _drop_parser_rejects(con, tag)
    return count


def _drop_parser_rejects(con: duckdb.DuckDBPyConnection, tag: str) -> None:
    con.execute(f"drop table if exists {quote_ident(tag + '_errors')}")
    con.execute(f"drop table if exists {quote_ident(tag + '_scans')}")


def _record_rejects(
    con: duckdb.DuckDBPyConnection,
    spec: SiteSpec,
    fs: FileSpec,
    path: Path,
    header: list[str],
    file_no: int,
    work_sql: str,
    batch_id: str,
) -> None:
    """Second read of a file with rejects: their record numbers, columns and raw values.

    This read numbers the records in file order. It finds the rows that broke a
    value rule itself; rows rejected later by a referential rule (duplicates,
    unknown ids) are matched to staging by their row key. Where several records
    share a key (exact duplicates, lines of one summed group), the later records
    carry the rejects.
    """
    tag = f"rej2_{fs.name}"
    source = _read_csv_sql(path, fs, header, tag)
    select = _file_select(fs, spec, source, batch_id, file_no, record_no=True)
    labels = {r.field: r.column or r.field for r in fs.columns}
    fields = TARGETS[fs.target]
    ref_rules = [(r, f) for r, f in _REFERENTIAL_FIELD.items() if f is None or f in fields]
    ref_column = _case(
        [
            (f"slot.reject = {literal(r)}", literal(labels.get(f, f) if f else None))
            for r, f in ref_rules
        ]
    )
    ref_raw = _case(
        [
            (f"slot.reject = {literal(r)}", f"cast(src.{quote_ident(f)} as varchar)")
            for r, f in ref_rules
            if f
        ]
    )
    table = f"{work_sql}.{quote_ident(fs.target)}"
    rows = "source_rows" if fs.target in SUMMED_BY else "1"
    first_line = 2 if fs.read["header"] else 1
    sql = f"""
        insert into {work_sql}.rejects
        with src as materialized ({select}),
        staged as (
            select row_key, reject, sum({rows}) as n
            from {table}
            where file_no = ? and batch_id = ?
                and (reject like 'duplicate:%' or reject like 'unknown_%')
            group by row_key, reject
        ),
        slot as (
            select *, sum(n) over (partition by row_key order by reject) as upto from staged
        ),
        candidate as (
            select *, row_number() over (
                partition by row_key order by _record_no desc
            ) as from_end
            from src
            where reject is null and row_key in (select row_key from staged)
        )
        select batch_id, source_file, ?, _record_no + {first_line - 1}, _col, reject, _raw
        from src
        where reject is not null and reject not like 'filter:%'
        union all
        select src.batch_id, src.source_file, ?, src._record_no + {first_line - 1},
            {ref_column},
            slot.reject,
            {ref_raw}
        from candidate as src
        inner join slot
            on slot.row_key = src.row_key
            and src.from_end > slot.upto - slot.n and src.from_end <= slot.upto
    """
    con.execute("set preserve_insertion_order = true")
    try:
        con.execute(sql, [file_no, batch_id, str(path), str(path)])
    except duckdb.Error as exc:
        raise EtlError(f"site {spec.site}, file {path.name}: {_first_line(exc)}") from exc
    finally:
        con.execute("set preserve_insertion_order = false")
        _drop_parser_rejects(con, tag)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
