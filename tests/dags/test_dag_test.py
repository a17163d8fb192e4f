"""``dag.test()`` runs in-process here, and the failure semantics hold in a real run.

Throw-away DAGs built in the tests prove the machinery (metadata database, XCom,
retries) independently of the pipeline: a data error fails its task on the first
try, a transient error is retried.
"""

from __future__ import annotations

from datetime import timedelta

from omop_etl.errors import EtlError
from omop_etl.orchestration import START_DATE, call, data_errors_fail_fast


def _proof_dag(dag_id: str, body, retries: int = 0):
    """A two-task DAG: ``first`` runs ``body``, ``second`` reads its XCom."""
    from airflow.sdk import dag, task

    @dag(dag_id=dag_id, schedule=None, start_date=START_DATE, catchup=False)
    def proof():
        @task(retries=retries, retry_delay=timedelta(0))
        def first() -> dict:
            with data_errors_fail_fast():
                return body()

        @task
        def second(handle: dict) -> int:
            return handle["rows"] + 1

        second(first())

    return proof()


def test_dag_test_runs_a_dag_in_process_and_passes_xcom(run_dag):
    result = run_dag(_proof_dag("proof_xcom", lambda: {"rows": 41}))
    assert result.state == "success"
    assert result.states == {"first": "success", "second": "success"}
    assert result.xcoms == {"first": {"rows": 41}, "second": 42}


def test_a_data_error_fails_its_task_on_the_first_try_without_retry(run_dag):
    def bad_batch():
        raise EtlError("site tiny: batch 2026-01-31 blocked: 12% of rows rejected")

    result = run_dag(_proof_dag("proof_data_error", bad_batch, retries=3))
    assert result.state == "failed"
    assert result.states == {"first": "failed", "second": "upstream_failed"}
    assert result.tries["first"] == 1


def test_a_transient_error_is_retried(run_dag):
    def dropped_connection():
        raise ConnectionResetError("server closed the connection unexpectedly")

    result = run_dag(_proof_dag("proof_transient", dropped_connection, retries=2))
    assert result.state == "failed"
    assert result.states["first"] == "failed"
    assert result.tries["first"] == 3  # the first try and both retries


def test_call_runs_the_named_step_of_omop_etl_tasks(run_dag, fake_tasks):
    from airflow.sdk import dag, task

    @dag(dag_id="proof_call", schedule=None, start_date=START_DATE, catchup=False)
    def proof():
        @task
        def start() -> dict:
            return call("start_run", "tiny", "2026-01-31")

        start()

    result = run_dag(proof())
    assert result.state == "success"
    assert result.xcoms["start"]["run_id"] == "tiny:2026-01-31:1"
    assert fake_tasks.calls == [("start_run", "tiny", "2026-01-31")]
