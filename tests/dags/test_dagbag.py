"""The dags/ folder as Airflow parses it: no import errors, one DAG per site spec, every
DAG owned, tagged and retried, and nothing read from files or databases at import."""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
from datetime import timedelta

import pytest

from omop_etl.orchestration import site_dag_id
from omop_etl.spec import available_sites, load_spec

from .conftest import DAGS_DIR

SITE_STEPS = ["select_batch", "start_run", "extract", "contracts", "transform", "check", "publish"]
DAG_FILES = sorted(DAGS_DIR.glob("*.py"))


def test_the_dag_folder_imports_without_errors_or_warnings(dagbag):
    assert dagbag.import_errors == {}
    assert dagbag.captured_warnings == {}


def test_every_site_spec_has_its_dag_and_nothing_else_does(dagbag):
    sites = {site_dag_id(site) for site in available_sites()}
    assert set(dagbag.dag_ids) == sites | {"omop_consortium", "omop_vocabulary"}


def test_every_dag_is_owned_tagged_not_catching_up_and_every_task_retried(dagbag):
    for dag in dagbag.dags.values():
        assert dag.owner == "omop-etl", dag.dag_id
        assert "omop" in dag.tags, dag.dag_id
        assert dag.catchup is False, dag.dag_id
        assert dag.max_active_runs == 1, dag.dag_id
        assert dag.doc_md, dag.dag_id
        for task in dag.tasks:
            where = f"{dag.dag_id}.{task.task_id}"
            assert task.retries == 3, where
            assert task.retry_delay == timedelta(minutes=2), where
            assert task.retry_exponential_backoff == 2.0, where
            assert task.max_retry_delay == timedelta(minutes=30), where


def _site_steps(site: str) -> list[str]:
    """A site's steps: its CDM built in one task, or in person buckets (mapped tasks)."""
    if load_spec(site).buckets == 1:
        return SITE_STEPS
    at = SITE_STEPS.index("transform")
    return [
        *SITE_STEPS[:at],
        "transform_keys",
        "transform_bucket",
        "transform_merge",
        *SITE_STEPS[at + 1 :],
    ]


def test_a_site_dag_runs_its_steps_in_order_and_publish_updates_its_asset(dagbag):
    for site in available_sites():
        dag = dagbag.dags[site_dag_id(site)]
        assert site in dag.tags
        assert dag.params["batch"] is None
        steps = _site_steps(site)
        order = [t.task_id for t in dag.topological_sort()]
        assert order == steps, site
        for upstream, downstream in itertools.pairwise(steps):
            assert upstream in dag.task_dict[downstream].upstream_task_ids
        (asset,) = dag.task_dict["publish"].outlets
        assert (asset.name, asset.uri) == (f"omop_cdm_{site}", f"x-omop://warehouse/cdm_{site}")
        assert all(not dag.task_dict[t].outlets for t in steps[:-1])


def test_a_site_in_person_buckets_maps_its_bucket_task(dagbag):
    dag = dagbag.dags[site_dag_id("synthea")]  # its spec says buckets: 4
    assert load_spec("synthea").buckets == 4
    bucket = dag.task_dict["transform_bucket"]
    assert bucket.is_mapped
    assert "transform_keys" in bucket.upstream_task_ids
    assert "transform" not in dag.task_dict


def test_the_consortium_dag_runs_when_any_site_publishes(dagbag):
    from airflow.sdk import AssetAny

    dag = dagbag.dags["omop_consortium"]
    published = [
        dagbag.dags[site_dag_id(site)].task_dict["publish"].outlets[0] for site in available_sites()
    ]
    assert dag.timetable.asset_condition == AssetAny(*published)
    assert [t.task_id for t in dag.topological_sort()] == [
        "refresh_consortium",
        "write_dashboard",
        "summarize",
    ]


def test_the_vocabulary_dag_is_manual_with_a_folder_param(dagbag):
    dag = dagbag.dags["omop_vocabulary"]
    assert dag.schedule is None
    assert dag.params["folder"] == ""
    assert [t.task_id for t in dag.topological_sort()] == ["load_vocabulary", "refresh_consortium"]


def _refuse(*args, **kwargs):
    raise AssertionError(f"file or database access while a DAG file is imported: {args!r}")


def _import_refusing_io(path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Import a DAG file with file reads, folder listings and database connects refused."""
    import builtins
    import io

    import duckdb
    import psycopg2
    import yaml

    # the registry and the helpers are imported afresh, under the same rules
    for module in ("omop_etl.dag_sites", "omop_etl.orchestration"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    for owner, name in [
        (builtins, "open"),
        (io, "open"),  # what pathlib's read_text and open call
        (os, "scandir"),  # what pathlib's glob and iterdir call
        (os, "listdir"),
        (duckdb, "connect"),
        (psycopg2, "connect"),
        (yaml, "safe_load"),
        (importlib.import_module("omop_etl.spec"), "load_spec"),
    ]:
        monkeypatch.setattr(owner, name, _refuse)
    spec = importlib.util.spec_from_file_location(f"dag_file_{path.stem}", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_a_dag_file_reads_no_file_and_opens_no_database_at_import(
    path, dagbag, monkeypatch: pytest.MonkeyPatch
):
    _import_refusing_io(path, monkeypatch)


@pytest.mark.parametrize(
    "code",
    [
        "from omop_etl.spec import load_spec\nSPEC = load_spec('synthea')",
        "from omop_etl import settings\nSITES = sorted(settings.sites_dir().glob('*.yaml'))",
        "from omop_etl import settings\nTEXT = (settings.sites_dir() / 'synthea.yaml').read_text()",
        "import duckdb\nCON = duckdb.connect('warehouse.duckdb')",
    ],
    ids=["load_spec", "glob", "read_text", "duckdb"],
)
def test_the_import_check_catches_a_dag_file_that_reads_specs_or_the_warehouse(
    code, tmp_path, dagbag, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / "bad_dag.py"
    path.write_text(code + "\n")
    with pytest.raises(AssertionError, match="file or database access"):
        _import_refusing_io(path, monkeypatch)


def test_the_dag_files_import_neither_the_pipeline_nor_its_engines(airflow_home):
    """A fresh interpreter, as the DAG processor's: parsing stays cheap."""
    heavy = ["duckdb", "pandas", "pyarrow", "great_expectations", "omop_etl.pipeline"]
    script = (
        "import runpy, sys\n"
        f"for path in {[str(p) for p in DAG_FILES]!r}:\n"
        "    runpy.run_path(path)\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home)}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
