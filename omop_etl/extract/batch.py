"""Extraction of one batch: a site's export folder -> canonical staging tables.

For every file of every file entry, one set-based DuckDB statement reads the file,
converts each mapped field to its staging type and records, per row, the first
rule the row breaks (``reject``). Rows are never dropped here: rejected and
filtered rows stay in staging with their rule, and the reconciliation counts them
against the records counted from the file itself. A file whose records DuckDB does
not all see is read again through the normalizing reader (``records``). Only when
a file has rejects is it read a second time, to find their record numbers and raw
values for the rejects table.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from omop_etl import settings
from omop_etl.errors import EtlError
from omop_etl.extract import accounting
from omop_etl.extract.accounting import drop_parser_rejects, first_line
from omop_etl.extract.files import find_files, relative_name, unmatched_files
from omop_etl.extract.outcome import NOT_IN_SPEC, REJECTS_DDL, FileResult
from omop_etl.extract.readers import Source
from omop_etl.extract.sandbox import check_spec_sql
from omop_etl.extract.select import Read, _rule_sql, file_select, records
from omop_etl.extract.sources import ExportFile, read_options
from omop_etl.privacy import hmac_sql
from omop_etl.spec import FileSpec, SiteSpec
from omop_etl.sql import Ident, quote_ident, render
from omop_etl.staging import KEYED_BY_CONTENT, PATIENT_ID_FIELD, SUMMED_BY, TARGETS, staging_ddl
from omop_etl.warehouse import cursor

_SQL = Path(__file__).parent
_REFERENTIAL_SQL = (_SQL / "referential.sql").read_text(encoding="utf-8")
_DUPLICATE_SQL = (_SQL / "duplicate.sql").read_text(encoding="utf-8")
_SUPERSEDE_SQL = (_SQL / "supersede.sql").read_text(encoding="utf-8")
_COPIES_SQL = (_SQL / "copies.sql").read_text(encoding="utf-8")

# The key that makes two staging rows the same thing, per target; events and coverage
# periods only where their file entry declares a record key or asks for duplicates to
# be rejected (OMOP keeps repeated events: repeated rows are numbered as copies)
DUPLICATE_KEYS = {
    "person": "person_source_value",
    "visit": "visit_source_value",
    "care_site": "care_site_source_value",
    "provider": "provider_source_value",
    "event": "row_key",
    "payer_plan": "row_key",
}
_MAX_REPAIRS = 3  # reads of a file through the normalizing reader before giving up


class _Job:
    """One file of one file entry: its staging statement and its outcome."""

    def __init__(self, file_no: int, fs: FileSpec, file: ExportFile):
        self.file_no = file_no
        self.fs = fs
        self.file = file
        self.result: FileResult | None = None  # a skipped file's result
        self.ordered = False  # staged with its records numbered in file order

    @property
    def table(self) -> str:
        return quote_ident(self.fs.target) if self.fs.target else ""


def extract_site(
    con: duckdb.DuckDBPyConnection,
    spec: SiteSpec,
    input_dir: Path,
    work: Ident,
    batch_id: str,
    *,
    key: bytes,
    today: date,
    earlier: Ident | None = None,
    progress: Any = None,
) -> list[FileResult]:
    """Load every file of the export into the staging tables of schema ``work``.

    ``work`` holds one run: its staging tables and its ``rejects`` are created anew.
    ``earlier`` is the schema of the staging rows of the site's earlier batches
    (incremental sites): they join this batch's rows before the duplicate and
    referential rules run, so an event may refer to a patient of an earlier batch,
    and a later batch's version of a record supersedes an earlier one. Patient ids
    are pseudonymized with ``key``; clinical dates are checked against the spec's
    window for a run on ``today``. Returns, per file entry and file: records read,
    rows produced = loaded + rejected + filtered.
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
    temp_dir = Path(tempfile.mkdtemp(prefix=f"omop_etl_{spec.site}_"))
    opened: dict[tuple, ExportFile] = {}
    jobs: list[_Job] = []
    for fs in spec.files:
        for path in files[fs.name]:
            shared = (path, read_options(fs))
            if shared not in opened:
                name = relative_name(path, input_dir)
                opened[shared] = ExportFile(path, name, fs, temp_dir, spec.site)
            jobs.append(_Job(len(jobs), fs, opened[shared]))
    by_entry: dict[str, list[ExportFile]] = defaultdict(list)
    for job in jobs:
        if job.file not in by_entry[job.fs.name]:
            by_entry[job.fs.name].append(job.file)
    looked_up = {lk.file for fs in spec.files for lk in fs.lookups}
    try:
        # Files other entries look values up in, and the patient files, are settled first
        # (counted, and repaired when DuckDB does not see every record); then the
        # patient files' ids fill the pseudonym table the other files look ids up in.
        persons = {fs.name for fs in spec.files if fs.target == "person"}
        for entry in sorted(looked_up | persons):
            for file in by_entry.get(entry, []):
                _settle(con, file, spec)
        for job in jobs:
            if job.fs.target == "person":
                _add_pseudonyms(con, spec, job.file.source(job.fs), key, pseudonyms)

        def read(job: _Job) -> Read:
            return Read(
                spec=spec,
                batch_id=batch_id,
                file_no=job.file_no,
                key=key,
                pseudonyms=pseudonyms,
                window=spec.window(today),
                lookup_sources={
                    name: [f.source(spec.file(name)) for f in by_entry.get(name, [])]
                    for name in {lk.file for lk in job.fs.lookups}
                },
                ordered=job.ordered,
            )

        def stage_group(group: list[_Job]) -> None:
            cur = cursor(con)  # one connection per thread; appends to a table do not conflict
            try:
                for job in group:
                    if progress:
                        progress(job.fs.name, job.file.path)
                    if job.fs.skip:
                        job.result = _skipped(cur, job, spec)
                    else:
                        _stage(cur, job, read(job), work_sql, spec)
            finally:
                cur.close()

        # The jobs of one file one after another (a repair serves them all); files two
        # at a time, largest first: small files fill the gaps.
        groups: dict[int, list[_Job]] = defaultdict(list)
        for job in jobs:
            groups[id(job.file)].append(job)
        order = sorted(groups.values(), key=lambda g: -g[0].file.path.stat().st_size)
        with ThreadPoolExecutor(max_workers=settings.workers()) as pool:
            for future in [pool.submit(stage_group, g) for g in order]:
                future.result()

        results: list[FileResult] = [j.result for j in jobs if j.result is not None]
        # not silently lost: a file the spec does not describe is reported as not read
        results += [
            FileResult(
                NOT_IN_SPEC, str(path), None, note="not described by the site spec; not read"
            )
            for path in unmatched_files(input_dir, files)
        ]
        staged = [j for j in jobs if not j.fs.skip]
        _number_repeated_keys(con, [j for j in staged if j.fs.record_key], read, work_sql, spec)
        if earlier is not None:
            _add_earlier_batches(con, work, earlier, batch_id)
        _same_records(con, work, spec, batch_id, supersede=earlier is not None)
        con.execute(render(_REFERENTIAL_SQL, {"work": work}))
        counts, flags = accounting.row_counts(
            con, work_sql, {j.fs.target for j in staged}, batch_id
        )
        for job in staged:
            results.append(_account(con, job, read(job), counts, flags, work_sql, batch_id))
        return results
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def _number_repeated_keys(
    con: duckdb.DuckDBPyConnection, jobs: list[_Job], read, work_sql: str, spec: SiteSpec
) -> None:
    """The files of entries with a record key in which a key repeats, staged again with
    their records numbered in file order, so the later record can supersede the earlier
    one. Numbering needs an ordered read (one thread): only these files pay for it."""
    by_target: dict[str, list[_Job]] = defaultdict(list)
    for job in jobs:
        by_target[job.fs.target].append(job)
    again: list[_Job] = []
    for target, members in by_target.items():
        table = f"{work_sql}.{quote_ident(target)}"
        numbers = ", ".join(str(j.file_no) for j in members)
        repeated = {
            file_no
            for (file_no,) in con.execute(
                f"select distinct file_no from {table} where file_no in ({numbers}) "
                f"and reject is null and row_key in (select row_key from {table} "
                f"where file_no in ({numbers}) and reject is null "
                "group by row_key having count(*) > 1)"
            ).fetchall()
        }
        again += [j for j in members if j.file_no in repeated]
    if not again:
        return
    con.execute("set preserve_insertion_order = true")
    try:
        for job in again:
            job.ordered = True
            batch_id = read(job).batch_id
            con.execute(
                f"delete from {work_sql}.{job.table} where file_no = ? and batch_id = ?",
                [job.file_no, batch_id],
            )
            _stage(con, job, read(job), work_sql, spec)
    finally:
        con.execute("set preserve_insertion_order = false")


def _settle(con: duckdb.DuckDBPyConnection, file: ExportFile, spec: SiteSpec) -> None:
    """Make sure DuckDB sees every record of a file read as a lookup (or skipped): count
    what it reads, and repair the file when that is not every record."""
    for _ in range(_MAX_REPAIRS + 1):
        source = file.source(file.fs)
        if not source.parsed_by_csv_reader:
            file.records()
            return
        tag = f"probe_{abs(hash(str(file.path))) % 10**8}"
        try:
            (n,) = con.execute(f"select count(*) from {source.relation(tag)}").fetchone()
        except duckdb.Error as exc:
            drop_parser_rejects(con, tag)
            if file.normalized:
                raise EtlError(
                    f"site {spec.site}, file {file.name}: cannot be read: {first_line(exc)}"
                ) from exc
            file.normalize()  # a file DuckDB cannot parse at all (mixed line ends, ...)
            continue
        refused = accounting.refused(con, tag, source)
        if file.saw_every_record(n, refused):
            return
        file.normalize(_export_numbers(file, refused) if file.normalized else None)
    raise EtlError(
        f"site {spec.site}, file {file.name}: the reader still refuses records after "
        f"{_MAX_REPAIRS} repairs"
    )


def _export_numbers(file: ExportFile, refused: dict) -> dict[int, str]:
    """Record numbers DuckDB gave in a repaired copy, as the export's own, with the rule."""
    first = file.open().first_line
    return {file.export_number(line - first + 1): d.rule for line, d in refused.items()}


def _skipped(con: duckdb.DuckDBPyConnection, job: _Job, spec: SiteSpec) -> FileResult:
    """A file the spec lists as not used: its records are all filtered, by the reason."""
    _settle(con, job.file, spec)
    rows = job.file.records()
    return FileResult(
        job.fs.name,
        str(job.file.path),
        None,
        rows,
        rows_filtered=rows,
        note=f"skipped: {job.fs.skip}",
    )


def _stage(
    con: duckdb.DuckDBPyConnection, job: _Job, read: Read, work_sql: str, spec: SiteSpec
) -> None:
    """First read: every record into staging. A file whose records DuckDB does not all
    see or refuse (together, every record counted in the file) is repaired and staged
    again from the repaired copy."""
    fs = job.fs
    table = f"{work_sql}.{job.table}"
    for attempt in range(_MAX_REPAIRS + 1):
        source = job.file.source(fs)
        if attempt == 0:
            _check_columns(source, spec)
            check_spec_sql(source, spec.site)
        tag = f"rej_{job.file_no}"
        select = file_select(source, read, tag, record_no=False)
        try:
            con.execute(f"insert into {table} by name {select}")
        except duckdb.Error as exc:
            drop_parser_rejects(con, tag)
            if job.file.normalized or not source.parsed_by_csv_reader or not _unparsable(exc):
                raise EtlError(
                    f"site {spec.site}, file {source.name} ({fs.name}): {first_line(exc)}"
                ) from exc
            job.file.normalize()  # a file DuckDB cannot parse at all (mixed line ends, ...)
            continue
        if not source.parsed_by_csv_reader:
            return
        refused = accounting.refused(con, tag, source)
        seen = accounting.seen(con, table, job.file_no, read.batch_id, fs.target in SUMMED_BY)
        if job.file.saw_every_record(seen, refused):
            return
        con.execute(
            f"delete from {table} where file_no = ? and batch_id = ?", [job.file_no, read.batch_id]
        )
        if attempt == _MAX_REPAIRS:
            break
        with_refused = _export_numbers(job.file, refused) if job.file.normalized else None
        if job.file.normalized and not with_refused and seen != job.file.expected:
            break  # repaired, yet DuckDB sees a different number of records
        job.file.normalize(with_refused)
    raise EtlError(
        f"site {spec.site}, file {job.file.name} ({fs.name}): {job.file.expected:,} records "
        "counted in the file, but the reader does not see them all, even from a repaired copy"
    )


def _unparsable(exc: duckdb.Error) -> bool:
    """Whether DuckDB refused the whole file (its CSV state machine, not one record)."""
    text = str(exc)
    return "CSV" in text or "state machine" in text or "line" in text.lower()


def _check_columns(source: Source, spec: SiteSpec) -> None:
    fs = source.fs
    if fs.read["format"] == "ndjson":
        return
    used = {r.column for r in (*fs.columns, *fs.record_key) if r.column}
    used |= {this.column for lk in fs.lookups for this, _ in lk.keys if this.column}
    used |= set(fs.each.columns) if fs.each else set()
    absent = sorted(used - set(source.columns))
    if absent:
        where = "the header (line 1)" if fs.read["format"] == "csv" else "the file's columns"
        raise EtlError(
            f"site {spec.site}, file {source.name}: column(s) {', '.join(absent)} named "
            f"in the spec ({fs.name}) are not in {where}"
        )


def _account(
    con: duckdb.DuckDBPyConnection,
    job: _Job,
    read: Read,
    counts: dict[int, tuple[int, int, int, int]],
    flags: dict[int, dict[str, int]],
    work_sql: str,
    batch_id: str,
) -> FileResult:
    """What became of a file's records; its rejects recorded with their record numbers."""
    loaded, rejected, filtered, empty = counts.get(job.file_no, (0, 0, 0, 0))
    damaged = len(job.file.damaged)
    accounting.record_damaged(con, work_sql, batch_id, job.fs.name, job.file)
    file_flags = flags.get(job.file_no, {})
    examples: dict[str, int] = {}
    window_flags = any(f.startswith("out_of_window:") for f in file_flags)
    if rejected or window_flags:
        source = job.file.source(job.fs)
        examples = accounting.record_rejects(
            con, source, job.file, read, work_sql, examples=window_flags
        )
    produced = loaded + rejected + filtered + damaged
    result = FileResult(
        job.fs.name,
        str(job.file.path),
        job.fs.target,
        rows_read=job.file.records(),
        rows_loaded=loaded,
        rows_rejected=rejected + damaged,
        rows_filtered=filtered,
        rows_produced=produced if job.fs.each else None,
        records_empty=empty,
        flags=file_flags,
        flag_examples=examples,
    )
    if not job.fs.each and produced != result.rows_read:
        raise EtlError(
            f"site {read.spec.site}, file {job.file.name} ({job.fs.name}): "
            f"{result.rows_read:,} records counted in the file, but {produced:,} accounted for"
        )
    return result


def _add_pseudonyms(
    con: duckdb.DuckDBPyConnection, spec: SiteSpec, source: Source, key: bytes, table: str
) -> None:
    """The pseudonyms of a patient file's ids, computed once per patient."""
    rule = next((r for r in source.fs.columns if r.field == PATIENT_ID_FIELD), None)
    if rule is None or rule.const is not None or rule.lookup:
        return
    typed, _ = _rule_sql(rule, "text", source, spec)
    tag = f"pm_{source.fs.name}"
    try:
        con.execute(
            f"insert into {table} select _id, {hmac_sql('_id', key)} from ("
            f"select distinct {typed} as _id from {records(source, tag, record_no=False)} as _src) "
            f"where _id is not null and _id not in (select _pm_id from {table})"
        )
    except duckdb.Error as exc:
        raise EtlError(f"site {spec.site}, file {source.name}: {first_line(exc)}") from exc
    finally:
        drop_parser_rejects(con, tag)


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


def _same_records(
    con: duckdb.DuckDBPyConnection, work: Ident, spec: SiteSpec, batch_id: str, *, supersede: bool
) -> None:
    """Rows that are the same record: duplicates within the batch (by id; events and
    coverage periods only by a declared record key, or where the spec asks for exact
    copies to be rejected), repeated rows numbered as copies, and (incremental sites)
    earlier batches' versions superseded by this one's."""
    deduplicated = [
        fs.name
        for fs in spec.files
        if fs.target in KEYED_BY_CONTENT and (fs.record_key or fs.duplicates == "reject")
    ]
    for target, dup_key in DUPLICATE_KEYS.items():
        params = {"work": work, "target": Ident(target), "key": Ident(dup_key)}
        scoped = target in KEYED_BY_CONTENT
        con.execute(
            render(
                _DUPLICATE_SQL,
                {
                    **params,
                    "rule": f"duplicate:{target}",
                    "batch_id": batch_id,
                    "every_entry": not scoped,
                    "entries": deduplicated,
                },
            )
        )
        if scoped:
            con.execute(render(_COPIES_SQL, {**params, "batch_id": batch_id}))
        if supersede:
            con.execute(render(_SUPERSEDE_SQL, params))


def check_export(spec: SiteSpec, input_dir: Path) -> list[str]:
    """Every problem a run would find in the export before reading a record: missing
    files, symbolic links out of the folder, unreadable headers, columns the spec names
    that a file lacks, spec SQL that reads more than its record."""
    try:
        files = find_files(input_dir, spec)
    except EtlError as exc:
        return [str(exc)]
    problems = []
    temp_dir = Path(tempfile.mkdtemp(prefix=f"omop_etl_check_{spec.site}_"))
    try:
        for fs in spec.files:
            for path in files[fs.name]:
                if fs.skip:
                    continue
                name = relative_name(path, input_dir)
                try:
                    source = ExportFile(path, name, fs, temp_dir, spec.site).source(fs)
                    _check_columns(source, spec)
                    check_spec_sql(source, spec.site)
                except EtlError as exc:
                    problems.append(str(exc))
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return problems
