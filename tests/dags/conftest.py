"""Airflow for the DAG tests: a throw-away AIRFLOW_HOME, never ~/airflow.

Airflow reads its configuration, and points its ORM at the metadata database, when
the ``airflow`` package is first imported. So ``airflow_home`` sets the environment
before that import, and the test modules here import Airflow only inside tests and
fixtures, never at module level.

``dag.test()`` (Airflow 3.3) runs a DAG in-process without scheduler or executor, but
not without a metadata database: it writes the serialized DAG, the DAG run, task
instances and XComs there, and runs each task through an in-process Execution API.
``airflow_db`` creates that database (SQLite, from the ORM models: ~1 s); the first
``dag.test()`` of a session then takes ~4 s more (the in-process API server), later
ones a fraction of a second per task.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from omop_etl import settings
from omop_etl.demo.dag_runs import forget_task_context

DAGS_DIR = settings.PROJECT_ROOT / "dags"


@pytest.fixture(scope="session", autouse=True)
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary AIRFLOW_HOME with a SQLite metadata database, set before Airflow loads."""
    home = tmp_path_factory.mktemp("airflow_home")
    if "airflow" in sys.modules:
        pytest.fail(
            "Airflow was imported before tests/dags could give it a temporary AIRFLOW_HOME "
            "(a test module imports it at module level, or another test imported it first "
            "in this session): run tests/dags first or on their own"
        )
    env = {
        "AIRFLOW_HOME": str(home),
        # Airflow's own test configuration: random Fernet and JWT keys, no example DAGs
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        from airflow import configuration

        assert Path(configuration.AIRFLOW_HOME) == home
        yield home


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """The metadata database ``dag.test()`` needs, created once per session."""
    from airflow.utils import db

    db.initdb()  # a new database: created from the ORM models, no migrations to replay
    return airflow_home / "airflow.db"


def parse_dags() -> Any:
    """The repository's dags/ folder as the DAG processor parses it (a DagBag)."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=DAGS_DIR)


@pytest.fixture(scope="session")
def dagbag(airflow_home: Path) -> Any:
    """The DAGs of dags/, parsed once: for tests that look at them, not run them."""
    return parse_dags()


@pytest.fixture
def fresh_dags(airflow_home: Path) -> dict[str, Any]:
    """The DAGs of dags/, parsed for this test only: for tests that run them.

    ``dag.test()`` runs tasks in this process, on this DAG object, and Airflow 3.3
    writes a run's params into the DAG's ``Param`` objects (``Param.resolve``): a DAG
    object run with ``batch=...`` keeps that batch as its default afterwards. In
    production every task parses its DAG file afresh, so only in-process runs see it.
    """
    return parse_dags().dags


@dataclass
class DagTestRun:
    """What a ``dag.test()`` run left in the metadata database."""

    state: str
    states: dict[str, str]  # task id: final state
    tries: dict[str, int]  # task id: tries made
    xcoms: dict[str, Any] = field(default_factory=dict)  # task id: return value
    map_indexes: dict[str, list[int]] = field(default_factory=dict)  # mapped task: its indexes


@pytest.fixture
def run_dag(airflow_db: Path) -> Callable[..., DagTestRun]:
    """``run_dag(dag, **params)``: one ``dag.test()`` run, its states, tries and XComs.

    The DAG is first written to the metadata database as parsing would write it:
    ``dag.test()`` looks DAGs up there, after parsing the dags/ folder, where a DAG
    built in a test (or a site's DAG built for a spec outside the registry) is not.
    """

    def run(dag: Any, **params: Any) -> DagTestRun:
        _serialize(dag)
        try:
            dag_run = dag.test(run_conf=params or None)
        finally:
            forget_task_context()
        tis = dag_run.get_task_instances()
        return DagTestRun(
            state=str(dag_run.state),
            states={ti.task_id: str(ti.state) for ti in tis},
            tries={ti.task_id: ti.try_number for ti in tis},
            xcoms={ti.task_id: ti.xcom_pull(task_ids=ti.task_id) for ti in tis},
            map_indexes={
                task: sorted(ti.map_index for ti in tis if ti.task_id == task)
                for task in {ti.task_id for ti in tis if ti.map_index >= 0}
            },
        )

    return run


def _serialize(dag: Any) -> None:
    """Write a DAG that lives in no DAG file to the metadata database, as parsing would."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)


class FakeTasks(types.ModuleType):
    """Stands in for ``omop_etl.tasks``: records every call, returns ids and counts.

    ``pending`` is what ``pending_batches`` finds; ``fail[step]`` is raised by that step.
    """

    def __init__(self) -> None:
        super().__init__("omop_etl.tasks")
        self.calls: list[tuple] = []
        self.pending = ["2026-01-31", "2026-02-28"]
        self.fail: dict[str, BaseException] = {}

    def _record(self, step: str, *args: Any) -> None:
        self.calls.append((step, *args))
        if step in self.fail:
            raise self.fail[step]

    def pending_batches(self, site: str) -> list[str]:
        self._record("pending_batches", site)
        return list(self.pending)

    def start_run(self, site: str, batch_id: str) -> dict:
        self._record("start_run", site, batch_id)
        run_id = f"{site}:{batch_id}:1"
        return {"site": site, "batch_id": batch_id, "run_id": run_id, "folder": f"/w/{run_id}"}

    def _step(self, step: str, run: dict) -> dict:
        self._record(step, run)
        return {"run_id": run["run_id"], "step": step}

    def extract(self, run: dict) -> dict:
        return self._step("extract", run)

    def contracts(self, run: dict) -> dict:
        return self._step("contracts", run)

    def transform(self, run: dict) -> dict:
        return self._step("transform", run)

    def check(self, run: dict) -> dict:
        return self._step("check", run)

    def publish(self, run: dict) -> dict:
        self._record("publish", run)
        if run["batch_id"] in self.pending:
            self.pending.remove(run["batch_id"])
        keys = ("site", "batch_id", "run_id")
        return {**{k: run[k] for k in keys}, "status": "published", "rows": {"person": 3}}

    def refresh_consortium(self) -> dict:
        self._record("refresh_consortium")
        return {"views": 29}

    def write_dashboard(self) -> str:
        self._record("write_dashboard")
        return "/out/dashboard/index.html"

    def summarize(self) -> dict:
        self._record("summarize")
        return {"sites": 1}

    def load_vocabulary(self, folder: str | None) -> dict:
        self._record("load_vocabulary", folder)
        return {"concept": 10}


@pytest.fixture
def fake_tasks(monkeypatch: pytest.MonkeyPatch) -> FakeTasks:
    """A ``FakeTasks`` that ``orchestration.call`` finds as ``omop_etl.tasks``."""
    fake = FakeTasks()
    monkeypatch.setitem(sys.modules, "omop_etl.tasks", fake)
    return fake
