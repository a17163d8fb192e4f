"""The demo through the real Airflow DAGs, in this process, with ``dag.test()``.

Used by ``omop-etl demo``: each site's batches go through its DAG
``omop_site_<site>``, one batch per DAG run, oldest first; then ``omop_consortium``
runs once. No scheduler, executor or API server is started: ``dag.test()`` runs the tasks
in this process through an in-process Execution API, and needs only Airflow's
metadata database, here a SQLite file in a throw-away AIRFLOW_HOME.

Airflow reads its configuration when it is first imported, so ``airflow_session``
must set the environment before anything in the process imports ``airflow``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omop_etl import settings
from omop_etl.errors import EtlError
from omop_etl.orchestration import site_dag_id
from omop_etl.warehouse import Target

DAGS_DIR = settings.PROJECT_ROOT / "dags"
MAX_BATCHES = 1000  # a site DAG that never runs out of batches is a bug, not a long export


@dataclass
class DagRunOutcome:
    """One DAG run: its state, each task's final state, what publish returned."""

    dag_id: str
    state: str
    states: dict[str, str]
    published: dict[str, Any] | None = None
    failed: list[str] = field(default_factory=list)

    @property
    def had_nothing_to_do(self) -> bool:
        return self.states.get("select_batch") == "skipped"


def airflow_environment(home: Path) -> dict[str, str]:
    """What Airflow needs to run the DAGs in-process, kept inside ``home``."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",  # the task logs: only problems
    }


def pipeline_environment(target: Target, export: Path, dashboard: Path) -> dict[str, str]:
    """What the tasks read: the warehouse, the exports, the dashboard, the demo key."""
    return {
        "OMOP_ETL_WAREHOUSE": str(target),
        "OMOP_ETL_EXPORTS": str(export.resolve()),
        "OMOP_ETL_DASHBOARD": str(dashboard.resolve()),
        "OMOP_ETL_DEMO_KEY": "1",  # synthetic data: sites without a secret use the demo key
    }


@contextmanager
def airflow_session(extra_env: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """A throw-away Airflow (home, metadata database) for this process; the parsed DAGs.

    Raises EtlError when Airflow was imported before: it would keep the configuration
    it read then.
    """
    import sys

    if "airflow" in sys.modules:
        raise EtlError("Airflow is already loaded in this process: cannot give it a demo home")
    home = Path(tempfile.mkdtemp(prefix="omop-etl-airflow-"))
    try:
        with _environment(airflow_environment(home) | (extra_env or {})), warnings.catch_warnings():
            # dag.test()'s in-process Execution API client warns about its own stack
            warnings.filterwarnings("ignore", message="Using `httpx` with `starlette")
            from airflow.dag_processing.dagbag import DagBag
            from airflow.utils import db

            db.initdb()
            bag = DagBag(dag_folder=DAGS_DIR)
            if bag.import_errors:
                raise EtlError(f"DAG files do not import: {sorted(bag.import_errors)}")
            yield bag.dags
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run_dag(dag: Any, conf: dict[str, Any] | None = None) -> DagRunOutcome:
    """One ``dag.test()`` run of a DAG of the dags/ folder (``conf``: its params)."""
    try:
        dag_run = dag.test(run_conf=conf)
    finally:
        forget_task_context()
    tis = dag_run.get_task_instances()
    states = {ti.task_id: str(ti.state) for ti in tis}
    publish = next((ti for ti in tis if ti.task_id == "publish"), None)
    return DagRunOutcome(
        dag_id=dag.dag_id,
        state=str(dag_run.state),
        states=states,
        published=publish.xcom_pull(task_ids="publish") if publish else None,
        failed=[t for t, s in states.items() if s == "failed"],
    )


def run_site_batches(dag: Any) -> list[DagRunOutcome]:
    """Run a site DAG until it has nothing left to publish; its runs that published.

    A failed run stops the site with EtlError naming the failed task (its log, on the
    console, says why).
    """
    published = []
    for _ in range(MAX_BATCHES):
        outcome = run_dag(dag)
        if outcome.had_nothing_to_do:
            return published
        if outcome.state != "success":
            raise EtlError(f"{dag.dag_id}: run failed at {', '.join(outcome.failed)}")
        published.append(outcome)
    raise EtlError(f"{dag.dag_id}: still finds batches after {MAX_BATCHES} runs")


def run_batches(dag: Any, batches: list[str]) -> list[DagRunOutcome]:
    """One run of a site DAG per batch, in the order given, each naming its batch (a
    published batch runs again, which changes nothing)."""
    outcomes = []
    for batch in batches:
        outcome = run_dag(dag, {"batch": batch})
        if outcome.state != "success":
            raise EtlError(
                f"{dag.dag_id}: run of batch {batch} failed at {', '.join(outcome.failed)}"
            )
        outcomes.append(outcome)
    return outcomes


def run_demo_dags(
    target: Target,
    export: Path,
    dashboard: Path,
    batches: dict[str, list[str]],
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[DagRunOutcome]]:
    """Every batch of the sites through their DAGs, then the consortium DAG once.

    ``batches`` maps each site to the batches to run, in order. The warehouse must hold
    the vocabulary already (``omop-etl vocab load``).
    """
    outcomes: dict[str, list[DagRunOutcome]] = {}
    with airflow_session(pipeline_environment(target, export, dashboard)) as dags:
        for site, ids in batches.items():
            dag = dags[site_dag_id(site)]
            if progress:
                progress(f"DAG {dag.dag_id}")
            outcomes[site] = run_batches(dag, ids)
        if progress:
            progress("DAG omop_consortium")
        consortium = run_dag(dags["omop_consortium"])
        if consortium.state != "success":
            raise EtlError(f"omop_consortium: run failed at {', '.join(consortium.failed)}")
        outcomes["consortium"] = [consortium]
    return outcomes


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block, then put back what was there."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def forget_task_context() -> None:
    """``dag.test()`` leaves the last task's AIRFLOW_CTX_* variables in os.environ;
    later code would take this process for an Airflow task."""
    for name in [n for n in os.environ if n.startswith("AIRFLOW_CTX_")]:
        del os.environ[name]
