"""A PostgreSQL warehouse records what each publication was mapped with, and says when a
new vocabulary release or changed code maps make a re-map due."""

from __future__ import annotations

import duckdb


def test_a_new_vocabulary_release_on_postgres_makes_a_remap_due(tiny, new_pg_database):
    from omop_etl import vocabulary
    from omop_etl.pgwarehouse import publish_vocabulary
    from omop_etl.pipeline import remap_due, run_export

    tiny.use_postgres(new_pg_database())
    tiny.patient("p1")
    tiny.diagnosis("p1", "C3", "2020-01-01")
    area = tiny.root / "area"
    tiny.write(area / "2020-01-31")
    tiny.load_vocabulary()
    run_export("tiny", area, tiny.warehouse)
    assert tiny.query("select condition_concept_id from cdm_tiny.condition_occurrence") == [(0,)]
    assert remap_due(tiny.warehouse, "tiny") is None
    athena = tiny.root / "athena"
    with open(athena / "CONCEPT.csv", "a", encoding="utf-8") as fh:
        fh.write(
            "1003\tCondition three\tCondition\tSNOMED\tDisorder\tS\tC3\t19700101\t20991231\t\n"
        )
    con = duckdb.connect(":memory:")
    vocabulary.load_vocabulary(con, athena, "vocab")
    publish_vocabulary(con, tiny.warehouse)
    con.close()
    batch, why = remap_due(tiny.warehouse, "tiny")
    assert (batch, why) == (
        "2020-01-31",
        "a re-map is due: since batch 2020-01-31 was published, the vocabulary release changed "
        "from tiny-test-vocab (22/9/3/10 rows) to tiny-test-vocab (23/9/3/10 rows)",
    )
    (summary,), skipped = run_export("tiny", area, tiny.warehouse)
    assert (summary.remap, skipped) == (why, [])
    assert tiny.query("select condition_concept_id from cdm_tiny.condition_occurrence") == [(1003,)]
    assert remap_due(tiny.warehouse, "tiny") is None
