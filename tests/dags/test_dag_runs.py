"""The real DAGs of dags/, run by ``dag.test()`` on a stand-in for ``omop_etl.tasks``.

These prove the wiring (which batch a run takes, what every step receives, what is
skipped or failed, the Asset a publish updates) without a warehouse; the end-to-end
test runs the same DAGs on the real pipeline.
"""

from __future__ import annotations

import pytest

from omop_etl.errors import EtlError

SITE = "seoul_general"
STEPS = ("extract", "contracts", "transform", "check", "publish")


class Blocked(EtlError):
    """A blocked batch (the pipeline raises a subclass of EtlError for it)."""


@pytest.fixture
def site_dag(fresh_dags):
    return fresh_dags[f"omop_site_{SITE}"]


def test_a_site_run_takes_the_oldest_unpublished_batch_through_every_step(
    site_dag, run_dag, fake_tasks
):
    result = run_dag(site_dag)
    assert result.state == "success"
    assert set(result.states.values()) == {"success"}
    handle = {
        "site": SITE,
        "batch_id": "2026-01-31",
        "run_id": f"{SITE}:2026-01-31:1",
        "folder": f"/w/{SITE}:2026-01-31:1",
    }
    assert fake_tasks.calls == [
        ("pending_batches", SITE),
        ("start_run", SITE, "2026-01-31"),
        *((step, handle) for step in STEPS),
    ]
    assert result.xcoms["publish"] == {
        "site": SITE,
        "batch_id": "2026-01-31",
        "run_id": handle["run_id"],
        "status": "published",
        "rows": {"person": 3},
    }


def test_a_publish_updates_the_sites_asset(site_dag, run_dag, fake_tasks):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    def events() -> int:
        with create_session() as session:
            return session.scalar(
                select(func.count())
                .select_from(AssetEvent)
                .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .where(AssetModel.name == f"omop_cdm_{SITE}")
            )

    before = events()
    assert run_dag(site_dag).state == "success"
    assert events() == before + 1


def test_the_batch_param_runs_that_batch(site_dag, run_dag, fake_tasks):
    result = run_dag(site_dag, batch="2025-12-31")
    assert result.state == "success"
    assert fake_tasks.calls[0] == ("start_run", SITE, "2025-12-31")  # no look for pending ones


def test_no_pending_batch_skips_the_run_without_failing_it(site_dag, run_dag, fake_tasks):
    fake_tasks.pending = []
    result = run_dag(site_dag)
    assert result.state == "success"
    assert set(result.states.values()) == {"skipped"}
    assert fake_tasks.calls == [("pending_batches", SITE)]


def test_a_blocked_batch_fails_at_once_and_publishes_nothing(site_dag, run_dag, fake_tasks):
    fake_tasks.fail["contracts"] = Blocked(f"site {SITE}: contract failed, batch blocked")
    result = run_dag(site_dag)
    assert result.state == "failed"
    assert result.states["contracts"] == "failed"
    assert result.tries["contracts"] == 1  # default_args give 3 retries: none used
    assert {result.states[s] for s in ("transform", "check", "publish")} == {"upstream_failed"}
    assert "publish" not in {call[0] for call in fake_tasks.calls}


def test_the_consortium_run_refreshes_views_then_dashboard_then_summary(
    fresh_dags, run_dag, fake_tasks
):
    result = run_dag(fresh_dags["omop_consortium"])
    assert result.state == "success"
    assert fake_tasks.calls == [("refresh_consortium",), ("write_dashboard",), ("summarize",)]
    assert result.xcoms["write_dashboard"] == "/out/dashboard/index.html"


@pytest.mark.parametrize(("folder", "loaded"), [("", None), ("/athena/v5", "/athena/v5")])
def test_the_vocabulary_run_loads_the_folder_then_refreshes_the_views(
    fresh_dags, run_dag, fake_tasks, folder, loaded
):
    result = run_dag(fresh_dags["omop_vocabulary"], folder=folder)
    assert result.state == "success"
    assert fake_tasks.calls == [("load_vocabulary", loaded), ("refresh_consortium",)]
