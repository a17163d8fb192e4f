"""A large site through the whole pipeline into a PostgreSQL warehouse, phase by phase.

    python benchmarks/pg_publish.py --export DIR [--pg-url URL] [--runs N]

Makes a fresh database on the server (dropped afterwards), loads the demo vocabulary,
and runs the Synthea export in DIR (e.g. ``scale_synthea.py --copies 1000 --out DIR``)
``--runs`` times with ``run_site``: the first run publishes into an empty warehouse
(every key-map entry new), the next ones publish the same batch again. Prints, per
run, the CDM rows, the time up to the CDM checks, the checks, and the publish into
PostgreSQL (COPY into build_synthea, keys, indexes, foreign keys, the swap).
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from pathlib import Path

import psycopg2

from omop_etl.pipeline import run_site
from omop_etl.vocabulary import load_into_warehouse
from omop_etl.warehouse import parse_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", type=Path, required=True, help="a Synthea export folder")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "OMOP_ETL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a server URL whose user may create databases",
    )
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()

    name = f"omop_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(args.pg_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'create database "{name}"')
    try:
        target = parse_target(f"{args.pg_url.rpartition('/')[0]}/{name}")
        load_into_warehouse(target, None)
        for run in range(1, args.runs + 1):
            marks: dict[str, float] = {}

            def progress(message: str, marks: dict[str, float] = marks) -> None:
                marks.setdefault(message.split(" ")[0], time.perf_counter())

            started = time.perf_counter()
            summary = run_site("synthea", args.export, target, demo_key=True, progress=progress)
            ended = time.perf_counter()
            print(
                f"run {run}: {sum(summary.rows.values()):,} CDM rows from "
                f"{summary.rows_read:,} source rows in {ended - started:.1f} s: "
                f"export -> CDM with contracts {marks['checks'] - started:.1f} s, "
                f"DQD checks {marks['publish'] - marks['checks']:.1f} s, "
                f"publish into PostgreSQL {ended - marks['publish']:.1f} s",
                flush=True,
            )
        with psycopg2.connect(target.location) as con, con.cursor() as cur:
            cur.execute("select pg_size_pretty(pg_database_size(current_database()))")
            print(f"warehouse database: {cur.fetchone()[0]}")
    finally:
        with admin.cursor() as cur:
            cur.execute(f'drop database if exists "{name}" with (force)')
        admin.close()


if __name__ == "__main__":
    main()
