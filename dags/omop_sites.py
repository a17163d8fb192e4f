"""One DAG per hospital site, `omop_site_<site>`: its next export batch into its CDM.

A run takes the site's **oldest unpublished batch** (or the batch its `batch` param
names, to run one again: that changes nothing) and puts it through

    select_batch -> start_run -> extract -> contracts -> transform -> check -> publish

(a site with `buckets: N` in its spec builds its CDM as `transform_keys`, N mapped
`transform_bucket` tasks and `transform_merge` instead of `transform`).

`publish` replaces the site's CDM (`cdm_<site>`) in one transaction and updates the
site's Asset, which schedules `omop_consortium`. One run at a time per site: a site's
batches publish in order. No unpublished batch: the run skips its tasks (not a failure).

Data errors (a bad file, a failed contract or fatal DQD check, a blocked batch) fail
the task at once, without retry, with a message naming site, file, line and rule;
other errors (a dropped connection) are retried 3 times with growing delays.

The sites come from `omop_etl/dag_sites.py`, written by `omop-etl dags sync` from
`mappings/sites/*.yaml`: this file reads no spec, file or database when parsed.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, chain, dag, task

from omop_etl.dag_sites import SITES
from omop_etl.orchestration import (
    START_DATE,
    call,
    choose_batch,
    default_args,
    site_asset,
    site_dag_id,
)


@task
def select_batch(site: str, **context: Any) -> str:
    return choose_batch(site, context["params"].get("batch"))


@task
def start_run(site: str, batch_id: str) -> dict:
    return call("start_run", site, batch_id)


@task
def extract(run: dict) -> dict:
    return call("extract", run)


@task
def contracts(run: dict) -> dict:
    return call("contracts", run)


@task
def transform(run: dict) -> dict:
    return call("transform", run)


@task
def transform_keys(run: dict) -> list[int]:
    return call("transform_keys", run)


@task
def transform_bucket(run: dict, bucket: int) -> dict:
    return call("transform_bucket", run, bucket)


@task
def transform_merge(run: dict) -> dict:
    return call("transform_merge", run)


@task
def check(run: dict) -> dict:
    return call("check", run)


@task
def publish(run: dict) -> dict:
    return call("publish", run)


def site_dag(site: str, description: str | None, schedule: str | None, buckets: int = 1) -> DAG:
    """The DAG of one site; every step gets the run handle `start_run` returned.

    With `buckets` > 1 the transform is `transform_keys` (ids, once for the site), one
    mapped `transform_bucket` per person-hash bucket (run side by side, on any worker
    that shares the run's work folder) and `transform_merge`."""

    @dag(
        dag_id=site_dag_id(site),
        description=description,
        doc_md=__doc__,
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(),
        tags=["omop", "site", site],
        params={
            "batch": Param(
                None,
                type=["null", "string"],
                description="a batch id (its folder's name) to run, published or not; "
                "empty: the oldest unpublished batch",
            )
        },
    )
    def site_pipeline() -> None:
        run = start_run(site, select_batch(site))
        if buckets > 1:
            keys = transform_keys(run)
            built = [
                keys,
                transform_bucket.partial(run=run).expand(bucket=keys),
                transform_merge(run),
            ]
        else:
            built = [transform(run)]
        chain(
            extract(run),
            contracts(run),
            *built,
            check(run),
            publish.override(outlets=[site_asset(site)])(run),
        )

    return site_pipeline()


for entry in SITES:
    site_dag(entry["site"], entry["description"], entry["schedule"], entry.get("buckets", 1))
