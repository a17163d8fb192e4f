"""The helpers every DAG task goes through: data errors fail fast, the rest is retried."""

from __future__ import annotations

import logging
from datetime import timedelta

import duckdb
import psycopg2
import pytest

from omop_etl.errors import EtlError
from omop_etl.orchestration import (
    call,
    choose_batch,
    data_errors_fail_fast,
    default_args,
    site_asset,
)


class BatchBlocked(EtlError):
    """A blocked batch: the pipeline raises a subclass of EtlError."""


@pytest.mark.parametrize("error", [EtlError, BatchBlocked])
def test_a_data_error_becomes_a_fail_without_retry_with_the_same_message(error):
    from airflow.sdk.exceptions import AirflowFailException

    message = "site tiny: patients.csv line 7: missing:birth_datetime"
    with pytest.raises(AirflowFailException) as raised, data_errors_fail_fast():
        raise error(message)
    assert str(raised.value) == message
    assert type(raised.value.__cause__) is error


@pytest.mark.parametrize(
    "error",
    [
        psycopg2.OperationalError("server closed the connection unexpectedly"),
        ConnectionResetError("connection reset by peer"),
        duckdb.IOException("Could not set lock on file"),
        OSError("No space left on device"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_transient_error_is_re_raised_unchanged_for_airflow_to_retry(error):
    with pytest.raises(type(error)) as raised, data_errors_fail_fast():
        raise error
    assert raised.value is error


def test_call_returns_what_the_step_returns(fake_tasks):
    run = call("start_run", "tiny", "2026-01-31")
    assert run["run_id"] == "tiny:2026-01-31:1"
    assert call("extract", run) == {"run_id": run["run_id"], "step": "extract"}
    assert fake_tasks.calls == [("start_run", "tiny", "2026-01-31"), ("extract", run)]


def test_call_fails_fast_on_a_data_error_and_passes_a_transient_one(fake_tasks):
    from airflow.sdk.exceptions import AirflowFailException

    fake_tasks.fail["transform"] = BatchBlocked("site tiny: batch blocked")
    with pytest.raises(AirflowFailException, match=r"^site tiny: batch blocked$"):
        call("transform", {"run_id": "r"})
    fake_tasks.fail["check"] = psycopg2.OperationalError("timeout")
    with pytest.raises(psycopg2.OperationalError):
        call("check", {"run_id": "r"})


def test_call_logs_the_step_and_ids_never_other_contents(fake_tasks, caplog):
    run = {"site": "tiny", "batch_id": "b1", "run_id": "tiny:b1:1", "folder": "/w/secret-name"}
    with caplog.at_level(logging.INFO, logger="omop_etl.orchestration"):
        call("extract", run)
    assert caplog.messages == ["extract site=tiny batch_id=b1 run_id=tiny:b1:1"]


def test_a_run_takes_the_oldest_pending_batch(fake_tasks):
    fake_tasks.pending = ["2026-01-31", "2026-02-28"]
    assert choose_batch("tiny") == "2026-01-31"


def test_the_batch_param_wins_over_the_pending_batches(fake_tasks):
    assert choose_batch("tiny", "2025-12-31") == "2025-12-31"
    assert fake_tasks.calls == []


def test_no_pending_batch_skips(fake_tasks):
    from airflow.sdk.exceptions import AirflowSkipException

    fake_tasks.pending = []
    with pytest.raises(AirflowSkipException, match="site tiny: no unpublished batch"):
        choose_batch("tiny")


def test_default_args_retry_three_times_with_exponential_backoff():
    args = default_args()
    assert args["owner"] == "omop-etl"
    assert (args["retries"], args["retry_exponential_backoff"]) == (3, 2.0)
    assert args["retry_delay"] < args["max_retry_delay"] == timedelta(minutes=30)
    assert default_args() is not args  # every DAG gets its own dict


def test_a_sites_asset_names_its_cdm_schema():
    asset = site_asset("busan_university")
    assert asset.name == "omop_cdm_busan_university"
    assert asset.uri == "x-omop://warehouse/cdm_busan_university"
    assert asset.group == "omop_cdm"


@pytest.mark.parametrize(
    "connection",
    [
        "postgresql://loader:s3cret@db.example:5432/omop",
        '{"conn_type": "postgres", "host": "db.example", "login": "loader",'
        ' "password": "s3cret", "schema": "omop", "port": 5432}',
    ],
)
def test_the_tasks_find_the_warehouse_in_an_airflow_connection(monkeypatch, connection):
    from omop_etl import tasks

    monkeypatch.delenv("OMOP_ETL_WAREHOUSE", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_OMOP_ETL_WAREHOUSE", connection)
    target = tasks.target()
    assert (target.kind, target.location) == (
        "postgresql",
        "postgresql://loader:s3cret@db.example:5432/omop",
    )
    assert str(target) == "postgresql://loader:***@db.example:5432/omop"  # as logged


def test_without_a_warehouse_setting_the_tasks_use_the_default_file(monkeypatch):
    from omop_etl import tasks

    monkeypatch.delenv("OMOP_ETL_WAREHOUSE", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_OMOP_ETL_WAREHOUSE", raising=False)
    assert tasks.target().location == "warehouse.duckdb"


def test_a_site_that_has_delivered_nothing_yet_has_no_pending_batch(tmp_path, monkeypatch):
    from omop_etl import tasks

    monkeypatch.setenv("OMOP_ETL_EXPORTS", str(tmp_path))  # no folder for the site at all
    monkeypatch.setenv("OMOP_ETL_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    assert tasks.pending_batches("seoul_general") == []
    (tmp_path / "seoul_general" / "2026-01-31").mkdir(parents=True)
    (tmp_path / "seoul_general" / "2026-02-28").mkdir()
    assert tasks.pending_batches("seoul_general") == ["2026-01-31", "2026-02-28"]
