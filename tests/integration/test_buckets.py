"""A site built in person buckets (Airflow mapped tasks) gives exactly the CDM of one
build: every per-person derivation is local to a person, and ids come from the
site-wide steps before and after the buckets."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from omop_etl import pipeline, schema
from omop_etl.pipeline import engine, new_batch, run_site
from omop_etl.warehouse import Target

SAMPLE = Path(__file__).resolve().parents[2] / "mappings" / "samples" / "synthea_ma27"


def _run_in_buckets(site: str, folder: Path, target: Target, work: Path, buckets: int) -> list:
    """The stages as the site DAG's tasks run them, each on the run's scratch file."""
    batch = new_batch(site, folder, target, demo_key=True, folder=work / site / folder.name)
    with engine(batch) as con:
        pipeline.prepare(con, batch, target)
    for stage in (pipeline.extract, pipeline.contracts, pipeline.transform_keys):
        with engine(batch) as con:
            stage(con, batch)
    persons = [pipeline.transform_bucket(batch, b, buckets) for b in range(buckets)]
    with engine(batch) as con:
        pipeline.transform_merge(con, batch, buckets)
    with engine(batch) as con:
        pipeline.check(con, batch)
    pipeline.deliver(batch, target)
    assert not list(Path(batch.folder).glob("bucket_*.duckdb"))  # merged, then removed
    return persons


def _folder(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _cdm(target: Target, site: str) -> dict[str, list[tuple]]:
    con = duckdb.connect(target.location, read_only=True)
    try:
        return {
            t: sorted(con.execute(f"select * from cdm_{site}.{t}").fetchall(), key=repr)
            for t in schema.cdm_tables()
        }
    finally:
        con.close()


@pytest.mark.parametrize("buckets", [1, 3])
def test_synthea_in_person_buckets_is_the_cdm_of_one_build(tmp_path, buckets, make_demo_warehouse):
    demo_warehouse = make_demo_warehouse
    one = demo_warehouse(_folder(tmp_path / "one"))
    run_site("synthea", SAMPLE, one, demo_key=True)
    split = demo_warehouse(_folder(tmp_path / "split"))
    persons = _run_in_buckets("synthea", SAMPLE, split, tmp_path / "work", buckets)
    expected = _cdm(one, "synthea")
    assert sum(persons) == len(expected["person"]) == 27
    if buckets > 1:
        assert all(0 < n < 27 for n in persons)  # every bucket got some persons
    found = _cdm(split, "synthea")
    for table in schema.cdm_tables():
        assert found[table] == expected[table], table
    assert sum(len(rows) for rows in found.values()) > 5000


def test_an_incremental_site_in_person_buckets_is_the_cdm_of_one_build(
    tmp_path, make_demo_warehouse
):
    from omop_etl.demo.generate import generate

    demo_warehouse = make_demo_warehouse
    export = tmp_path / "export"
    generate(export, 60, 3)
    site = "seoul_general"  # free-text notes, visits within stays, two batches
    one = demo_warehouse(_folder(tmp_path / "one"))
    split = demo_warehouse(_folder(tmp_path / "split"))
    for folder in sorted((export / site).iterdir()):
        run_site(site, folder, one, demo_key=True)
        _run_in_buckets(site, folder, split, tmp_path / "work", 4)
    expected, found = _cdm(one, site), _cdm(split, site)
    assert len(expected["note"]) > 0 and len(expected["visit_detail"]) > 0
    for table in schema.cdm_tables():
        assert found[table] == expected[table], table
