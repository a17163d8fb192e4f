"""Publishing is one transaction: a failure leaves the published CDM and records as they were."""

from __future__ import annotations

import pytest

from omop_etl import schema
from omop_etl.errors import EtlError


def test_a_failed_publish_leaves_the_warehouse_unchanged(tiny, monkeypatch):
    tiny.patient("p1")
    tiny.diagnosis("p1", "C1", "2020-01-01")
    tiny.run(batch_id="b1")
    before = {
        t: tiny.query(f"select * from cdm_tiny.{t} order by all")
        for t in ("person", "condition_occurrence", "observation_period", "cdm_source")
    }
    tiny.patient("p2")
    tiny.diagnosis("p2", "C2", "2021-01-01")
    tiny.diagnosis("p2", "C2", "not a date")

    def broken(*args, **kwargs):
        raise EtlError("disk full (simulated)")

    monkeypatch.setattr(schema, "apply_constraints", broken)
    with pytest.raises(EtlError, match="disk full"):
        tiny.run(batch_id="b2")
    after = {t: tiny.query(f"select * from cdm_tiny.{t} order by all") for t in before}
    assert after == before
    # the failed batch left no rejects or reconciliation behind
    assert tiny.query("select distinct batch_id from stage_tiny.rejects") == []
    assert tiny.query("select distinct batch_id from stage_tiny.reconciliation") == [("b1",)]


def test_rerunning_a_batch_replaces_its_records(tiny):
    tiny.patient("p1")
    tiny.diagnosis("p1", "C1", "bad date")
    tiny.run(batch_id="b1")
    tiny.run(batch_id="b1")
    assert tiny.query("select batch_id, count(*) from stage_tiny.rejects group by 1") == [("b1", 1)]
    assert tiny.query("select batch_id, count(*) from stage_tiny.reconciliation group by 1") == [
        ("b1", 5)  # one row per source file
    ]
