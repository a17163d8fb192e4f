"""One site, one batch, end to end: export folder -> staging -> CDM tables -> warehouse.

A run is a sequence of stages on a *scratch* database (DuckDB): ``prepare`` (the
site's lasting state read from the warehouse), ``extract``, ``contracts``,
``transform``, ``check`` and ``deliver`` (publish, or store why the batch was
blocked). The command line runs them in one process with the scratch in memory;
Airflow runs each as a task, with the scratch a file in the run's work folder and
the batch's state in ``run.json`` beside it.

Only ``deliver`` writes to the warehouse, in one transaction: readers see the old
CDM of the site or the new one, never a half-built one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
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
from omop_etl.extract.files import holds_export
from omop_etl.privacy import site_key
from omop_etl.spec import SiteSpec, check_id_block, load_spec
from omop_etl.sql import Ident, literal, quote_ident
from omop_etl.staging import TARGETS, staging_ddl
from omop_etl.warehouse import Target, connect, connect_engine
from quality import results
from quality.checks import CheckResult, catalogue, cdm_source_metadata, dqd_json, run_checks
from quality.contracts import ContractResult, Expectation, run_contracts
from transforms.runner import (
    CDM_TABLES_WRITTEN,
    FINAL_PHASES,
    KEY_PHASES,
    LOOKUP_INPUTS,
    PERSON_INPUTS,
    PERSON_OUTPUTS_CDM,
    PERSON_OUTPUTS_WORK,
    PERSON_PHASES,
    Step,
    run_phases,
    run_transforms,
)

Progress = Callable[[str], None]
SCRATCH = "omop_scratch"  # the database a run builds in: in memory, or the run's file
VOCAB_COPY = "omop_vocab"  # a read-only copy of the warehouse's vocabulary (see vocab_copy)
KEPT = "kept"  # scratch schema: the site's lasting state (key map, kept staging)
OUTBOX = "outbox"  # scratch schema: the run's records, as delivery writes them
SCRATCH_FILE = "scratch.duckdb"
STATE_FILE = "run.json"

# outbox tables that replace the batch's rows in stage_<site> (the rest go to results)
STAGE_RECORDS = {
    "rejects": STORED_REJECTS_DDL,
    "reconciliation": RECONCILIATION_DDL,
    "flags": FLAGS_DDL,
    "unmapped_codes": """
        create table if not exists {schema}.unmapped_codes (
            batch_id varchar, source_vocabulary_id varchar, source_code varchar,
            source_name varchar, frequency bigint, domain_id varchar
        )""",
}
KEY_MAP_DDL = (
    "create table if not exists {schema}.key_map (tbl varchar, source_key uhugeint, id integer)"
)


class BatchBlocked(EtlError):
    """The batch broke a quality gate: nothing is published, the reasons are stored."""


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
    remap: str | None = None  # why a published batch ran again (a changed vocabulary, maps)

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files)


@dataclass
class Batch:
    """A batch on its way to the warehouse: where it comes from, what each stage found.

    ``folder`` is the run's work folder (scratch file and ``run.json``), or None when
    the scratch lives in memory for a run in one process.
    """

    site: str
    batch_id: str
    input_dir: str
    target: str  # the warehouse, as shown (a URL's password left out)
    run_id: str
    started_at: datetime
    incremental: bool  # its staging is kept, for the site's later batches
    demo_key: bool = False
    batch_date: date | None = None
    folder: str | None = None
    vocab_copy: str | None = None  # file of the vocabulary copy (None: the warehouse's own)
    files: list[FileResult] = field(default_factory=list)
    contracts: list[ContractResult] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    dqd: dict | None = None  # the checks as DataQualityDashboard's results JSON
    source_release: date | None = None
    truncated: dict[str, int] = field(default_factory=dict)  # CDM text cut to its field
    key_max: dict[str, int] = field(default_factory=dict)  # the key map's top id per table
    # what the batch was mapped with: a later change of either means a re-map is due
    vocabulary_release: str | None = None
    code_maps_digest: str | None = None
    done: list[str] = field(default_factory=list)  # stages finished, in order

    @property
    def stage(self) -> str:
        return settings.stage_schema(self.site)

    @property
    def cdm(self) -> str:
        return settings.cdm_schema(self.site)

    @property
    def work(self) -> Ident:
        return Ident(SCRATCH, self.stage)

    @property
    def kept(self) -> Ident:
        return Ident(SCRATCH, KEPT)

    @property
    def build(self) -> Ident:
        return Ident(SCRATCH, self.cdm)

    @property
    def outbox(self) -> Ident:
        return Ident(SCRATCH, OUTBOX)

    def save(self) -> None:
        """Write the batch's state beside its scratch (file-backed runs only)."""
        if self.folder is None:
            return
        path = Path(self.folder) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), default=_json_value), "utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, folder: str | Path) -> Batch:
        path = Path(folder) / STATE_FILE
        if not path.is_file():
            raise EtlError(f"no run in {folder}: start the run first (its {STATE_FILE} is missing)")
        raw = json.loads(path.read_text("utf-8"))
        raw["started_at"] = datetime.fromisoformat(raw["started_at"])
        for key in ("batch_date", "source_release"):
            raw[key] = date.fromisoformat(raw[key]) if raw[key] else None
        raw["files"] = [FileResult(**f) for f in raw["files"]]
        raw["contracts"] = [
            ContractResult(**{**c, "expectation": Expectation(**c["expectation"])})
            for c in raw["contracts"]
        ]
        raw["checks"] = [CheckResult(**c) for c in raw["checks"]]
        return cls(**raw)


def _json_value(value: object) -> str:
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in {STATE_FILE}")


def default_batch_id(input_dir: Path) -> str:
    """The export folder's name, made safe: a batch is one dated export folder."""
    name = Path(os.path.abspath(input_dir)).name  # a link keeps its own name
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "batch"


def new_batch(
    site: str,
    input_dir: Path,
    target: Target,
    *,
    batch_id: str | None = None,
    batch_date: date | None = None,
    demo_key: bool = False,
    folder: Path | None = None,
) -> Batch:
    """A batch about to run: its spec and secret are checked before any work is done.

    With ``folder``, the run works in that folder (made empty first: a run always
    starts over) and its state is saved there after every stage.
    """
    spec = load_spec(site)
    check_id_block(spec)
    if not input_dir.is_dir():
        raise EtlError(f"site {spec.site}: input folder {input_dir} does not exist")
    site_key(spec.site, demo=demo_key)  # no secret, no run
    started_at = datetime.now()
    batch_id = batch_id or default_batch_id(input_dir)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    batch = Batch(
        site=spec.site,
        batch_id=batch_id,
        input_dir=str(input_dir.resolve()),
        target=str(target),  # for display: a URL without its password
        run_id=f"{spec.site}:{batch_id}:{started_at:%Y%m%dT%H%M%S.%f}",
        started_at=started_at,
        incremental=spec.batches == "incremental",
        demo_key=demo_key,
        batch_date=batch_date,
        folder=str(folder) if folder is not None else None,
    )
    batch.save()
    return batch


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
    """Extract, map and publish one site's export batch into the warehouse, in one process.

    A batch that breaks a quality gate (too many rejects, a failed contract, a failed
    fatal CDM check) is not published: its rejects and results are stored, the run
    log says why, and BatchBlocked is raised.
    """
    started = time.perf_counter()
    batch = new_batch(
        site, input_dir, target, batch_id=batch_id, batch_date=batch_date, demo_key=demo_key
    )
    # Great Expectations takes seconds to import: import it while the files are read
    threading.Thread(target=_import_contract_engine, daemon=True).start()
    con = _memory_engine(batch, target)
    try:
        try:
            prepare(con, batch, target)
            for stage in (extract, contracts, transform, check):
                stage(con, batch, progress)
        except BatchBlocked as exc:
            deliver(batch, target, con, blocked=str(exc))
            raise
        if progress:
            progress("publish")
        deliver(batch, target, con)
        summary = summarize(con, batch)
    finally:
        con.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _memory_engine(batch: Batch, target: Target) -> duckdb.DuckDBPyConnection:
    """The engine of a one-process run: the scratch in memory (spilling to DuckDB's temp
    folder beyond the memory limit). On a DuckDB warehouse the connection is the
    warehouse itself, so its vocabulary is read in place."""
    if target.kind == "duckdb":
        con = connect(target)
        _require_vocabulary(con)
    else:
        con = connect_engine()
        _attach_vocab_copy(con, batch, target)
    con.execute(f"attach ':memory:' as {SCRATCH}")
    # no automatic checkpoints mid-run (they stall statements); one after publishing
    con.execute("set checkpoint_threshold = '1TB'")
    return con


@contextlib.contextmanager
def engine(batch: Batch) -> Iterator[duckdb.DuckDBPyConnection]:
    """The engine of one stage of a file-backed run: its scratch file and vocabulary copy."""
    if batch.folder is None:
        raise EtlError(f"run {batch.run_id} has no work folder")
    con = connect_engine()
    try:
        scratch = Path(batch.folder) / SCRATCH_FILE
        con.execute(f"attach {literal(str(scratch))} as {SCRATCH}")
        if batch.vocab_copy:
            con.execute(f"attach {literal(batch.vocab_copy)} as {VOCAB_COPY} (read_only)")
        yield con
    finally:
        con.close()


def _vocab(con: duckdb.DuckDBPyConnection, batch: Batch) -> Ident:
    if batch.vocab_copy:
        return Ident(VOCAB_COPY, settings.VOCAB_SCHEMA)
    (catalog,) = con.execute("select current_database()").fetchone()
    return Ident(catalog, settings.VOCAB_SCHEMA)


def _attach_vocab_copy(con: duckdb.DuckDBPyConnection, batch: Batch, target: Target) -> None:
    from omop_etl import vocab_copy

    batch.vocab_copy = str(vocab_copy.ensure(target))
    con.execute(f"attach {literal(batch.vocab_copy)} as {VOCAB_COPY} (read_only)")


# ---------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------


def prepare(con: duckdb.DuckDBPyConnection, batch: Batch, target: Target) -> None:
    """The scratch's schemas, and the site's lasting state copied from the warehouse:
    its key map (stable ids) and, for incremental sites, the kept staging rows."""
    if batch.folder is not None and batch.vocab_copy is None:
        _attach_vocab_copy(con, batch, target)
    for name in (batch.stage, KEPT, OUTBOX, batch.cdm):
        con.execute(f"create schema if not exists {Ident(SCRATCH, name).sql}")
    kept = batch.kept.sql
    con.execute(KEY_MAP_DDL.format(schema=kept))
    for table in TARGETS if batch.incremental else ():
        con.execute(staging_ddl(kept, table))
    if target.kind == "postgresql":
        from omop_etl import pgwarehouse

        pgwarehouse.read_lasting_state(con, batch, target)
    else:
        _read_lasting_state(con, batch, target)
    batch.key_max = dict(
        con.execute(f"select tbl, max(id) from {kept}.key_map group by tbl").fetchall()
    )
    _done(batch, "prepare")


def _read_lasting_state(con: duckdb.DuckDBPyConnection, batch: Batch, target: Target) -> None:
    (catalog,) = con.execute("select current_database()").fetchone()
    attached = catalog == "memory"  # a file-backed run: the warehouse is opened here
    if attached:
        if not Path(target.location).exists():
            return  # a new warehouse keeps nothing yet
        catalog = "omop_warehouse"
        con.execute(f"attach {literal(target.location)} as {catalog} (read_only)")
    try:
        have = {
            name
            for (name,) in con.execute(
                "select table_name from duckdb_tables() "
                "where database_name = ? and schema_name = ?",
                [catalog, batch.stage],
            ).fetchall()
        }
        for table in ["key_map", *(TARGETS if batch.incremental else ())]:
            if table in have:
                name = quote_ident(table)
                con.execute(
                    f"insert into {batch.kept.sql}.{name} by name "
                    f"select * from {Ident(catalog, batch.stage).sql}.{name}"
                )
    finally:
        if attached:
            con.execute(f"detach {catalog}")


def extract(con: duckdb.DuckDBPyConnection, batch: Batch, progress: Progress | None = None) -> None:
    """Read and stage the export files; block the batch over the site's reject limit."""
    spec = load_spec(batch.site)

    def file_progress(name: str, path: Path) -> None:
        if progress:
            progress(f"extract {name}: {path.name}")

    batch.files = extract_site(
        con,
        spec,
        Path(batch.input_dir),
        batch.work,
        batch.batch_id,
        key=site_key(spec.site, demo=batch.demo_key),
        today=batch.started_at.date(),
        earlier=batch.kept if batch.incremental else None,
        progress=file_progress,
    )
    _done(batch, "extract")
    blocked = _over_reject_threshold(spec, batch, con)
    if blocked:
        raise BatchBlocked(blocked)


def contracts(
    con: duckdb.DuckDBPyConnection, batch: Batch, progress: Progress | None = None
) -> None:
    """The site's Great Expectations contracts on staging; a failed one blocks the batch."""
    if progress:
        progress("contracts (Great Expectations)")
    spec = load_spec(batch.site)
    batch.contracts = run_contracts(
        con, spec, batch.work.sql, batch.batch_id, batch.started_at.date()
    )
    _done(batch, "contracts")
    blocked = _failed_contracts(spec, batch)
    if blocked:
        raise BatchBlocked(blocked)


def transform(
    con: duckdb.DuckDBPyConnection, batch: Batch, progress: Progress | None = None
) -> None:
    """Build the site's new CDM in the scratch (ids from the kept key map)."""
    batch.source_release = _source_release_date(con, batch.work)
    _note_mapping_release(con, batch)
    run_transforms(con, _transform_params(con, batch), progress=_step_progress(progress))
    _finish_build(con, batch)
    _done(batch, "transform")


def _transform_params(
    con: duckdb.DuckDBPyConnection,
    batch: Batch,
    work: Ident | None = None,
    cdm: Ident | None = None,
) -> dict:
    spec = load_spec(batch.site)
    assert batch.source_release is not None
    return {
        "stage": batch.kept,
        "work": work or batch.work,
        "cdm": cdm or batch.build,
        "vocab": _vocab(con, batch),
        "id_base": spec.id_base,
        "site": spec.site,
        "site_description": spec.description,
        "batch_id": batch.batch_id,
        "batch_date": (batch.batch_date or batch.source_release).isoformat(),
        "source_release_date": batch.source_release.isoformat(),
        "unit_vocabulary": spec.unit_vocabulary,
        "spec_sha256": _spec_digest(spec),
        "etl_version": __version__,
    }


def _note_mapping_release(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
    """The vocabulary release and code maps the batch is mapped with, for its run log."""
    from omop_etl.vocab_copy import mapping_release

    batch.vocabulary_release, batch.code_maps_digest = mapping_release(con, _vocab(con, batch).sql)


def _step_progress(progress: Progress | None) -> Callable[[Step], None]:
    def step_progress(step: Step) -> None:
        if progress:
            progress(f"{step.kind} {step.name}")

    return step_progress


def _finish_build(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
    """Text cut to its CDM fields; the tables this site does not fill made, empty, as
    they will be once published."""
    batch.truncated = fit_field_lengths(con, batch.build)
    (catalog,) = con.execute("select current_database()").fetchone()
    con.execute(f"use {SCRATCH}")
    try:
        schema.create_schema(con, batch.cdm, tables=schema.cdm_tables())
    finally:
        con.execute(f"use {quote_ident(catalog)}")


# -- a large site, in person buckets (Airflow mapped tasks) -----------------------------

BUCKET = "omop_bucket"  # a bucket's own database, beside the run's scratch


def bucket_file(batch: Batch, bucket: int) -> Path:
    if batch.folder is None:
        raise EtlError(f"run {batch.run_id}: person buckets need a file-backed run")
    return Path(batch.folder) / f"bucket_{bucket}.duckdb"


def transform_keys(
    con: duckdb.DuckDBPyConnection, batch: Batch, progress: Progress | None = None
) -> None:
    """The site-wide part of a transform in buckets: lookups, every id of the batch's
    rows (the key map grows once, in key order), and the CDM tables of no person."""
    batch.source_release = _source_release_date(con, batch.work)
    _note_mapping_release(con, batch)
    params = _transform_params(con, batch)
    run_phases(con, params, KEY_PHASES, progress=_step_progress(progress))
    _done(batch, "transform_keys")


def transform_bucket(batch: Batch, bucket: int, buckets: int) -> int:
    """The CDM rows of one bucket's persons (``md5(pseudonym) % buckets``) in the bucket's
    own file: the run's scratch is read, never written, so buckets run side by side on
    several workers. Returns the bucket's persons."""
    if "transform_keys" not in batch.done:
        raise EtlError(f"run {batch.run_id}: bucket {bucket} before transform_keys")
    path = bucket_file(batch, bucket)
    path.unlink(missing_ok=True)
    con = connect_engine()
    try:
        con.execute(
            f"attach {literal(str(Path(batch.folder) / SCRATCH_FILE))} as {SCRATCH} (read_only)"
        )
        if batch.vocab_copy:
            con.execute(f"attach {literal(batch.vocab_copy)} as {VOCAB_COPY} (read_only)")
        con.execute(f"attach {literal(str(path))} as {BUCKET}")
        work, cdm = Ident(BUCKET, batch.stage), Ident(BUCKET, batch.cdm)
        for name in (work, cdm):
            con.execute(f"create schema {name.sql}")
        source = batch.work.sql
        mine = f"md5_number(person_source_value) % {int(buckets)} = {int(bucket)}"
        for table, column in PERSON_INPUTS.items():
            name = quote_ident(table)
            if column == "person_source_value":
                where = mine
            else:  # a visit's bucket is its person's
                where = f"{column} in (select visit_source_value from {work.sql}.work_visit_group)"
            con.execute(
                f"create view {work.sql}.{name} as select * from {source}.{name} where {where}"
            )
        for table in LOOKUP_INPUTS:
            name = quote_ident(table)
            con.execute(f"create view {work.sql}.{name} as select * from {source}.{name}")
        run_phases(con, _transform_params(con, batch, work=work, cdm=cdm), PERSON_PHASES)
        (persons,) = con.execute(f"select count(*) from {cdm.sql}.person").fetchone()
    finally:
        con.close()
    return persons


def transform_merge(
    con: duckdb.DuckDBPyConnection, batch: Batch, buckets: int, progress: Progress | None = None
) -> None:
    """The buckets' rows together in the build, then the ids of the derived tables
    (observation periods, eras: once, in key order) and their CDM tables."""
    names = [f"omop_bucket_{b}" for b in range(buckets)]
    for b, name in enumerate(names):
        path = bucket_file(batch, b)
        if not path.is_file():
            raise EtlError(f"run {batch.run_id}: bucket {b} of {buckets} has not run")
        con.execute(f"attach {literal(str(path))} as {name} (read_only)")
    try:
        for schema_of, tables in (
            (batch.build, PERSON_OUTPUTS_CDM),
            (batch.work, PERSON_OUTPUTS_WORK),
        ):
            part = schema_of.parts[1]
            for table in map(quote_ident, tables):
                union = " union all ".join(
                    f"select * from {Ident(n, part).sql}.{table}" for n in names
                )
                con.execute(f"create or replace table {schema_of.sql}.{table} as {union}")
    finally:
        for name in names:
            con.execute(f"detach {name}")
    run_phases(con, _transform_params(con, batch), FINAL_PHASES, progress=_step_progress(progress))
    _finish_build(con, batch)
    for b in range(buckets):
        bucket_file(batch, b).unlink(missing_ok=True)
    _done(batch, "transform")


def fit_field_lengths(con: duckdb.DuckDBPyConnection, build: Ident) -> dict[str, int]:
    """Text longer than its CDM field (``varchar(n)``) is cut to fit, and counted.

    PostgreSQL refuses such a value, DuckDB would keep it: cutting it in the build
    makes both warehouses hold the same CDM. Synthea's full state names in
    ``location.state`` (varchar(2)) are the usual case. Returns rows cut per
    ``table.field``; the run records them as flags (``truncated:<table>.<field>``).
    """
    cut: dict[str, int] = {}
    spec = schema.load_spec()
    for table in CDM_TABLES_WRITTEN:
        limits = {
            f.name: int(m.group(1))
            for f in spec[table].fields
            if (m := re.fullmatch(r"varchar\((\d+)\)", f.datatype.strip().lower()))
        }
        if not limits:
            continue
        name = f"{build.sql}.{quote_ident(table)}"
        counts = con.execute(
            "select "
            + ", ".join(
                f"count(*) filter (where length({quote_ident(c)}) > {n})" for c, n in limits.items()
            )
            + f" from {name}"
        ).fetchone()
        for (column, n), rows in zip(limits.items(), counts, strict=True):
            if rows:
                col = quote_ident(column)
                con.execute(f"update {name} set {col} = left({col}, {n}) where length({col}) > {n}")
                cut[f"{table}.{column}"] = rows
    return cut


def check(con: duckdb.DuckDBPyConnection, batch: Batch, progress: Progress | None = None) -> None:
    """The DQD catalogue on the built CDM, before it is published; a failed or erring
    fatal check blocks the batch."""
    if progress:
        progress("checks (DQD catalogue)")
    spec = load_spec(batch.site)
    started = datetime.now()
    batch.checks = run_checks(
        con,
        batch.build.sql,
        _vocab(con, batch).sql,
        catalogue(spec.check_thresholds),
        workers=settings.workers(),
    )
    metadata = cdm_source_metadata(con, batch.build.sql)
    batch.dqd = dqd_json(batch.checks, metadata, started_at=started, ended_at=datetime.now())
    _done(batch, "check")
    blocked = _failed_fatal_checks(spec, batch)
    if blocked:
        raise BatchBlocked(blocked)


def _done(batch: Batch, stage: str) -> None:
    batch.done.append(stage)
    batch.save()


def deliver(
    batch: Batch,
    target: Target,
    con: duckdb.DuckDBPyConnection | None = None,
    *,
    blocked: str | None = None,
) -> None:
    """Publish the batch, or store why it was blocked, in one warehouse transaction.

    ``con`` is the engine of a one-process run; without it (a file-backed run) the
    scratch file is opened here.
    """
    expected = ["prepare", "extract", "contracts", "transform", "check"]
    if blocked is None and [s for s in batch.done if s in expected] != expected:
        raise EtlError(
            f"run {batch.run_id}: cannot publish before every stage has run "
            f"(done: {', '.join(batch.done) or 'none'})"
        )
    status = "blocked" if blocked else "published"
    if con is not None:
        _fill_outbox(con, batch, status, blocked)
        _deliver_to(con, batch, target, publish=blocked is None)
    elif target.kind == "postgresql":
        with engine(batch) as scratch:
            _fill_outbox(scratch, batch, status, blocked)
            _deliver_to(scratch, batch, target, publish=blocked is None)
    else:
        wcon = connect(target)
        try:
            wcon.execute(f"attach {literal(str(Path(batch.folder) / SCRATCH_FILE))} as {SCRATCH}")
            _fill_outbox(wcon, batch, status, blocked)
            _deliver_to(wcon, batch, target, publish=blocked is None)
        finally:
            wcon.close()
    _done(batch, status)


def _deliver_to(
    con: duckdb.DuckDBPyConnection, batch: Batch, target: Target, *, publish: bool
) -> None:
    if target.kind == "postgresql":
        from omop_etl import pgwarehouse

        pgwarehouse.deliver(con, batch, target, publish=publish)
        return
    _deliver_duckdb(con, batch, publish=publish)
    con.execute("checkpoint")


def summarize(con: duckdb.DuckDBPyConnection, batch: Batch) -> RunSummary:
    """The run's summary, from the records it delivered (the outbox in its scratch), with
    its files in the spec's order and their flags."""
    out = batch.outbox.sql
    summary = recorded_summary(con, batch.run_id, results_schema=out, stage=out)
    summary.files, summary.warehouse = batch.files, batch.target
    return summary


def recorded_summary(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    *,
    results_schema: str = results.SCHEMA,
    stage: str | None = None,
) -> RunSummary:
    """The summary of a run, from what it recorded (DuckDB): its run log entry and
    results in ``results_schema``, the reconciliation and unmapped codes its batch keeps
    in ``stage`` (default: the site's stage schema)."""
    res = results_schema
    found = con.execute(
        f"select site, batch_id, status, epoch(finished_at - started_at) from {res}.run_log "
        "where run_id = ?",
        [run_id],
    ).fetchall()
    if not found:
        raise EtlError(f"no run {run_id} in the warehouse's run log")
    site, batch_id, status, seconds = found[0]
    stage = stage or quote_ident(settings.stage_schema(site))
    key = [run_id]
    # a warehouse delivered to before records counted produced rows has no such columns
    produced = _has_column(con, f"{stage}.reconciliation", "rows_produced")
    extra = "rows_produced, records_empty" if produced else "null, 0"
    files = [
        FileResult(*row)
        for row in con.execute(
            f"select source_file, file_path, target, rows_read, rows_loaded, rows_rejected, "
            f"rows_filtered, note, {extra} from {stage}.reconciliation where batch_id = ? "
            "order by all",
            [batch_id],
        ).fetchall()
    ]

    def by(table: str, kind: str) -> dict[str, int]:
        rows = con.execute(
            f"select rule, sum(rows)::bigint from {res}.{table} where run_id = ? and kind = ? "
            "group by rule order by 2 desc, rule",
            [run_id, kind],
        ).fetchall()
        return dict(rows)

    recorded = dict(
        con.execute(
            f"select cdm_table, rows from {res}.row_counts where run_id = ?", key
        ).fetchall()
    )
    checks = dict(
        con.execute(
            f"select status, count(*) from {res}.check_results where run_id = ? group by 1", key
        ).fetchall()
    )
    (passed, run) = con.execute(
        f"select count(*) filter (where success), count(*) from {res}.contract_results "
        "where run_id = ?",
        key,
    ).fetchone()
    (unmapped,) = con.execute(
        f"select count(*) from {stage}.unmapped_codes where batch_id = ?", [batch_id]
    ).fetchone()
    coverage = con.execute(
        f"select cdm_table, mapped_rows, rows from {res}.mapping_coverage where run_id = ?", key
    ).fetchall()
    return RunSummary(
        site=site,
        batch_id=batch_id,
        warehouse=con.execute("select current_database()").fetchone()[0],
        cdm_schema=settings.cdm_schema(site),
        rows={t: recorded.get(t, 0) for t in schema.cdm_tables()},
        files=files,
        rejects_by_rule=by("reject_counts", "reject"),
        flags_by_rule=by("reject_counts", "flag"),
        mapping={t: (m, n) for t, m, n in coverage},
        unmapped_codes=unmapped,
        checks=checks,
        contracts=(passed, run),
        run_id=run_id,
        status=status,
        seconds=float(seconds or 0.0),
    )


def _has_column(con: duckdb.DuckDBPyConnection, table_sql: str, column: str) -> bool:
    names = [row[0] for row in con.execute(f"describe {table_sql}").fetchall()]
    return column in names


def _import_contract_engine() -> None:
    with contextlib.suppress(Exception):  # the contracts step imports it again, and reports
        importlib.import_module("great_expectations")


# ---------------------------------------------------------------------------
# the run's records (outbox) and their delivery to a DuckDB warehouse
# ---------------------------------------------------------------------------

UNMAPPED_TOP = 50  # unmapped codes per run kept in results (the full list: stage_<site>)

# CDM tables and the concept field whose 0 means "source code not mapped"
MAPPED_FIELDS = {
    "condition_occurrence": "condition_concept_id",
    "drug_exposure": "drug_concept_id",
    "procedure_occurrence": "procedure_concept_id",
    "measurement": "measurement_concept_id",
    "observation": "observation_concept_id",
    "device_exposure": "device_concept_id",
}


def outbox_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The record tables the run filled, in delivery order (stage records first)."""
    have = {
        name
        for (name,) in con.execute(
            "select table_name from duckdb_tables() where database_name = ? and schema_name = ?",
            [SCRATCH, OUTBOX],
        ).fetchall()
    }
    return [t for t in [*STAGE_RECORDS, *results.TABLES] if t in have]


def _fill_outbox(
    con: duckdb.DuckDBPyConnection, batch: Batch, status: str, message: str | None
) -> None:
    """Everything delivery writes besides the CDM, as tables in the scratch: the batch's
    rejects, reconciliation, flags and unmapped codes (for ``stage_<site>``) and the
    run's log entry, contract and check results and counts (for ``results``).
    Counts, rules and codes only, never row contents, in ``results``."""
    out = batch.outbox.sql
    con.execute(f"drop schema if exists {out} cascade")  # a delivery retried starts over
    con.execute(f"create schema {out}")
    built = status == "published"
    for table, ddl in STAGE_RECORDS.items():
        if table != "unmapped_codes" or built:
            con.execute(ddl.format(schema=out))
    results.create_tables(con, out)
    work = batch.work.sql
    con.execute(f"insert into {out}.rejects select ?, * from {work}.rejects", [batch.site])
    files = batch.files
    recon = [
        (
            batch.batch_id,
            f.source_file,
            f.path,
            f.target,
            *_counts(f),
            f.note,
            f.produced,
            f.records_empty,
        )
        for f in files
    ]
    if recon:
        con.executemany(
            f"insert into {out}.reconciliation values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", recon
        )
    flags = [
        (batch.batch_id, f.source_file, f.path, rule, n, f.flag_examples.get(rule))
        for f in files
        for rule, n in sorted(f.flags.items())
    ]
    if flags:
        con.executemany(f"insert into {out}.flags values (?, ?, ?, ?, ?, ?)", flags)
    con.execute(
        f"insert into {out}.run_log by name select ? as site, ? as batch_id, ? as status, "
        "now()::timestamp as finished_at, ? as rows_read, ? as rows_loaded, "
        "? as rows_rejected, ? as rows_filtered, ? as message, ? as run_id, ? as started_at, "
        "? as vocabulary_release, ? as code_maps_digest",
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
            batch.vocabulary_release,
            batch.code_maps_digest,
        ],
    )
    _fill_results(con, batch, built)


def _counts(f: FileResult) -> tuple[int, int, int, int]:
    return f.rows_read, f.rows_loaded, f.rows_rejected, f.rows_filtered


def _fill_results(con: duckdb.DuckDBPyConnection, batch: Batch, built: bool) -> None:
    out = batch.outbox.sql
    key = [batch.run_id, batch.site, batch.batch_id]
    for c in batch.contracts:
        con.execute(
            f"insert into {out}.contract_results values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        con.execute(f"insert into {out}.check_results by name select * from checks")
    if batch.dqd is not None:
        con.execute(
            f"insert into {out}.dqd_json values (?, ?, ?, ?)", [*key, json.dumps(batch.dqd)]
        )
    con.execute(
        f"insert into {out}.reject_counts select ?, ?, ?, source_file, 'reject', rule, "
        f"count(*) from {batch.work.sql}.rejects group by source_file, rule",
        key,
    )
    flags = [
        (*key, f.source_file, "flag", rule, n) for f in batch.files for rule, n in f.flags.items()
    ]
    flags += [
        (*key, "(cdm)", "flag", f"truncated:{name}", n) for name, n in batch.truncated.items()
    ]
    if flags:
        con.executemany(f"insert into {out}.reject_counts values (?, ?, ?, ?, ?, ?, ?)", flags)
    if not built:
        return
    build = batch.build.sql
    counts = " union all ".join(
        f"select {literal(t)}, count(*) from {build}.{quote_ident(t)}" for t in CDM_TABLES_WRITTEN
    )
    con.execute(f"insert into {out}.row_counts select ?, ?, ?, * from ({counts})", key)
    coverage = " union all ".join(
        f"select {literal(t)}, count(*) filter (where {f} <> 0), count(*) "
        f"from {build}.{quote_ident(t)}"
        for t, f in MAPPED_FIELDS.items()
    )
    con.execute(f"insert into {out}.mapping_coverage select ?, ?, ?, * from ({coverage})", key)
    unmapped = f"{batch.work.sql}.work_unmapped_codes"
    con.execute(f"insert into {out}.unmapped_codes select * from {unmapped}")
    con.execute(
        f"insert into {out}.unmapped_top select ?, ?, ?, source_vocabulary_id, source_code, "
        f"source_name, frequency from {unmapped} "
        f"order by frequency desc, source_vocabulary_id, source_code limit {UNMAPPED_TOP}",
        key,
    )


def _deliver_duckdb(con: duckdb.DuckDBPyConnection, batch: Batch, *, publish: bool) -> None:
    """Store the run's records and (``publish``) swap the built CDM in for the published
    one, in one transaction of the warehouse ``con`` (the scratch attached).

    The written tables are dropped and recreated from the CDM DDL (NOT NULL enforced
    on the way in), filled from the build, and get their primary keys. A reader sees
    the old CDM or the new one, never a mix; a failure leaves the old one.
    """
    stage = quote_ident(batch.stage)
    out = batch.outbox.sql
    con.execute("begin transaction")
    try:
        con.execute(f"create schema if not exists {stage}")
        results.create_results_schema(con)
        for table in outbox_tables(con):
            if table in STAGE_RECORDS:
                con.execute(STAGE_RECORDS[table].format(schema=stage))
                add_missing_columns(con, f"{out}.{table}", f"{stage}.{table}")
                con.execute(f"delete from {stage}.{table} where batch_id = ?", [batch.batch_id])
                dest = f"{stage}.{table}"
            else:
                dest = f"{results.SCHEMA}.{table}"
            con.execute(f"insert into {dest} by name select * from {out}.{table}")
        if publish:
            _keep_key_map(con, batch)
            if batch.incremental:
                _keep_staging(con, batch)
            _swap_cdm(con, batch)
            _create_duckdb_views(con)
        con.execute("commit")
    except BaseException as exc:
        with contextlib.suppress(duckdb.Error):  # a failed commit has rolled back already
            con.execute("rollback")
        if isinstance(exc, duckdb.Error):
            raise EtlError(
                f"delivering {batch.run_id} failed, the warehouse is unchanged: {exc}"
            ) from exc
        raise


def _keep_key_map(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
    """The ids this run gave new keys join the site's key map (old ids never change)."""
    stage = quote_ident(batch.stage)
    con.execute(KEY_MAP_DDL.format(schema=stage))
    con.execute(f"insert into {stage}.key_map {new_keys_sql(batch)}")


def new_keys_sql(batch: Batch) -> str:
    """The key-map entries this run added: ids are handed out above each table's
    highest id, so they are those above the highest the run started from."""
    floors = " ".join(f"when {literal(t)} then {int(m)}" for t, m in sorted(batch.key_max.items()))
    floor = f"case tbl {floors} else -1 end" if floors else "-1"
    return f"select tbl, source_key, id from {batch.kept.sql}.key_map where id > {floor}"


def _swap_cdm(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
    cdm_sql = quote_ident(batch.cdm)
    for table in CDM_TABLES_WRITTEN:
        con.execute(f"drop table if exists {cdm_sql}.{quote_ident(table)}")
    schema.create_schema(con, batch.cdm, tables=schema.cdm_tables())
    for table in CDM_TABLES_WRITTEN:
        name = quote_ident(table)
        con.execute(f"insert into {cdm_sql}.{name} by name select * from {batch.build.sql}.{name}")
    schema.apply_constraints(con, batch.cdm, secondary_indexes=False)


CONSORTIUM = "cdm"  # the schema of the consortium views


def _published_sites(con: duckdb.DuckDBPyConnection) -> list[str]:
    (catalog,) = con.execute("select current_database()").fetchone()
    rows = con.execute(
        "select schema_name from duckdb_tables() where database_name = ? "
        "and schema_name like 'cdm\\_%' escape '\\' and table_name = 'person' order by 1",
        [catalog],
    ).fetchall()
    return [name[len("cdm_") :] for (name,) in rows]


def _create_duckdb_views(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Each CDM table as a view over the published sites' tables, in schema ``cdm``
    (DuckDB binds views by name: a site's next publish needs no new views)."""
    sites = _published_sites(con)
    con.execute(f"create schema if not exists {CONSORTIUM}")
    for table in schema.cdm_tables() if sites else ():
        fields = ", ".join(quote_ident(f) for f in schema.load_spec()[table].field_names)
        union = " union all ".join(
            f"select {fields} from {quote_ident(settings.cdm_schema(s))}.{quote_ident(table)}"
            for s in sites
        )
        con.execute(f"create or replace view {CONSORTIUM}.{quote_ident(table)} as {union}")
    return sites


def refresh_views(target: Target) -> list[str]:
    """Recreate the consortium views of the warehouse; the sites they cover."""
    if target.kind == "postgresql":
        from omop_etl import pgwarehouse

        return pgwarehouse.refresh_views(target)
    con = connect(target)
    try:
        return _create_duckdb_views(con)
    finally:
        con.close()


def _keep_staging(con: duckdb.DuckDBPyConnection, batch: Batch) -> None:
    """This batch's kept staging rows replace its earlier ones in the stage schema."""
    stage = quote_ident(batch.stage)
    for target in TARGETS:
        table = quote_ident(target)
        con.execute(staging_ddl(stage, target))
        add_missing_columns(con, f"{batch.work.sql}.{table}", f"{stage}.{table}")
        con.execute(f"delete from {stage}.{table} where batch_id = ?", [batch.batch_id])
        con.execute(f"insert into {stage}.{table} by name {kept_staging_sql(batch, target)}")


def add_missing_columns(con: duckdb.DuckDBPyConnection, source: str, dest: str) -> None:
    """Columns of ``source`` that ``dest`` (a lasting table of an older release) lacks,
    added to it (DuckDB)."""
    have = {row[0] for row in con.execute(f"describe {dest}").fetchall()}
    for name, sql_type, *_ in con.execute(f"describe {source}").fetchall():
        if name not in have:
            con.execute(f"alter table {dest} add column {quote_ident(name)} {sql_type}")


def kept_staging_sql(batch: Batch, target: str) -> str:
    """The rows of a staging table that a later batch of the site will read again."""
    return (
        f"select * from {batch.work.sql}.{quote_ident(target)} "
        f"where batch_id = {literal(batch.batch_id)} "
        f"and (reject is null or reject = {literal(SUPERSEDED)})"
    )


# ---------------------------------------------------------------------------
# quality gates
# ---------------------------------------------------------------------------


def _over_reject_threshold(
    spec: SiteSpec, batch: Batch, con: duckdb.DuckDBPyConnection
) -> str | None:
    """Why the batch may not be published (too many rejects), or None.

    Rows whose optional date lies outside the date window were kept without it, and
    count as defects here too."""
    read = sum(f.produced for f in batch.files)
    window_flags = {
        rule: (n, f.flag_examples.get(rule), f.path)
        for f in batch.files
        for rule, n in f.flags.items()
        if rule.startswith("out_of_window:")
    }
    rejected = sum(f.rows_rejected for f in batch.files)
    defects = rejected + sum(n for n, _, _ in window_flags.values())
    if not read or defects / read <= spec.max_reject_rate:
        return None
    worst = con.execute(
        f"select rule, count(*), arg_min(file_path, record_no), min(record_no) "
        f"from {batch.work.sql}.rejects group by rule order by count(*) desc, rule limit 3"
    ).fetchall()
    worst += [(rule, n, path, example) for rule, (n, example, path) in window_flags.items()]
    worst = sorted(worst, key=lambda w: (-w[1], w[0]))[:3]
    start, end = spec.window(batch.started_at.date())

    def described(rule: str, n: int, path: str | None, example: int | None) -> str:
        where = f"e.g. {Path(path).name} record {example}" if path and example else ""
        if rule.startswith("out_of_window:"):
            window = f"dates must lie in {start}..{end} (the spec's date_window)"
            where = f"{window}; {where}" if where else window
        return f"{rule} ({n:,}; {where})" if where else f"{rule} ({n:,})"

    rules = ", ".join(described(*w) for w in worst)
    return (
        f"site {spec.site}, batch {batch.batch_id}: {defects:,} of {read:,} rows rejected "
        f"({defects / read:.1%}), over the site's limit of {spec.max_reject_rate:.1%}; "
        f"nothing was published. Worst rules: {rules}. The rejects are in "
        f"{batch.stage}.rejects"
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


# ---------------------------------------------------------------------------
# export folders and their batches
# ---------------------------------------------------------------------------


def published_batches(target: Target, site: str) -> set[str]:
    """The batches of a site that were published (the warehouse's run log says so)."""
    if target.kind == "postgresql":
        from omop_etl import pgwarehouse

        return pgwarehouse.published_batches(target, site)
    if not Path(target.location).exists():
        return set()
    con = connect(target, read_only=True)
    try:
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
    finally:
        con.close()
    return {r[0] for r in rows}


def batch_folders(input_dir: Path, spec: SiteSpec | None = None) -> list[Path]:
    """The dated batches of an export folder, oldest first.

    A folder in which the spec's patterns match a file is one batch (its files may be
    in sub-folders, ``hosp/``, ``icu/``). Otherwise a folder that holds only folders is
    a site's export area: each subfolder is one batch (named so that names sort by
    date, e.g. ``2026-01-31``). Otherwise the folder itself is the one batch.
    """
    if not input_dir.is_dir():
        raise EtlError(f"input folder {input_dir} does not exist")
    if spec is not None and holds_export(input_dir, spec):
        return [input_dir]
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
    changes nothing). When every batch was published but the vocabulary release or
    the code maps changed since the site's latest publication, that batch is mapped
    again (its summary says why): the site's CDM then follows the new mappings.
    """
    spec = load_spec(site)
    folders = batch_folders(input_dir, spec)
    done = set() if rerun else published_batches(target, spec.site)
    summaries, skipped = [], []
    for folder in folders:
        batch_id = default_batch_id(folder)
        if batch_id in done:
            skipped.append(batch_id)
            continue
        summaries.append(run_site(spec.site, folder, target, demo_key=demo_key, progress=progress))
    due = remap_due(target, spec.site) if not summaries and skipped else None
    if due is not None:
        batch_id, reason = due
        folder = next((f for f in folders if default_batch_id(f) == batch_id), None)
        if folder is not None:
            summary = run_site(spec.site, folder, target, demo_key=demo_key, progress=progress)
            summary.remap = reason
            summaries.append(summary)
            skipped.remove(batch_id)
    return summaries, skipped


def remap_due(target: Target, site: str) -> tuple[str, str] | None:
    """(batch, why) when the site's latest published batch was mapped with another
    vocabulary release or other code maps than the warehouse holds now, else None."""
    if target.kind == "postgresql":
        from omop_etl import pgwarehouse

        recorded, current = pgwarehouse.mapping_state(target, site)
    else:
        if not Path(target.location).exists():
            return None
        from omop_etl.vocab_copy import mapping_release

        con = connect(target, read_only=True)
        try:
            have = {
                row[0]
                for row in con.execute(
                    "select column_name from duckdb_columns() where schema_name = 'results' "
                    "and table_name = 'run_log'"
                ).fetchall()
            }
            if "code_maps_digest" not in have:
                return None
            recorded = con.execute(
                "select batch_id, vocabulary_release, code_maps_digest from results.run_log "
                "where site = ? and status = 'published' order by finished_at desc limit 1",
                [site],
            ).fetchone()
            current = mapping_release(con, quote_ident(settings.VOCAB_SCHEMA))
        finally:
            con.close()
    return remap_reason(recorded, current)


def remap_reason(recorded: tuple | None, current: tuple[str, str]) -> tuple[str, str] | None:
    """(batch, why) when the latest publication (batch, release, maps) was mapped with
    other mappings than ``current`` (release, maps); None when it was not, or when
    nothing is published.

    >>> remap_reason(("b1", "v5", "aa"), ("v6", "aa"))[1]
    'a re-map is due: since batch b1 was published, the vocabulary release changed from v5 to v6'
    """
    if recorded is None:
        return None
    batch_id, release, maps = recorded
    changes = []
    if release != current[0]:
        changes.append(
            f"the vocabulary release changed from {release or '(not recorded)'} to {current[0]}"
        )
    if maps != current[1]:
        changes.append(f"the code maps changed (digest {maps or '(not recorded)'} -> {current[1]})")
    if not changes:
        return None
    return batch_id, f"a re-map is due: since batch {batch_id} was published, " + "; ".join(changes)


def run_demo_site(target: Target, progress: Progress | None = None) -> RunSummary:
    """The bundled Synthea sample into the warehouse (used by ``omop-etl demo``)."""
    sample = settings.mappings_dir() / "samples" / "synthea_ma27"
    return run_site("synthea", sample, target, demo_key=True, progress=progress)
