"""Extraction: a site's export folder -> canonical staging tables.

For every file of the spec, one set-based DuckDB statement reads the file,
converts each mapped column to its staging type and records, per row, the
first rule the row breaks (``reject``). Rows are never dropped here: rejected
and filtered rows stay in staging with their rule, and the reconciliation
counts them. Only when a file has rejects is it read a second time, to find
their record numbers and raw values for the rejects table.
"""

from __future__ import annotations

import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from omop_etl import settings
from omop_etl.codes import normalized_sql
from omop_etl.errors import EtlError
from omop_etl.privacy import IDENTIFIER_PATTERNS, hmac_sql, scrub_sql
from omop_etl.readers import RECORD, Source, encoding_name, open_source, undecodable_field_hex
from omop_etl.spec import ColumnRule, FileSpec, SiteSpec
from omop_etl.sql import Ident, literal, quote_ident, render
from omop_etl.staging import (
    KEYED_BY_CONTENT,
    PATIENT_ID_FIELD,
    SQL_TYPES,
    SUMMED_BY,
    TARGETS,
    staging_ddl,
)
from omop_etl.warehouse import cursor

REJECTS_DDL = """
create table if not exists {schema}.rejects (
    batch_id varchar, source_file varchar, file_path varchar, record_no bigint,
    "column" varchar, rule varchar, raw_value varchar
)"""

# The site's lasting rejects: the run's, with the site named.
STORED_REJECTS_DDL = """
create table if not exists {schema}.rejects (
    site varchar, batch_id varchar, source_file varchar, file_path varchar,
    record_no bigint, "column" varchar, rule varchar, raw_value varchar
)"""

FLAGS_DDL = """
create table if not exists {schema}.flags (
    batch_id varchar, source_file varchar, file_path varchar, rule varchar, rows bigint
)"""

RECONCILIATION_DDL = """
create table if not exists {schema}.reconciliation (
    batch_id varchar, source_file varchar, file_path varchar, target varchar,
    rows_read bigint, rows_loaded bigint, rows_rejected bigint, rows_filtered bigint,
    note varchar
)"""


NOT_IN_SPEC = "(not in spec)"  # the source_file of export files no spec file describes
SUPERSEDED = "superseded"  # a record a later batch holds a newer version of


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
    flags: dict[str, int] = field(default_factory=dict)  # kept rows something was fixed in


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
    if rule.column:
        raw = quote_ident(rule.column)
    elif rule.json:
        # every path of the file is extracted in one pass over the record (_json)
        raw = f"{_JSON}[{_json_paths(fs).index(rule.json) + 1}]"
    else:
        raw = f"({rule.sql})"
    if rule.transform:
        raw = f"({rule.transform.replace('{value}', f'cast({raw} as varchar)')})"
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


_JSON = "_json"  # an ndjson record's values at the file's JSON paths, parsed once


def _json_paths(fs: FileSpec) -> list[str]:
    """The JSON paths a file's rules read, in rule order."""
    return list(dict.fromkeys(r.json for r in fs.columns if r.json))


def _relation(source: Source, tag: str) -> str:
    """The file's records; an ndjson record also as the list of its values at the paths."""
    relation = source.relation(tag)
    paths = _json_paths(source.fs)
    if not paths:
        return relation
    listed = ", ".join(literal(p) for p in paths)
    return f"(select *, json_extract_string({RECORD}, [{listed}]) as {_JSON} from {relation})"


_ANY_IDENTIFIER = "|".join(f"({p})" for _, p in IDENTIFIER_PATTERNS)


def _file_select(
    fs: FileSpec,
    spec: SiteSpec,
    source: Source,
    tag: str,
    batch_id: str,
    file_no: int,
    *,
    key: bytes,
    pseudonyms: str,
    record_no: bool,
) -> str:
    """The SELECT that maps one file onto its staging table, with each row's reject rule.

    Three layers: the fields typed from the source (patient ids already pseudonymized
    through the ``pseudonyms`` table of ids seen in the patient files, else by their
    HMAC), then free text scrubbed and codes in canonical form, then the row's key,
    reject rule (the first rule it breaks) and flag.
    """
    fields = TARGETS[fs.target]
    rules = {r.field: r for r in fs.columns}
    inner = []
    middle = []
    checks: list[_Check] = []
    flags: list[tuple[str, str]] = []
    if fs.read["format"] == "ndjson":
        inner.append(f"{RECORD} is null as _malformed")
        checks.append(_Check("_malformed", "malformed_json", RECORD, "null"))
    unread = sorted(set(source.columns) - {r.column for r in fs.columns if r.column})
    if source.check_every_column and unread and fs.read["format"] == "csv":
        # DuckDB decodes only the columns a query uses: touch the others too, so an
        # undecodable byte anywhere in a record rejects the record (the check never fires)
        touched = " or ".join(f"{quote_ident(c)} is null" for c in unread)
        inner.append(f"({touched}) as _every_column_read")
        checks.append(_Check("_every_column_read is null", "unreachable", "", "null"))
    join = ""
    for name, f in fields.items():
        rule = rules.get(name)
        if rule is None:
            inner.append(f"cast(null as {SQL_TYPES[f.type]}) as {quote_ident(name)}")
            continue
        typed, raw = _rule_sql(rule, f.type, fs, spec)
        if name == PATIENT_ID_FIELD and rule.const is None:
            join = f" left join {pseudonyms} as _pm on _pm._pm_id = {typed}"
            typed = f"coalesce(_pm._pm_pseudonym, {hmac_sql(typed, key)})"
        label = rule.column or rule.json or name
        if f.free_text:
            text = quote_ident("_text_" + name)
            inner.append(f"{typed} as {text}")
            middle.append(
                f"case when regexp_matches({text}, {literal(_ANY_IDENTIFIER)}) "
                f"then {scrub_sql(text)} else {text} end as {quote_ident(name)}"
            )
            flags.append((f"{quote_ident(name)} <> {text}", literal(f"scrubbed:{name}")))
        else:
            inner.append(f"{typed} as {quote_ident(name)}")
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
            if f.type in ("date", "timestamp") and fs.read["sentinel_dates"]:
                days = ", ".join(f"date {literal(str(d))}" for d in fs.read["sentinel_dates"])
                checks.append(
                    _Check(
                        f"cast({quote_ident(name)} as date) in ({days})",
                        f"sentinel_date:{name}",
                        label,
                        quote_ident("_raw_" + name),
                    )
                )
        if f.required:
            raw_ref = (
                quote_ident("_raw_" + name) if f.type != "text" and rule.const is None else "null"
            )
            checks.append(_Check(f"{quote_ident(name)} is null", f"missing:{name}", label, raw_ref))
    if "code" in rules:  # codes of systems written several ways, in their canonical form
        middle.append(f"{normalized_sql('code', 'code_system')} as code")
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
        f"{_case(flags)} as flag",
        *(quote_ident(n) for n in fields),
    ]
    relation = _relation(source, tag)
    if record_no:
        # the second read also says which column broke which rule, and its raw value
        relation = f"(select *, row_number() over () as _record_no from {relation})"
        inner.append("_record_no")
        outer += [
            "_record_no",
            f"{_case([(c.condition, literal(c.column)) for c in checks])} as _col",
            f"{_case([(c.condition, c.raw) for c in checks])} as _raw",
        ]
    typed_rows = f"select {', '.join(inner)} from {relation}{join}"
    if middle:
        star = "* exclude (code)" if "code" in rules else "*"
        typed_rows = f"select {star}, {', '.join(middle)} from ({typed_rows})"
    select = f"select {', '.join(outer)} from ({typed_rows})"
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
    *,
    key: bytes,
    earlier: Ident | None = None,
    progress: Any = None,
) -> list[FileResult]:
    """Load every file of the export into the staging tables of schema ``work``.

    ``work`` holds one run: its staging tables and its ``rejects`` are created anew.
    ``earlier`` is the schema of the staging rows of the site's earlier batches
    (incremental sites): they join this batch's rows before the duplicate and
    referential rules run, so an event may refer to a patient of an earlier batch,
    and a later batch's version of a record supersedes an earlier one. Patient ids
    are pseudonymized with ``key``. Returns, per source file, rows read = loaded +
    rejected + filtered.
    """
    work_sql = work.sql
    con.execute(f"create schema if not exists {work_sql}")
    for target in TARGETS:
        con.execute(f"drop table if exists {work_sql}.{quote_ident(target)}")
        con.execute(staging_ddl(work_sql, target))
    con.execute(f"drop table if exists {work_sql}.rejects")
    con.execute(REJECTS_DDL.format(schema=work_sql))
    pseudonyms = f"{work_sql}._pseudonyms"
    con.execute(f"create or replace table {pseudonyms} (_pm_id varchar, _pm_pseudonym varchar)")

    files = find_files(input_dir, spec)
    jobs = [(fs, path) for fs in spec.files for path in files[fs.name]]
    temp_dir = Path(tempfile.mkdtemp(prefix=f"omop_etl_{spec.site}_"))
    sources: dict[int, Source] = {}

    def read(file_no: int) -> FileResult | int:
        fs, path = jobs[file_no]
        if progress:
            progress(fs.name, path)
        cur = cursor(con)  # one connection per thread; appends to a table do not conflict
        try:
            if file_no not in sources:
                sources[file_no] = open_source(path, fs, temp_dir)
            source = sources[file_no]
            if fs.skip:
                rows = _count_records(cur, spec, source)
                # a skipped file's rows are all filtered, by the spec's named reason
                return FileResult(
                    fs.name, str(path), None, rows, rows_filtered=rows, note=f"skipped: {fs.skip}"
                )
            return _stage_file(cur, spec, source, file_no, work_sql, batch_id, key, pseudonyms)
        finally:
            cur.close()

    try:
        # The patient files first, one by one: their ids fill the pseudonym table the
        # other files look ids up in (an id found nowhere else gets its HMAC computed).
        for file_no, (fs, path) in enumerate(jobs):
            if fs.target == "person" and not fs.skip:
                sources[file_no] = open_source(path, fs, temp_dir)
                _add_pseudonyms(con, spec, sources[file_no], key, pseudonyms)
        # Then two files at a time, largest first: small files fill the gaps.
        order = sorted(range(len(jobs)), key=lambda i: -jobs[i][1].stat().st_size)
        with ThreadPoolExecutor(max_workers=settings.workers()) as pool:
            futures = {i: pool.submit(read, i) for i in order}
            done = {i: futures[i].result() for i in range(len(jobs))}
        results: list[FileResult] = [r for r in done.values() if isinstance(r, FileResult)]
        # not silently lost: a file the spec does not describe is reported as not read
        results += [
            FileResult(
                NOT_IN_SPEC, str(path), None, note="not described by the site spec; not read"
            )
            for path in unmatched_files(input_dir, files)
        ]
        staged = [
            (i, malformed) for i, malformed in done.items() if not isinstance(malformed, FileResult)
        ]
        if earlier is not None:
            _add_earlier_batches(con, work, earlier, batch_id)
        for target, dup_key in DUPLICATE_KEYS.items():
            params = {"work": work, "target": Ident(target), "key": Ident(dup_key)}
            rule = f"duplicate:{target}"
            con.execute(render(_DUPLICATE_SQL, {**params, "rule": rule, "batch_id": batch_id}))
            if earlier is not None:
                con.execute(render(_SUPERSEDE_SQL, params))
        con.execute(render(_REFERENTIAL_SQL, {"work": work}))
        targets = {jobs[i][0].target for i, _ in staged}
        counts, flags = _row_counts(con, work_sql, targets, batch_id)
        for file_no, malformed in staged:
            fs, path = jobs[file_no]
            result = _account(
                con,
                spec,
                sources[file_no],
                malformed,
                file_no,
                counts.get(file_no, (0, 0, 0)),
                work_sql,
                batch_id,
                key,
                pseudonyms,
            )
            result.flags = flags.get(file_no, {})
            results.append(result)
        return results
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def _add_pseudonyms(
    con: duckdb.DuckDBPyConnection, spec: SiteSpec, source: Source, key: bytes, table: str
) -> None:
    """The pseudonyms of a patient file's ids, computed once per patient."""
    rule = next((r for r in source.fs.columns if r.field == PATIENT_ID_FIELD), None)
    if rule is None or rule.const is not None:
        return
    typed, _ = _rule_sql(rule, "text", source.fs, spec)
    tag = f"pm_{source.fs.name}"
    try:
        con.execute(
            f"insert into {table} select _id, {hmac_sql('_id', key)} from ("
            f"select distinct {typed} as _id from {_relation(source, tag)}) "
            f"where _id is not null and _id not in (select _pm_id from {table})"
        )
    except duckdb.Error as exc:
        raise EtlError(f"site {spec.site}, file {source.path.name}: {_first_line(exc)}") from exc
    finally:
        _drop_parser_rejects(con, tag)


def _add_earlier_batches(
    con: duckdb.DuckDBPyConnection, work: Ident, earlier: Ident, batch_id: str
) -> None:
    """The kept staging rows of the site's other batches, beside this batch's rows."""
    catalog, schema = earlier.parts
    existing = {
        row[0]
        for row in con.execute(
            "select table_name from duckdb_tables() where database_name = ? and schema_name = ?",
            [catalog, schema],
        ).fetchall()
    }
    for target in TARGETS:
        if target not in existing:
            continue
        table = quote_ident(target)
        con.execute(
            f"insert into {work.sql}.{table} by name select * replace (null as reject) "
            f"from {earlier.sql}.{table} where batch_id <> ?",
            [batch_id],
        )


_REFERENTIAL_SQL = Path(__file__).with_name("referential.sql").read_text(encoding="utf-8")
_DUPLICATE_SQL = Path(__file__).with_name("duplicate.sql").read_text(encoding="utf-8")
_SUPERSEDE_SQL = Path(__file__).with_name("supersede.sql").read_text(encoding="utf-8")

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
) -> tuple[dict[int, tuple[int, int, int]], dict[int, dict[str, int]]]:
    """(loaded, rejected, filtered) source rows, and flagged rows by flag, per file of the batch.

    A row a later batch superseded was loaded (its newer version is what the CDM shows).
    """
    counts: dict[int, tuple[int, int, int]] = {}
    flags: dict[int, dict[str, int]] = {}
    kept = f"reject is null or reject = {literal(SUPERSEDED)}"
    for target in sorted(targets):
        rows = "source_rows" if target in SUMMED_BY else "1"
        table = f"{work_sql}.{quote_ident(target)}"
        for file_no, *numbers in con.execute(
            f"select file_no, coalesce(sum({rows}) filter (where {kept}), 0), "
            f"coalesce(sum({rows}) filter (where not ({kept}) and reject not like 'filter:%'), 0), "
            f"coalesce(sum({rows}) filter (where reject like 'filter:%'), 0) "
            f"from {table} where batch_id = ? group by file_no",
            [batch_id],
        ).fetchall():
            counts[file_no] = tuple(numbers)
        for file_no, flag, n in con.execute(
            f"select file_no, flag, sum({rows}) from {table} "
            f"where batch_id = ? and ({kept}) and flag is not null group by all order by all",
            [batch_id],
        ).fetchall():
            flags.setdefault(file_no, {})[flag] = int(n)
    return counts, flags


def _count_records(con: duckdb.DuckDBPyConnection, spec: SiteSpec, source: Source) -> int:
    tag = f"skip_{source.fs.name}"
    try:
        return con.execute(f"select count(*) from {source.relation(tag)}").fetchall()[0][0]
    except duckdb.Error as exc:
        raise EtlError(
            f"site {spec.site}, file {source.path.name}: cannot be read: {_first_line(exc)}"
        ) from exc
    finally:
        _drop_parser_rejects(con, tag)


def _stage_file(
    con: duckdb.DuckDBPyConnection,
    spec: SiteSpec,
    source: Source,
    file_no: int,
    work_sql: str,
    batch_id: str,
    key: bytes,
    pseudonyms: str,
) -> int:
    """First read: every record into staging. Returns the count of records the reader refused."""
    fs = source.fs
    used = {r.column for r in fs.columns if r.column}
    absent = sorted(used - set(source.columns))
    if absent:
        where = "the header (line 1)" if fs.read["format"] == "csv" else "the file's columns"
        raise EtlError(
            f"site {spec.site}, file {source.path.name}: column(s) {', '.join(absent)} named "
            f"in the spec ({fs.name}) are not in {where}"
        )
    tag = f"rej_{file_no}"
    select = _file_select(
        fs, spec, source, tag, batch_id, file_no, key=key, pseudonyms=pseudonyms, record_no=False
    )
    table = f"{work_sql}.{quote_ident(fs.target)}"
    try:
        con.execute(f"insert into {table} by name {select}")
    except duckdb.Error as exc:
        _drop_parser_rejects(con, tag)
        raise EtlError(
            f"site {spec.site}, file {source.path.name} ({fs.name}): {_first_line(exc)}"
        ) from exc
    if not source.parsed_by_csv_reader:
        return 0
    return _refused_records(con, source, tag, work_sql, batch_id)


def _account(
    con: duckdb.DuckDBPyConnection,
    spec: SiteSpec,
    source: Source,
    refused: int,
    file_no: int,
    counts: tuple[int, int, int],
    work_sql: str,
    batch_id: str,
    key: bytes,
    pseudonyms: str,
) -> FileResult:
    """Count what became of a file's rows; record its rejects with their record numbers."""
    loaded, rejected, filtered = counts
    if rejected:
        _record_rejects(con, spec, source, file_no, work_sql, batch_id, key, pseudonyms)
    return FileResult(
        source.fs.name,
        str(source.path),
        source.fs.target,
        rows_read=loaded + rejected + filtered + refused,
        rows_loaded=loaded,
        rows_rejected=rejected + refused,
        rows_filtered=filtered,
    )


# Raw bytes of undecodable fields are looked up one by one; past this many per file the
# rejects keep the record number only.
_MAX_HEX_LOOKUPS = 10_000


def _refused_records(
    con: duckdb.DuckDBPyConnection, source: Source, tag: str, work_sql: str, batch_id: str
) -> int:
    """Rejects for the records the reader itself refused, one per record.

    A record with bytes its encoding cannot decode is ``undecodable:<encoding>``, with
    the raw bytes of the field as hex; a record with the wrong number of fields or
    broken quoting is ``malformed_row:<error>``. The record's text is not kept: it may
    hold identifiers of columns the spec never reads.
    """
    errors = quote_ident(tag + "_errors")
    name, path = source.fs.name, str(source.path)
    undecodable = f"undecodable:{encoding_name(source.fs)}"
    con.execute(
        f"insert into {work_sql}.rejects select ?, ?, ?, line, "
        "string_agg(distinct column_name, ', '), "
        f"case when bool_or(error_type = 'INVALID ENCODING') then {literal(undecodable)} "
        "else 'malformed_row:' || replace(lower(min(error_type)), ' ', '_') end, null "
        f"from {errors} group by line",
        [batch_id, name, path],
    )
    bad_bytes = con.execute(
        f"select line, min(byte_position) from {errors} where error_type = 'INVALID ENCODING' "
        f"group by line order by line limit {_MAX_HEX_LOOKUPS}"
    ).fetchall()
    if bad_bytes:
        con.executemany(
            f"update {work_sql}.rejects set raw_value = ? "
            "where batch_id = ? and source_file = ? and file_path = ? and record_no = ?",
            [
                [undecodable_field_hex(source, position), batch_id, name, path, line]
                for line, position in bad_bytes
            ],
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
    source: Source,
    file_no: int,
    work_sql: str,
    batch_id: str,
    key: bytes,
    pseudonyms: str,
) -> None:
    """Second read of a file with rejects: their record numbers, columns and raw values.

    This read numbers the records in file order. It finds the rows that broke a
    value rule itself; rows rejected later by a referential rule (duplicates,
    unknown ids) are matched to staging by their row key. Where several records
    share a key (exact duplicates, lines of one summed group), the later records
    carry the rejects.
    """
    fs = source.fs
    tag = f"rej2_{file_no}"
    select = _file_select(
        fs,
        spec,
        source,
        tag,
        batch_id,
        file_no,
        key=key,
        pseudonyms=pseudonyms,
        record_no=True,
    )
    labels = {r.field: r.column or r.json or r.field for r in fs.columns}
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
    path = str(source.path)
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
        select batch_id, source_file, ?, _record_no + {source.first_line - 1}, _col, reject, _raw
        from src
        where reject is not null and reject not like 'filter:%'
        union all
        select src.batch_id, src.source_file, ?, src._record_no + {source.first_line - 1},
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
        con.execute(sql, [file_no, batch_id, path, path])
    except duckdb.Error as exc:
        raise EtlError(f"site {spec.site}, file {source.path.name}: {_first_line(exc)}") from exc
    finally:
        con.execute("set preserve_insertion_order = false")
        _drop_parser_rejects(con, tag)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
