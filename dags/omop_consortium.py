"""The consortium DAG, `omop_consortium`: what analysts and QA staff read, kept current.

Scheduled on the sites' Assets: whenever any site DAG publishes a batch, a run

    refresh_consortium -> write_dashboard -> summarize

rebuilds the `cdm` views (each CDM table as the union of every published site), writes
the QA dashboard (`index.html` and a page per run) and the consortium summary. Reruns
change nothing; one run at a time.

Data errors fail at once, without retry; other errors are retried 3 times with
growing delays.
"""

from __future__ import annotations

from airflow.sdk import AssetAny, chain, dag, task

from omop_etl.dag_sites import SITES
from omop_etl.orchestration import START_DATE, call, default_args, site_asset


@task
def refresh_consortium() -> dict:
    return call("refresh_consortium")


@task
def write_dashboard() -> str:
    return call("write_dashboard")


@task
def summarize() -> dict:
    return call("summarize")


@dag(
    dag_id="omop_consortium",
    doc_md=__doc__,
    # any one site's publish is enough: the views and the dashboard cover every site
    schedule=AssetAny(*(site_asset(entry["site"]) for entry in SITES)),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["omop", "consortium"],
)
def omop_consortium() -> None:
    chain(refresh_consortium(), write_dashboard(), summarize())


omop_consortium()
