"""Bulk copy of the CDM into PostgreSQL: ``copy_to_postgres`` against a plain COPY of a CSV file.

    python benchmarks/pg_copy.py [--warehouse PATH] [--copies N] [--pg-url URL]
                                 [--tables T ...] [--chunk-rows N] [--repeat R]

The CDM comes from ``--warehouse`` (a DuckDB file whose schema ``cdm_synthea`` holds
the Synthea CDM; built there first when the file does not exist) or, without it, is
built in a temporary folder from the bundled Synthea sample cloned ``--copies`` times
(``scale_synthea.py``, ``omop-etl vocab load``, ``omop-etl run --site synthea``).

For every table, side by side, each into a fresh empty PostgreSQL table made by the
CDM's PostgreSQL DDL (NOT NULL, no keys, no indexes), after a CHECKPOINT:

* (a) ``copy_to_postgres(duck, "select ... from cdm_synthea.<table>", ...)``: DuckDB
  fetch, CSV encoding and COPY, streamed;
* (b) ``COPY <table> FROM STDIN`` fed by psycopg2 from a CSV file of the same rows
  (the same bytes: written beforehand by the same encoder, not timed; the page
  cache holds it).

Each is timed from the COPY statement to its commit; with ``--repeat R`` every table
is copied R times each way (alternating which goes first) and the best time counts.
Prints rows, seconds and rows/s per table and in total, and the ratio of the rates
(a)/(b); the target is >= 0.8.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import psycopg2
import psycopg2.errors
import pyarrow as pa
import pyarrow.csv as pa_csv

from omop_etl import schema
from omop_etl.pgcopy import CSV_WRITE_OPTIONS, copy_in_sql, copy_to_postgres
from omop_etl.sql import quote_ident

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale_synthea import DEFAULT_SOURCE, scale_export

CDM_SCHEMA = "cdm_synthea"
DEFAULT_TABLES = (
    "measurement",
    "observation",
    "condition_occurrence",
    "drug_exposure",
    "procedure_occurrence",
    "visit_occurrence",
    "person",
    "payer_plan_period",
    "cost",
    "device_exposure",
    "observation_period",
    "condition_era",
    "drug_era",
)
TARGET_RATIO = 0.8
MIB = 1 << 20
READ_SIZE = 1 << 20  # psycopg2 reads the CSV file in 1 MiB blocks for (b)


@dataclass
class Timing:
    """Best wall and client-CPU seconds of one side for one table."""

    seconds: float = float("inf")
    cpu: float = 0.0

    def add(self, seconds: float, cpu: float) -> None:
        if seconds < self.seconds:
            self.seconds, self.cpu = seconds, cpu


@dataclass
class TableResult:
    table: str
    rows: int
    csv_bytes: int
    ours: Timing = field(default_factory=Timing)
    plain: Timing = field(default_factory=Timing)
    fetch: Timing = field(default_factory=Timing)  # DuckDB -> Arrow only
    encode: Timing = field(default_factory=Timing)  # DuckDB -> Arrow -> CSV bytes, no PostgreSQL


def build_cdm(copies: int, folder: Path, warehouse: Path) -> None:
    """The Synthea sample cloned ``copies`` times, through the pipeline into ``warehouse``."""
    export = folder / f"synthea_x{copies}"
    started = time.perf_counter()
    scaled = scale_export(DEFAULT_SOURCE, export, copies)
    print(f"  export x{copies}: {scaled.rows:,} rows in {time.perf_counter() - started:.1f} s")
    cli = [sys.executable, "-m", "omop_etl.cli"]
    target = ["--warehouse", str(warehouse)]
    for step in (
        [*cli, "vocab", "load", *target],
        [*cli, "run", "--site", "synthea", "--input", str(export), *target, "--demo-key"],
    ):
        started = time.perf_counter()
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{' '.join(step[2:4])} failed:\n{done.stderr or done.stdout}")
        print(f"  {' '.join(step[3:5])}: {time.perf_counter() - started:.1f} s")


def timed(work: Callable[[], Any]) -> tuple[float, float]:
    """Wall and client-CPU seconds of ``work()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def write_csv(duck: duckdb.DuckDBPyConnection, select_sql: str, path: Path) -> int:
    """The query's rows as the CSV copy_to_postgres sends (same encoder, same options)."""
    with pa.OSFile(str(path), "wb") as sink:
        for batch in duck.sql(select_sql).to_arrow_reader(100_000):
            pa_csv.write_csv(batch, sink, CSV_WRITE_OPTIONS)
    return path.stat().st_size


def client_only(
    duck: duckdb.DuckDBPyConnection, select_sql: str, chunk_rows: int
) -> tuple[float, float]:
    """Seconds of (a)'s client side alone: DuckDB's fetch, then fetch and CSV encoding."""

    def fetch() -> None:
        for _batch in duck.sql(select_sql).to_arrow_reader(chunk_rows):
            pass

    def encode() -> None:
        for batch in duck.sql(select_sql).to_arrow_reader(chunk_rows):
            sink = pa.BufferOutputStream()
            pa_csv.write_csv(batch, sink, CSV_WRITE_OPTIONS)
            sink.getvalue().to_pybytes()

    return timed(fetch)[0], timed(encode)[0]


class Postgres:
    """The benchmark's connection and throw-away schema."""

    def __init__(self, url: str):
        self.con = psycopg2.connect(url)
        self.schema = f"bench_pgcopy_{uuid.uuid4().hex[:8]}"
        self.can_checkpoint = True
        self.run(f"create schema {quote_ident(self.schema)}")

    def run(self, sql: str) -> list[tuple[Any, ...]]:
        with self.con.cursor() as cur:
            cur.execute(sql)
            rows = cur.fetchall() if cur.description else []
        self.con.commit()
        return rows

    def fresh_table(self, table: str) -> str:
        """An empty table by the CDM DDL, and a checkpoint so no earlier write is flushed."""
        target = f"{quote_ident(self.schema)}.{quote_ident(table)}"
        self.run(f"drop table if exists {target}")
        self.run(schema.create_table_sql(table, self.schema, "postgresql"))
        if self.can_checkpoint:
            try:
                self.run("checkpoint")
            except psycopg2.errors.InsufficientPrivilege:
                self.con.rollback()
                self.can_checkpoint = False
        return target

    def close(self) -> None:
        self.con.rollback()
        self.run(f"drop schema if exists {quote_ident(self.schema)} cascade")
        self.con.close()


def select_sql(table: str, columns: list[str]) -> str:
    return f"select {', '.join(map(quote_ident, columns))} from {CDM_SCHEMA}.{quote_ident(table)}"


def copy_ours(
    pg: Postgres, duck: duckdb.DuckDBPyConnection, table: str, columns: list[str], chunk_rows: int
) -> tuple[int, float, float]:
    target = pg.fresh_table(table)
    select = select_sql(table, columns)
    copied = 0

    def work() -> None:
        nonlocal copied
        with pg.con.cursor() as cur:
            copied = copy_to_postgres(duck, select, cur, target, columns, chunk_rows=chunk_rows)
        pg.con.commit()

    seconds, cpu = timed(work)
    return copied, seconds, cpu


def copy_plain(
    pg: Postgres, table: str, columns: list[str], path: Path
) -> tuple[int, float, float]:
    target = pg.fresh_table(table)
    copied = 0

    def work() -> None:
        nonlocal copied
        with pg.con.cursor() as cur, path.open("rb") as fh:
            cur.copy_expert(copy_in_sql(target, columns), fh, size=READ_SIZE)
            copied = cur.rowcount
        pg.con.commit()

    seconds, cpu = timed(work)
    return copied, seconds, cpu


def measure_table(
    pg: Postgres,
    duck: duckdb.DuckDBPyConnection,
    table: str,
    work_dir: Path,
    chunk_rows: int,
    repeat: int,
) -> TableResult:
    """Both sides for one table, ``repeat`` times each, alternating which goes first."""
    columns = list(schema.load_spec()[table].field_names)
    select = select_sql(table, columns)
    path = work_dir / f"{table}.csv"
    size = write_csv(duck, select, path)
    rows = duck.execute(f"select count(*) from {CDM_SCHEMA}.{quote_ident(table)}").fetchall()[0][0]
    result = TableResult(table, rows, size)
    for i in range(repeat):
        fetch, encode = client_only(duck, select, chunk_rows)
        result.fetch.add(fetch, 0.0)
        result.encode.add(encode, 0.0)
        sides = ["ours", "plain"] if i % 2 == 0 else ["plain", "ours"]
        for side in sides:
            if side == "ours":
                copied, seconds, cpu = copy_ours(pg, duck, table, columns, chunk_rows)
                result.ours.add(seconds, cpu)
            else:
                copied, seconds, cpu = copy_plain(pg, table, columns, path)
                result.plain.add(seconds, cpu)
            if copied != rows:
                raise SystemExit(f"{table}: {side} copied {copied:,} rows, DuckDB has {rows:,}")
    path.unlink()
    pg.run(f"drop table if exists {quote_ident(pg.schema)}.{quote_ident(table)}")
    return result


def rate(rows: int, seconds: float) -> float:
    return rows / seconds if seconds else float("nan")


def total_of(results: list[TableResult]) -> TableResult:
    total = TableResult("TOTAL", sum(r.rows for r in results), sum(r.csv_bytes for r in results))
    total.ours = Timing(sum(r.ours.seconds for r in results), sum(r.ours.cpu for r in results))
    total.plain = Timing(sum(r.plain.seconds for r in results), sum(r.plain.cpu for r in results))
    total.fetch = Timing(sum(r.fetch.seconds for r in results))
    total.encode = Timing(sum(r.encode.seconds for r in results))
    return total


def report_line(r: TableResult) -> tuple[str, ...]:
    a, b = rate(r.rows, r.ours.seconds), rate(r.rows, r.plain.seconds)
    return (
        r.table,
        f"{r.rows:,}",
        f"{r.csv_bytes / MIB:,.1f}",
        f"{r.ours.seconds:.2f}",
        f"{a:,.0f}",
        f"{r.ours.cpu:.2f}",
        f"{r.plain.seconds:.2f}",
        f"{b:,.0f}",
        f"{a / b:.2f}",
        f"{r.fetch.seconds:.2f}",
        f"{r.encode.seconds:.2f}",
    )


REPORT_HEAD = (
    "table",
    "rows",
    "CSV MiB",
    "(a) s",
    "(a) rows/s",
    "(a) CPU s",
    "(b) s",
    "(b) rows/s",
    "(a)/(b)",
    "fetch s",
    "fetch+CSV s",
)


def report(results: list[TableResult]) -> str:
    """The side-by-side table, a total line and the verdict on the target."""
    total = total_of(results)
    lines = [report_line(r) for r in results]
    last = report_line(total)
    widths = [max(len(row[i]) for row in (REPORT_HEAD, *lines, last)) for i in range(len(last))]
    rule = "  ".join("-" * w for w in widths)

    def joined(row: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True))

    ratio = rate(total.rows, total.ours.seconds) / rate(total.rows, total.plain.seconds)
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    table = [joined(REPORT_HEAD), rule, *map(joined, lines), rule, joined(last)]
    return "\n".join(
        [
            *table,
            "",
            f"ratio (a)/(b) of the total rates: {ratio:.2f} (target >= {TARGET_RATIO}: {verdict})",
            "(a) CPU s: CPU time of the benchmark process (fetch, encoding, sending) during (a);",
            "fetch s: DuckDB -> Arrow alone; fetch+CSV s: DuckDB -> Arrow -> CSV bytes alone, no",
            "PostgreSQL ((a)'s client side; (b) is PostgreSQL's: parsing and storing the rows).",
        ]
    )


def environment(pg: Postgres, duck: duckdb.DuckDBPyConnection) -> str:
    server = pg.run("select current_setting('server_version'), current_setting('shared_buffers')")
    load = os.getloadavg()
    threads = duck.execute("select current_setting('threads')").fetchall()[0][0]
    return (
        f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"DuckDB {duckdb.__version__} ({threads} threads), pyarrow {pa.__version__}, "
        f"psycopg2 {psycopg2.__version__.split()[0]}, PostgreSQL {server[0][0]} "
        f"(shared_buffers {server[0][1]}), load average at start {load[0]:.2f}"
    )


def run(args: argparse.Namespace, warehouse: Path, work_dir: Path) -> None:
    duck = duckdb.connect(str(warehouse), read_only=True)
    pg = Postgres(args.pg_url)
    try:
        print(f"Environment: {environment(pg, duck)}")
        print(
            f"Warehouse {warehouse}, chunk_rows {args.chunk_rows:,}, best of {args.repeat} "
            "per side; (a) copy_to_postgres from DuckDB, (b) COPY FROM STDIN of a CSV file\n",
            flush=True,
        )
        results = []
        for table in args.tables:
            result = measure_table(pg, duck, table, work_dir, args.chunk_rows, args.repeat)
            a, b = rate(result.rows, result.ours.seconds), rate(result.rows, result.plain.seconds)
            print(
                f"  {table}: {result.rows:,} rows, (a) {result.ours.seconds:.2f} s, "
                f"(b) {result.plain.seconds:.2f} s, ratio {a / b:.2f}",
                flush=True,
            )
            results.append(result)
        print()
        print(report(results))
    finally:
        pg.close()
        duck.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warehouse", type=Path, help="DuckDB file with cdm_synthea (reused)")
    parser.add_argument("--copies", type=int, default=1000, help="copies when building (1000)")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "OMOP_ETL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--tables", nargs="+", default=list(DEFAULT_TABLES))
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2, help="runs per side, best counts (2)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pg_copy_bench_") as tmp:
        folder = Path(tmp)
        warehouse = args.warehouse or folder / f"synthea_x{args.copies}.duckdb"
        if not warehouse.exists():
            print(f"Building the x{args.copies} Synthea CDM into {warehouse}:", flush=True)
            build_cdm(args.copies, folder, warehouse)
        run(args, warehouse, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
