"""The demo's way through the DAGs (``omop_etl.demo.dag_runs``), on stand-in tasks."""

from __future__ import annotations

import os

import pytest

from omop_etl.demo.dag_runs import airflow_session, run_site_batches
from omop_etl.errors import EtlError


def test_a_site_dag_runs_until_no_batch_is_left(fresh_dags, fake_tasks, airflow_db):
    published = run_site_batches(fresh_dags["omop_site_daegu_fhir"])
    assert [o.published["batch_id"] for o in published] == ["2026-01-31", "2026-02-28"]
    assert fake_tasks.pending == []
    assert [c for c in fake_tasks.calls if c[0] == "pending_batches"] == [
        ("pending_batches", "daegu_fhir")
    ] * 3  # the third run found nothing and skipped
    assert not [name for name in os.environ if name.startswith("AIRFLOW_CTX_")]


def test_a_failed_run_stops_the_site_naming_the_task(fresh_dags, fake_tasks, airflow_db):
    fake_tasks.fail["check"] = EtlError("site daegu_fhir: fatal check failed")
    with pytest.raises(EtlError, match="omop_site_daegu_fhir: run failed at check"):
        run_site_batches(fresh_dags["omop_site_daegu_fhir"])


def test_the_demo_session_refuses_an_airflow_configured_before(airflow_home):
    with pytest.raises(EtlError, match="already loaded"), airflow_session():
        pass
