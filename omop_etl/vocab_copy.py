"""A read-only DuckDB copy of the warehouse's vocabulary, for runs that work outside it.

A run on a PostgreSQL warehouse, or a run split into Airflow tasks, builds in a
scratch database of its own; the transforms and checks join the vocabulary there.
The copy is made once per vocabulary release (a fingerprint of the warehouse's
vocabulary: rows per table and the vocabulary versions) and shared by every run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import duckdb

from omop_etl import schema, settings
from omop_etl.errors import EtlError
from omop_etl.sql import literal, quote_ident
from omop_etl.warehouse import Target, connect, connect_engine, work_dir

VOCAB = settings.VOCAB_SCHEMA


def _present_sql() -> str:
    return (
        "select table_name from information_schema.tables "
        f"where table_schema = {literal(VOCAB)} order by table_name"
    )


def _fingerprint_sql(tables: list[str]) -> str:
    counts = " union all ".join(
        f"select {literal(t)}, count(*) from {quote_ident(VOCAB)}.{quote_ident(t)}" for t in tables
    )
    return f"select * from ({counts}) as c order by 1"


def _versions_sql() -> str:
    return (
        "select vocabulary_id, coalesce(vocabulary_version, '') "
        f"from {quote_ident(VOCAB)}.vocabulary order by vocabulary_id"
    )


def _tables(present: list[str]) -> list[str]:
    known = schema.vocabulary_tables()
    tables = [t for t in known if t in present]
    if "concept" not in tables:
        raise EtlError(
            "the warehouse has no vocabulary yet: run `omop-etl vocab load` first "
            "(without a folder it loads the bundled demo vocabulary)"
        )
    return tables


def _digest(counts: list[tuple], versions: list[tuple]) -> str:
    text = repr([tuple(map(str, r)) for r in counts]) + repr([tuple(map(str, r)) for r in versions])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure(target: Target) -> Path:
    """The file of the copy of the warehouse's current vocabulary, made if missing."""
    folder = work_dir(target) / "vocab"
    folder.mkdir(parents=True, exist_ok=True)
    if target.kind == "postgresql":
        from omop_etl import pgwarehouse

        with pgwarehouse.connection(target) as pg, pg.cursor() as cur:
            cur.execute(_present_sql())
            tables = _tables([r[0] for r in cur.fetchall()])
            cur.execute(_fingerprint_sql(tables))
            counts = cur.fetchall()
            cur.execute(_versions_sql())
            path = folder / f"vocab-{_digest(counts, cur.fetchall())}.duckdb"
            if not path.exists():
                _build(path, tables, lambda duck, t: pgwarehouse.read_vocab_table(cur, duck, t))
        return path
    con = connect(target, read_only=True)
    try:
        tables = _tables([r[0] for r in con.execute(_present_sql()).fetchall()])
        digest = _digest(
            con.execute(_fingerprint_sql(tables)).fetchall(),
            con.execute(_versions_sql()).fetchall(),
        )
    finally:
        con.close()
    path = folder / f"vocab-{digest}.duckdb"
    if not path.exists():

        def copy(duck: duckdb.DuckDBPyConnection, table: str) -> None:
            name = quote_ident(table)
            duck.execute(
                f"insert into {VOCAB}.{name} by name select * from omop_warehouse.{VOCAB}.{name}"
            )

        _build(path, tables, copy, attach=target.location)
    return path


def _build(path: Path, tables: list[str], copy, attach: str | None = None) -> None:
    """Write the copy beside its final name and rename it: readers never see half a copy."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    duck = connect_engine()
    try:
        duck.execute(f"attach {literal(str(tmp))} as copy_db")
        duck.execute("use copy_db")
        if attach:
            duck.execute(f"attach {literal(attach)} as omop_warehouse (read_only)")
        schema.create_schema(duck, VOCAB, tables=tables)
        for table in tables:
            copy(duck, table)
        duck.execute("use memory")
        duck.execute("detach copy_db")
    finally:
        duck.close()
    tmp.replace(path)
    for old in path.parent.glob("vocab-*.duckdb"):
        if old != path:
            with contextlib.suppress(OSError):  # a run still reading it keeps its inode
                old.unlink()
