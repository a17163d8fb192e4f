"""The vocabulary DAG, `omop_vocabulary`: load an OHDSI vocabulary release (manual runs).

Trigger it with the `folder` param: an Athena download folder as the workers see it
(tab-separated, the 10 vocabulary tables). Empty: the bundled demo vocabulary and its
supplement. The run

    load_vocabulary -> refresh_consortium

streams the release into schema `vocab` in one transaction, puts the local code maps
(`mappings/codemaps/`) on top, then refreshes the consortium views. Sites' CDMs map
with the new release from their next batch on.

Data errors (a missing table, a malformed file) fail at once, without retry; other
errors are retried 3 times with growing delays.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, chain, dag, task

from omop_etl.orchestration import START_DATE, call, default_args


@task
def load_vocabulary(**context: Any) -> dict:
    return call("load_vocabulary", context["params"]["folder"] or None)


@task
def refresh_consortium() -> dict:
    return call("refresh_consortium")


@dag(
    dag_id="omop_vocabulary",
    doc_md=__doc__,
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["omop", "vocabulary"],
    params={
        "folder": Param(
            "",
            type="string",
            description="Athena download folder on the workers; empty: the bundled demo vocabulary",
        )
    },
)
def omop_vocabulary() -> None:
    chain(load_vocabulary(), refresh_consortium())


omop_vocabulary()
