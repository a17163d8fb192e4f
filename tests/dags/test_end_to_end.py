"""The DAGs on the real pipeline: a site's batches through its DAG, then the consortium DAG.

A tiny site (two monthly batches, exact expected rows) on a DuckDB warehouse, run by
``dag.test()`` exactly as a worker would run the tasks: each task a separate call
that finds the warehouse, the exports and the run's work folder from the settings.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from omop_etl.orchestration import site_dag_id

from .conftest import DAGS_DIR


@pytest.fixture(params=["duckdb", "postgresql"])
def tiny_site(tiny, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    """The tiny site with its two batches in an export area, and the settings tasks read;
    its warehouse a DuckDB file or a PostgreSQL database (a real server)."""
    if request.param == "postgresql":
        tiny.use_postgres(request.getfixturevalue("new_pg_database")())
    exports = tiny.root / "exports"
    monkeypatch.setenv("OMOP_ETL_WAREHOUSE", tiny.warehouse.location)
    monkeypatch.setenv("OMOP_ETL_EXPORTS", str(exports))
    monkeypatch.setenv("OMOP_ETL_WORK_DIR", str(tiny.root / "work"))
    monkeypatch.setenv("OMOP_ETL_DASHBOARD", str(tiny.root / "dashboard"))
    tiny.load_vocabulary()
    tiny.patient("p1")
    tiny.patient("p2", sex="F")
    tiny.visit("v1", "p1", "2020-01-01 08:00", "2020-01-01 09:00")
    tiny.diagnosis("p1", "C1", "2020-01-01", visit="v1")
    tiny.write(exports / "tiny" / "2020-01-31")
    for rows in tiny.tables.values():
        rows.clear()
    tiny.patient("p3")
    tiny.diagnosis("p3", "C2", "2020-02-03")
    tiny.write(exports / "tiny" / "2020-02-29")
    return tiny


def _tiny_dag(buckets: int = 1):
    """The tiny site's DAG, built by dags/omop_sites.py as it builds every site's."""
    spec = importlib.util.spec_from_file_location("omop_sites_dags", DAGS_DIR / "omop_sites.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.site_dag("tiny", "tiny test site", None, buckets)


def test_site_runs_publish_batches_in_order_then_the_consortium_run_covers_them(
    tiny_site, run_dag, fresh_dags
):
    first = run_dag(_tiny_dag())
    assert first.state == "success", first.states
    assert first.xcoms["select_batch"] == "2020-01-31"
    published = first.xcoms["publish"]
    assert (published["site"], published["batch_id"], published["status"]) == (
        "tiny",
        "2020-01-31",
        "published",
    )
    assert published["rows"]["person"] == 2
    assert published["rows"]["condition_occurrence"] == 1
    assert published["run_id"] == first.xcoms["start_run"]["run_id"]
    assert not Path(first.xcoms["start_run"]["folder"]).exists()  # the work folder is gone

    second = run_dag(_tiny_dag())
    assert second.state == "success", second.states
    assert second.xcoms["publish"]["batch_id"] == "2020-02-29"
    assert second.xcoms["publish"]["rows"]["person"] == 3  # the CDM of both batches

    nothing_left = run_dag(_tiny_dag())
    assert nothing_left.state == "success"
    assert set(nothing_left.states.values()) == {"skipped"}

    assert tiny_site.query(
        "select batch_id, status, run_id from results.run_log where site = 'tiny' "
        "order by finished_at"
    ) == [
        ("2020-01-31", "published", published["run_id"]),
        ("2020-02-29", "published", second.xcoms["publish"]["run_id"]),
    ]
    assert tiny_site.query("select count(*) from cdm_tiny.person") == [(3,)]

    consortium = run_dag(fresh_dags["omop_consortium"])
    assert consortium.state == "success", consortium.states
    assert consortium.xcoms["refresh_consortium"] == {"sites": ["tiny"]}
    assert Path(consortium.xcoms["write_dashboard"]).name == "index.html"
    assert Path(consortium.xcoms["write_dashboard"]).is_file()
    latest = consortium.xcoms["summarize"]["tiny"]
    assert (latest["batch_id"], latest["status"]) == ("2020-02-29", "published")
    assert tiny_site.query("select count(*) from cdm.person") == [(3,)]


def test_a_site_dag_id_follows_the_site():
    assert _tiny_dag().dag_id == site_dag_id("tiny")


def test_a_data_error_of_the_real_pipeline_fails_its_task_once(tiny_site, run_dag):
    result = run_dag(_tiny_dag(), batch="2019-12-31")  # no such batch folder
    assert result.state == "failed"
    assert (result.states["start_run"], result.tries["start_run"]) == ("failed", 1)
    assert result.states["publish"] == "upstream_failed"
    assert tiny_site.query(
        "select count(*) from information_schema.tables where table_schema = 'cdm_tiny'"
    ) == [(0,)]


def test_a_site_in_person_buckets_builds_them_as_mapped_tasks(tiny_site, run_dag):
    spec = tiny_site.mappings / "sites" / "tiny.yaml"
    spec.write_text(spec.read_text(encoding="utf-8") + "buckets: 2\n", encoding="utf-8")
    first = run_dag(_tiny_dag(buckets=2))
    assert first.state == "success", first.states
    assert first.xcoms["transform_keys"] == [0, 1]
    assert first.map_indexes == {"transform_bucket": [0, 1]}
    assert "transform" not in first.states
    assert first.xcoms["publish"]["rows"]["person"] == 2
    assert first.xcoms["publish"]["rows"]["condition_occurrence"] == 1
    second = run_dag(_tiny_dag(buckets=2))
    assert second.xcoms["publish"]["rows"]["person"] == 3
    # p1 and p3 have events, so observation periods; p2 has none
    assert tiny_site.query("select count(*) from cdm_tiny.observation_period") == [(2,)]
