"""One site, one batch, end to end: export folder -> staging -> CDM tables.

The CDM of a site is replaced in one transaction: readers see the old CDM or
the new one, never a half-built one.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from omop_etl import __version__, schema, settings
from omop_etl.errors import EtlError
from omop_etl.extract import (
    FLAGS_DDL,
    RECONCILIATION_DDL,
    STORED_REJECTS_DDL,
    SUPERSEDED,
    FileResult,
    extract_site,
)
from omop_etl.privacy import site_key
from omop_etl.spec import SiteSpec, load_spec
from omop_etl.sql import Ident, literal, quote_ident
from omop_etl.staging import TARGETS, staging_ddl
from omop_etl.warehouse import Target, connect
from quality.checks import CheckResult, catalogue, cdm_source_metadata, dqd_json, run_checks
from quality.contracts import ContractResult, run_contracts
from quality.results import create_results_schema
from transforms.runner import CDM_TABLES_WRITTEN, Step, run_transforms


@dataclass
class RunSummary:
    """What a run built: rows per CDM table, what became of every source file."""

    site: str
    batch_id: str
    warehouse: str
    cdm_schema: str
    rows: dict[str, int]
    files: list[FileResult]
    rejects_by_rule: dict[str, int] = field(default_factory=dict)
    flags_by_rule: dict[str, int] = field(default_factory=dict)
    mapping: dict[str, tuple[int, int]] = field(default_factory=dict)  # table: (mapped, rows)
    unmapped_codes: int = 0  # distinct source codes with concept 0 in this run
    checks: dict[str, int] = field(default_factory=dict)  # CDM checks run, by status
    contracts: tuple[int, int] = (0, 0)  # contract expectations (passed, run)
    run_id: str = ""
    status: str = "published"
    seconds: float = 0.0

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files)


Progress = Callable[[str], None]
SCRATCH = "omop_scratch"  # the in-memory database a run builds in


def default_batch_id(input_dir: Path) -> str:
    """The export folder's name, made safe: a batch is one dated export folder."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", input_dir.resolve().name) or "batch"


def run_site(
    site: str,
    input_dir: Path,
    target: Target,
    *,
    batch_id: str | None = None,
    batch_date: date | None = None,
    demo_key: bool = False,
    progress: Progress | None = None,
) -> RunSummary:
    """Extract, map and publish one site's export batch into the warehouse.

    A batch whose rejects exceed the spec's ``max_reject_rate`` is not published: its
    rejects and reconciliation are stored, the run log says why, and EtlError is raised.
    """
    started = time.perf_counter()
    started_at = datetime.now()
    spec = load_spec(site)
    if not input_dir.is_dir():
        raise EtlError(f"site {spec.site}: input folder {input_dir} does not exist")
    batch_id = batch_id or default_batch_id(input_dir)
    key = site_key(spec.site, demo=demo_key)
    # Great Expectations takes seconds to import: import it while the files are read
    threading.Thread(target=_import_contract_engine, daemon=True).start()
    con = connect(target)
    try:
        _require_vocabulary(con)
        stage = settings.stage_schema(spec.site)
        cdm = settings.cdm_schema(spec.site)
        # Staging, work tables and the new CDM are built in memory beside the published
        # CDM (DuckDB spills to its temp folder beyond the memory limit), then published.
        con.execute(f"create schema if not exists {quote_ident(stage)}")  # the key map's home
        catalog = con.execute("select current_database()").fetchall()[0][0]
        con.execute(f"attach ':memory:' as {SCRATCH}")
        # no automatic checkpoints mid-run (they stall statements, in memory too);
        # one explicit checkpoint after publishing
        con.execute("set checkpoint_threshold = '1TB'")
        work = Ident(SCRATCH, stage)
        build = Ident(SCRATCH, cdm)
        con.execute(f"create schema {build.sql}")

        def file_progress(name: str, path: Path) -> None:
            if progress:
                progress(f"extract {name}: {path.name}")

        earlier = Ident(catalog, stage) if spec.batches == "incremental" else None
        files = extract_site(
            con, spec, input_dir, work, batch_id, key=key, earlier=earlier, progress=file_progress
        )
        batch = Batch(
            spec.site,
            batch_id,
            files,
            work,
            stage,
            spec.batches == "incremental",
            run_id=f"{spec.site}:{batch_id}:{started_at:%Y%m%dT%H%M%S.%f}",
            started_at=started_at,
        )
        blocked = _over_reject_threshold(spec, batch, con)
        if not blocked:
            if progress:
                progress("contracts (Great Expectations)")
            batch.contracts = run_contracts(con, spec, work.sql, batch_id, started_at.date())
            blocked = _failed_contracts(spec, batch)
        if blocked:
            _store_blocked(con, batch, blocked)
            raise EtlError(blocked)
        source_release = _source_release_date(con, work)
        params = {
            # views built in the scratch database resolve names there: qualify
            "stage": Ident(catalog, stage),
            "work": work,
            "cdm": build,
            "vocab": Ident(catalog, settings.VOCAB_SCHEMA),
            "id_base": spec.id_base,
            "site": spec.site,
            "site_description": spec.description,
            "batch_id": batch_id,
            "batch_date": (batch_date or source_release).isoformat(),
            "source_release_date": source_release.isoformat(),
            "unit_vocabulary": spec.unit_vocabulary,
            "spec_sha256": _spec_digest(spec),
            "etl_version": __version__,
        }

        def step_progress(step: Step) -> None:
            if progress:
                progress(f"{step.kind} {step.name}")

        run_transforms(con, params, progress=step_progress)
        if progress:
            progress("checks (DQD catalogue)")
        _run_cdm_checks(con, spec, batch, build, Ident(catalog, settings.VOCAB_SCHEMA), cdm)
        blocked = _failed_fatal_checks(spec, batch)
        if blocked:
            _store_blocked(con, batch, blocked)
            raise EtlError(blocked)
        if progress:
            progress("publish")
        _publish(con, batch, build, cdm)
        con.execute(f"detach {SCRATCH}")
        con.execute("checkpoint")
        # the counts the publish transaction recorded for this run (tables not written: 0)
        key = [batch.run_id]
        recorded = dict(
            con.execute(
                "select cdm_table, rows from results.row_counts where run_id = ?", key
            ).fetchall()
        )
        rows = {t: recorded.get(t, 0) for t in schema.cdm_tables()}
        coverage = con.execute(
            "select cdm_table, mapped_rows, rows from results.mapping_coverage where run_id = ?",
            key,
        ).fetchall()
        summary = RunSummary(
            site=spec.site,
            batch_id=batch_id,
            warehouse=str(target),
            cdm_schema=cdm,
            rows=rows,
            files=files,
            rejects_by_rule=_by_rule(con, stage, "rejects", "count(*)", batch_id),
            flags_by_rule=_by_rule(con, stage, "flags", "sum(rows)", batch_id),
            mapping={t: (m, n) for t, m, n in coverage},
            checks=dict(Counter(c.status for c in batch.checks)),
            contracts=(sum(c.success for c in batch.contracts), len(batch.contracts)),
            run_id=batch.run_id,
            unmapped_codes=con.execute(
                f"select count(*) from {quote_ident(stage)}.unmapped_codes where batch_id = ?",
                [batch_id],
            ).fetchall()[0][0],
        )
    finally:
        con.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _import_contract_engine() -> None:
    with contextlib.suppress(Exception):  # the contracts step imports it again, and reports
        importlib.import_module("great_expectations")


def _by_rule(
    con: duckdb.DuckDBPyConnection, stage: str, table: str, measure: str, batch_id: str
) -> dict[str, int]:
    return {
        rule: int(n)
        for rule, n in con.execute(
            f"select rule, {measure} from {quote_ident(stage)}.{table} where batch_id = ? "
            f"group by rule order by {measure} desc, rule",
            [batch_id],
        ).fetchall()
    }


# CDM tables and the concept field whose 0 means "source code not mapped"
MAPPED_FIELDS = {
    "condition_occurrence": "condition_concept_id",
    "drug_exposure": "drug_concept_id",
    "procedure_occurrence": "procedure_concept_id",
    "measurement": "measurement_concept_id",
    "observation": "observation_concept_id",
    "device_exposure": "device_concept_id",
}


def _over_reject_threshold(
    spec: SiteSpec, batch: Batch, con: duckdb.DuckDBPyConnection
) -> str | None:
    """Why the batch may not be published (too many rejects), or None."""
    read = sum(f.rows_read for f in batch.files)
    rejected = sum(f.rows_rejected for f in batch.files)
    if not read or rejected / read <= spec.max_reject_rate:
        return None
    worst = con.execute(
        f"select rule, count(*) from {batch.work.sql}.rejects group by rule "
        "order by count(*) desc, rule limit 3"
    ).fetchall()
    rules = ", ".join(f"{rule} ({n:,})" for rule, n in worst)
    return (
        f"site {spec.site}, batch {batch.batch_id}: {rejected:,} of {read:,} rows rejected "
        f"({rejected / read:.1%}), over the site's limit of {spec.max_reject_rate:.1%}; "
        f"nothing was published. Worst rules: {rules}. The rejects are in "
        f"{batch.stage}.rejects"
    )


def _require_vocabulary(con: duckdb.DuckDBPyConnection) -> None:
    found = con.execute(
        "select count(*) from information_schema.tables "
        "where table_schema = ? and table_name = 'concept'",
        [settings.VOCAB_SCHEMA],
    ).fetchall()[0][0]
    if not found:
        raise EtlError(
            "the warehouse has no vocabulary yet: run `omop-etl vocab load` first "
            "(without a folder it loads the bundled demo vocabulary)"
        )


def _source_release_date(con: duckdb.DuckDBPyConnection, work: Ident) -> date:
    """The newest clinical date in the batch: a date the data itself fixes."""
    s = work.sql
    latest = con.execute(
        f"select greatest(max(start_datetime), max(end_datetime)) from {s}.visit "
        f"where reject is null union all "
        f"select greatest(max(start_datetime), max(end_datetime)) from {s}.event "
        f"where reject is null"
    ).fetchall()
    days = [row[0] for row in latest if row[0] is not None]
    return max(days).date() if days else date(1970, 1, 1)


def _spec_digest(spec: SiteSpec) -> str:
    assert spec.path is not None
    return hashlib.sha256(spec.path.read_bytes()).hexdigest()[:16]


@dataclass
class Batch:
    """A batch on its way to publishing: its files' fates, its scratch and lasting schemas."""

    site: str
    batch_id: str
    files: list[FileResult]
    work: Ident
    stage: str
    incremental: bool  # its staging is kept, for the site's later batches
    run_id: str = ""
    started_at: datetime | None = None
    contracts: list[ContractResult] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    dqd: dict | None = None  # the checks as DataQualityDashboard's results JSON


UNMAPPED_TOP = 50  # unmapped codes per run kept in results (the full list: stage_<site>)

UNMAPPED_DDL = """
create table if not exists {schema}.unmapped_codes (
    batch_id varchar, source_vocabulary_id varchar, source_code varchar,
    source_name varchar, frequency bigint, domain_id varchar
)"""


def _publish(con: duckdb.DuckDBPyConnection, batch: Batch, build: Ident, cdm: str) -> None:
    """Swap the built CDM in for the published one, in one transaction.

    The written tables are dropped and recreated from the CDM DDL (NOT NULL
    enforced on the way in), filled from the build, and get their primary keys.
    The batch's rejects, reconciliation, flags, unmapped codes, run log entry and
    (incremental sites) staging are stored in the same transaction. A reader sees
    the old CDM or the new one, never a mix; a failure leaves the old one.
    """
    cdm_sql = quote_ident(cdm)
    build_sql = build.sql
    con.execute("begin transaction")
    try:
        _store_batch_records(con, batch)
        _log_run(con, batch, "published", None)
        _record_results(con, batch, build)
        stage = quote_ident(batch.stage)
        con.execute(UNMAPPED_DDL.format(schema=stage))
        con.execute(f"delete from {stage}.unmapped_codes where batch_id = ?", [batch.batch_id])
        con.execute(
            f"insert into {stage}.unmapped_codes select * from {batch.work.sql}.work_unmapped_codes"
        )
        if batch.incremental:
            _keep_staging(con, batch)
        for table in CDM_TABLES_WRITTEN:
            con.execute(f"drop table if exists {cdm_sql}.{quote_ident(table)}")
        schema.create_schema(con, cdm, tables=schema.cdm_tables())
        for table in CDM_TABLES_WRITTEN:
            name = quote_ident(table)
            con.execute(f"insert into {cdm_sql}.{name} by name select * from {build_sql}.{name}")
        schema.apply_constraints(con, cdm, secondary_indexes=False)
        con.execute("commit")
    except BaseException as exc:
        with contextlib.suppress(duckdb.Error):  # a failed commit has rolled back already
            con.execute("rollback")
        if isinstance(exc, duckdb.Error):
            raise EtlError(
                f"publishing {cdm} failed, the published CDM is unchanged: {exc}"
            ) from exc
        raise


def _keep_staging(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
    """This batch's kept staging rows replace its earlier ones in the stage schema."""
    stage = quote_ident(batch.stage)
    for target in TARGETS:
        table = quote_ident(target)
        con.execute(staging_ddl(stage, target))
        con.execute(f"delete from {stage}.{table} where batch_id = ?", [batch.batch_id])
        con.execute(
            f"insert into {stage}.{table} by name select * from {batch.work.sql}.{table} "
            f"where batch_id = ? and (reject is null or reject = {literal(SUPERSEDED)})",
            [batch.batch_id],
        )


def _store_blocked(con: duckdb.DuckDBPyConnection, batch: Batch, why: str) -> None:
    """A blocked batch: its rejects and reconciliation are kept, nothing is published."""
    con.execute("begin transaction")
    try:
        _store_batch_records(con, batch)
        _log_run(con, batch, "blocked", why)
        _record_results(con, batch, None)
        con.execute("commit")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("rollback")
        raise


def _log_run(
    con: duckdb.DuckDBPyConnection, batch: Batch, status: str, message: str | None
) -> None:
    create_results_schema(con)
    files = batch.files
    con.execute(
        "insert into results.run_log by name select ? as site, ? as batch_id, ? as status, "
        "now()::timestamp as finished_at, ? as rows_read, ? as rows_loaded, "
        "? as rows_rejected, ? as rows_filtered, ? as message, ? as run_id, ? as started_at",
        [
            batch.site,
            batch.batch_id,
            status,
            sum(f.rows_read for f in files),
            sum(f.rows_loaded for f in files),
            sum(f.rows_rejected for f in files),
            sum(f.rows_filtered for f in files),
            message,
            batch.run_id,
            batch.started_at,
        ],
    )


def _run_cdm_checks(
    con: duckdb.DuckDBPyConnection,
    spec: SiteSpec,
    batch: Batch,
    build: Ident,
    vocab: Ident,
    cdm: str,
) -> None:
    """The DQD catalogue on the built CDM, before it is published (tables this site does
    not fill are created empty first, as publishing will)."""
    catalog = con.execute("select current_database()").fetchall()[0][0]
    con.execute(f"use {quote_ident(build.parts[0])}")
    try:
        schema.create_schema(con, build.parts[1], tables=schema.cdm_tables())
    finally:
        con.execute(f"use {quote_ident(catalog)}")
    started = datetime.now()
    batch.checks = run_checks(
        con, build.sql, vocab.sql, catalogue(spec.check_thresholds), workers=settings.workers()
    )
    metadata = cdm_source_metadata(con, build.sql)
    batch.dqd = dqd_json(batch.checks, metadata, started_at=started, ended_at=datetime.now())


def _failed_fatal_checks(spec: SiteSpec, batch: Batch) -> str | None:
    """Why the batch may not be published (a fatal CDM check failed or erred), or None."""
    fatal = [c for c in batch.checks if c.severity == "fatal" and c.status in ("Failed", "Error")]
    if not fatal:
        return None
    listed = "; ".join(
        f"{c.check_name} {c.cdm_table_name}.{c.cdm_field_name or ''} "
        f"{c.status.lower()} ({c.num_violated_rows or 0:,} rows)"
        for c in fatal[:5]
    )
    return (
        f"site {spec.site}, batch {batch.batch_id}: {len(fatal)} fatal CDM check(s) failed, "
        f"nothing was published: {listed}. The results are in results.check_results"
    )


def _failed_contracts(spec: SiteSpec, batch: Batch) -> str | None:
    """Why the batch may not be published (failed contract expectations), or None."""
    failed = [c for c in batch.contracts if not c.success]
    if not failed:
        return None
    listed = "; ".join(
        f"{c.suite}: {c.expectation.type}({c.expectation.column or ''}) "
        f"{c.unexpected_count:,} of {c.element_count:,} rows"
        for c in failed[:5]
    )
    return (
        f"site {spec.site}, batch {batch.batch_id}: {len(failed)} contract expectation(s) "
        f"failed, nothing was published: {listed}. The results are in results.contract_results"
    )


def _record_results(con: duckdb.DuckDBPyConnection, batch: Batch, build: Ident | None) -> None:
    """What QA staff read about the run, in ``results``: counts and codes, no row contents."""
    key = [batch.run_id, batch.site, batch.batch_id]
    for c in batch.contracts:
        con.execute(
            "insert into results.contract_results values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                *key,
                c.suite,
                c.expectation.type,
                c.expectation.column,
                c.success,
                c.element_count,
                c.unexpected_count,
                c.unexpected_percent,
                c.details,
            ],
        )
    if batch.checks:
        records = [
            {"run_id": batch.run_id, "site": batch.site, "batch_id": batch.batch_id, **c.record()}
            for c in batch.checks
        ]
        checks = pa.Table.from_pylist(records)  # noqa: F841 - read by the insert below
        con.execute("insert into results.check_results by name select * from checks")
    if batch.dqd is not None:
        con.execute(
            "insert into results.dqd_json values (?, ?, ?, ?)", [*key, json.dumps(batch.dqd)]
        )
    con.execute(
        "insert into results.reject_counts select ?, ?, ?, source_file, 'reject', rule, "
        f"count(*) from {batch.work.sql}.rejects group by source_file, rule",
        key,
    )
    flags = [
        (*key, f.source_file, "flag", rule, n) for f in batch.files for rule, n in f.flags.items()
    ]
    if flags:
        con.executemany("insert into results.reject_counts values (?, ?, ?, ?, ?, ?, ?)", flags)
    if build is None:
        return
    counts = " union all ".join(
        f"select {literal(t)}, count(*) from {build.sql}.{quote_ident(t)}"
        for t in CDM_TABLES_WRITTEN
    )
    con.execute(f"insert into results.row_counts select ?, ?, ?, * from ({counts})", key)
    coverage = " union all ".join(
        f"select {literal(t)}, count(*) filter (where {f} <> 0), count(*) "
        f"from {build.sql}.{quote_ident(t)}"
        for t, f in MAPPED_FIELDS.items()
    )
    con.execute(f"insert into results.mapping_coverage select ?, ?, ?, * from ({coverage})", key)
    con.execute(
        "insert into results.unmapped_top select ?, ?, ?, source_vocabulary_id, source_code, "
        f"source_name, frequency from {batch.work.sql}.work_unmapped_codes "
        f"order by frequency desc, source_vocabulary_id, source_code limit {UNMAPPED_TOP}",
        key,
    )


def published_batches(con: duckdb.DuckDBPyConnection, site: str) -> set[str]:
    """The batches of a site that were published (the run log says so)."""
    found = con.execute(
        "select count(*) from duckdb_tables() where schema_name = 'results' "
        "and table_name = 'run_log'"
    ).fetchall()[0][0]
    if not found:
        return set()
    rows = con.execute(
        "select distinct batch_id from results.run_log where site = ? and status = 'published'",
        [site],
    ).fetchall()
    return {r[0] for r in rows}


def _store_batch_records(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
    """The batch's rejects, reconciliation and flags, replacing an earlier run's of it."""
    stage = quote_ident(batch.stage)
    con.execute(f"create schema if not exists {stage}")
    con.execute(STORED_REJECTS_DDL.format(schema=stage))
    con.execute(RECONCILIATION_DDL.format(schema=stage))
    con.execute(FLAGS_DDL.format(schema=stage))
    for table in ("rejects", "reconciliation", "flags"):
        con.execute(f"delete from {stage}.{table} where batch_id = ?", [batch.batch_id])
    con.execute(
        f"insert into {stage}.rejects select ?, * from {batch.work.sql}.rejects", [batch.site]
    )
    rows = [
        (
            batch.batch_id,
            f.source_file,
            f.path,
            f.target,
            f.rows_read,
            f.rows_loaded,
            f.rows_rejected,
            f.rows_filtered,
            f.note,
        )
        for f in batch.files
    ]
    if rows:
        con.executemany(
            f"insert into {stage}.reconciliation values (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
        )
    flags = [
        (batch.batch_id, f.source_file, f.path, rule, n)
        for f in batch.files
        for rule, n in sorted(f.flags.items())
    ]
    if flags:
        con.executemany(f"insert into {stage}.flags values (?, ?, ?, ?, ?)", flags)


def batch_folders(input_dir: Path) -> list[Path]:
    """The dated batches of an export folder, oldest first.

    A folder that holds only folders is a site's export area: each subfolder is one
    batch (named so that names sort by date, e.g. ``2026-01-31``). Otherwise the
    folder itself is the one batch.
    """
    if not input_dir.is_dir():
        raise EtlError(f"input folder {input_dir} does not exist")
    entries = [p for p in input_dir.iterdir() if not p.name.startswith(".")]
    folders = sorted(p for p in entries if p.is_dir())
    if folders and not any(p.is_file() for p in entries):
        return folders
    return [input_dir]


def run_export(
    site: str,
    input_dir: Path,
    target: Target,
    *,
    rerun: bool = False,
    demo_key: bool = False,
    progress: Progress | None = None,
) -> tuple[list[RunSummary], list[str]]:
    """Run every batch of an export folder not yet published, oldest first.

    Returns the summaries of the batches run and the ids of the batches skipped
    because they were published before (``rerun`` processes them again, which
    changes nothing).
    """
    spec = load_spec(site)
    folders = batch_folders(input_dir)
    done: set[str] = set()
    if not rerun and Path(target.location).exists():
        con = connect(target, read_only=True)
        try:
            done = published_batches(con, spec.site)
        finally:
            con.close()
    summaries, skipped = [], []
    for folder in folders:
        batch_id = default_batch_id(folder)
        if batch_id in done:
            skipped.append(batch_id)
            continue
        summaries.append(run_site(spec.site, folder, target, demo_key=demo_key, progress=progress))
    return summaries, skipped


def run_demo_site(target: Target, progress: Progress | None = None) -> RunSummary:
    """The bundled Synthea sample into the warehouse (used by ``omop-etl demo``)."""
    sample = settings.mappings_dir() / "samples" / "synthea_ma27"
    return run_site("synthea", sample, target, demo_key=True, progress=progress)
