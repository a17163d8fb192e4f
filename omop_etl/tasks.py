"""The steps Airflow runs: JSON in, JSON out, one stage of a site's batch per task.

Each function finds the warehouse (``OMOP_ETL_WAREHOUSE``, or the Airflow Connection
``omop_etl_warehouse``) and the exports (``OMOP_ETL_EXPORTS``, one folder per site
holding its dated batch folders) itself. A run's scratch database and state live in
``<work dir>/<site>/<batch>/`` between tasks (see ``omop_etl.pipeline``); workers
that run a site's tasks must share that folder.

Data errors raise EtlError (a blocked batch: BatchBlocked, after its records were
stored); a lost connection or a locked file raises something else, which Airflow
retries. Return values are counts and ids, never row contents: they land in XCom.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb

from omop_etl import pipeline, settings
from omop_etl.errors import EtlError
from omop_etl.pipeline import Batch, BatchBlocked
from omop_etl.warehouse import Target, parse_target, work_dir

AIRFLOW_WAREHOUSE_CONNECTION = "omop_etl_warehouse"
log = logging.getLogger(__name__)


def target() -> Target:
    """The warehouse: OMOP_ETL_WAREHOUSE, else the Airflow Connection, else the default."""
    if os.environ.get("OMOP_ETL_WAREHOUSE"):
        return parse_target(None)
    uri = _airflow_warehouse_uri()
    return parse_target(uri)


def _airflow_warehouse_uri() -> str | None:
    try:
        from airflow.sdk import BaseHook
    except ImportError:
        return None
    try:
        conn = BaseHook.get_connection(AIRFLOW_WAREHOUSE_CONNECTION)
    except Exception:  # no such connection (or not inside Airflow): the default warehouse
        return None
    uri = conn.get_uri()
    return uri.replace("postgres://", "postgresql://", 1)


def _site_exports(site: str) -> Path:
    return settings.exports_dir() / settings.check_site_name(site)


def pending_batches(site: str) -> list[str]:
    """The site's batches not yet published, oldest first; with none, the latest
    published batch when a re-map is due (the vocabulary release or the code maps
    changed since it was published)."""
    exports = _site_exports(site)
    if not exports.is_dir():  # the site has delivered nothing yet: nothing to do
        log.warning("site %s: no export folder %s yet (OMOP_ETL_EXPORTS)", site, exports)
        return []
    published = pipeline.published_batches(target(), site)
    ids = [pipeline.default_batch_id(f) for f in pipeline.batch_folders(exports)]
    pending = [b for b in ids if b not in published]
    if pending:
        return pending  # their runs map with the current vocabulary and code maps anyway
    due = pipeline.remap_due(target(), site)
    if due is not None and due[0] in ids:
        log.warning("site %s: %s; mapping batch %s again", site, due[1], due[0])
        return [due[0]]
    return []


def start_run(site: str, batch_id: str) -> dict:
    """A fresh run of the batch (a rerun starts over): its work folder, and the site's
    lasting state (key map, kept staging) read from the warehouse."""
    wh = target()
    folders = {pipeline.default_batch_id(f): f for f in pipeline.batch_folders(_site_exports(site))}
    if batch_id not in folders:
        raise EtlError(f"site {site}: no batch {batch_id!r} in {_site_exports(site)}")
    folder = work_dir(wh) / settings.check_site_name(site) / batch_id
    batch = pipeline.new_batch(
        site, folders[batch_id], wh, batch_id=batch_id, demo_key=settings.demo_key(), folder=folder
    )
    _stage(batch, lambda con, b: pipeline.prepare(con, b, wh))
    return {"site": site, "batch_id": batch_id, "run_id": batch.run_id, "folder": str(folder)}


def _stage(batch: Batch, step: Callable[[duckdb.DuckDBPyConnection, Batch], None]) -> None:
    """One stage on the run's scratch; a blocked batch has its records delivered first."""
    try:
        with pipeline.engine(batch) as con:
            step(con, batch)
    except BatchBlocked as exc:
        pipeline.deliver(batch, target(), blocked=str(exc))
        raise


def _load(run: dict) -> Batch:
    return Batch.load(run["folder"])


def extract(run: dict) -> dict:
    batch = _load(run)
    _stage(batch, pipeline.extract)
    files = batch.files
    return {
        "run_id": batch.run_id,
        "files": len(files),
        "rows_read": sum(f.rows_read for f in files),
        "rows_loaded": sum(f.rows_loaded for f in files),
        "rows_rejected": sum(f.rows_rejected for f in files),
        "rows_filtered": sum(f.rows_filtered for f in files),
    }


def contracts(run: dict) -> dict:
    batch = _load(run)
    _stage(batch, pipeline.contracts)
    passed = sum(c.success for c in batch.contracts)
    return {"run_id": batch.run_id, "expectations": len(batch.contracts), "passed": passed}


def transform(run: dict) -> dict:
    batch = _load(run)
    _stage(batch, pipeline.transform)
    return {"run_id": batch.run_id, "truncated": batch.truncated}


def transform_keys(run: dict) -> list[int]:
    """The site-wide part of a transform in person buckets; the buckets to build."""
    batch = _load(run)
    _stage(batch, pipeline.transform_keys)
    return list(range(_buckets(batch.site)))


def transform_bucket(run: dict, bucket: int) -> dict:
    """One bucket's persons' CDM rows (a mapped task; buckets run side by side)."""
    batch = _load(run)
    persons = pipeline.transform_bucket(batch, bucket, _buckets(batch.site))
    return {"run_id": batch.run_id, "bucket": bucket, "persons": persons}


def transform_merge(run: dict) -> dict:
    """The buckets' rows together, then the derived tables."""
    batch = _load(run)
    buckets = _buckets(batch.site)
    _stage(batch, lambda con, b: pipeline.transform_merge(con, b, buckets))
    return {"run_id": batch.run_id, "buckets": buckets, "truncated": batch.truncated}


def _buckets(site: str) -> int:
    from omop_etl.spec import load_spec

    return load_spec(site).buckets


def check(run: dict) -> dict:
    batch = _load(run)
    _stage(batch, pipeline.check)
    statuses: dict[str, int] = {}
    for c in batch.checks:
        statuses[c.status] = statuses.get(c.status, 0) + 1
    return {"run_id": batch.run_id, "checks": statuses}


def publish(run: dict) -> dict:
    """Swap the built CDM in; the summary of the run; the work folder is removed."""
    batch = _load(run)
    pipeline.deliver(batch, target())
    with pipeline.engine(batch) as con:
        summary = pipeline.summarize(con, batch)
    shutil.rmtree(run["folder"], ignore_errors=True)
    return {
        "site": summary.site,
        "batch_id": summary.batch_id,
        "run_id": summary.run_id,
        "status": "published",
        "rows": {t: n for t, n in summary.rows.items() if n},
        "rows_rejected": sum(summary.rejects_by_rule.values()),
        "failed_checks": summary.checks.get("Failed", 0),
    }


def refresh_consortium() -> dict:
    """The consortium views over every published site; the sites in them."""
    return {"sites": pipeline.refresh_views(target())}


def write_dashboard() -> str:
    """The QA dashboard (OMOP_ETL_DASHBOARD, default out/dashboard); its index page."""
    from omop_etl.warehouse import read_results
    from quality.dashboard import build_dashboard

    con = read_results(target())
    try:
        return str(build_dashboard(con, settings.dashboard_dir()))
    finally:
        con.close()


def summarize() -> dict:
    """Per site, its latest run: batch, status and when (for the logs and XCom)."""
    from omop_etl.warehouse import read_results

    con = read_results(target())
    try:
        rows = con.execute(
            "select site, arg_max(batch_id, finished_at), arg_max(status, finished_at), "
            "max(finished_at)::varchar from results.run_log group by site order by site"
        ).fetchall()
    finally:
        con.close()
    return {site: {"batch_id": b, "status": s, "finished_at": f} for site, b, s, f in rows}


def load_vocabulary(folder: str | None = None) -> dict:
    """An Athena download folder (None: the bundled demo subset) into the warehouse."""
    from omop_etl.vocabulary import load_into_warehouse

    return load_into_warehouse(target(), Path(folder) if folder else None)
