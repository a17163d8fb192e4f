"""A read-only DuckDB copy of the warehouse's vocabulary, for runs that work outside it.

A run on a PostgreSQL warehouse, or a run split into Airflow tasks, builds in a
scratch database of its own; the transforms and checks join the vocabulary there.
The copy is made once per vocabulary release and code maps (a fingerprint of the
warehouse's vocabulary: rows per table, the vocabulary versions and the digest of the
code maps' rows) and shared by every run.
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


def _digest(counts: list[tuple], versions: list[tuple], maps: str = "") -> str:
    text = repr([tuple(map(str, r)) for r in counts]) + repr([tuple(map(str, r)) for r in versions])
    return hashlib.sha256((text + maps).encode()).hexdigest()[:16]


def code_maps_sql(vocab: str = quote_ident(VOCAB)) -> str:
    """The digest of the site code maps (``source_to_concept_map``'s rows), in SQL that
    DuckDB and PostgreSQL both run: a changed map row changes it."""
    columns = (
        "source_vocabulary_id, source_code, source_concept_id, target_concept_id, "
        "target_vocabulary_id, valid_start_date, valid_end_date, invalid_reason"
    )
    return (
        f"select md5(coalesce(string_agg(concat_ws('|', {columns}), chr(10) "
        f"order by {columns}), '')) from {vocab}.source_to_concept_map"
    )


# the tables every loaded vocabulary has, whose row counts tell releases apart
_RELEASE_TABLES = ("concept", "concept_relationship", "concept_ancestor", "vocabulary")


def release_sql(vocab: str = quote_ident(VOCAB)) -> str:
    """The vocabulary's release: the version vocabulary ``None`` gives itself, with the
    row counts of the main tables (a subset of a release differs from the release)."""
    counts = ", ".join(f"(select count(*) from {vocab}.{t})" for t in _RELEASE_TABLES)
    return (
        f"select coalesce((select max(vocabulary_version) from {vocab}.vocabulary "
        f"where vocabulary_id = 'None'), 'unnamed release') || ' (' || "
        f"concat_ws('/', {counts}) || ' rows)'"
    )


def mapping_release(con: duckdb.DuckDBPyConnection, vocab: str) -> tuple[str, str]:
    """(vocabulary release, code maps digest) of the vocabulary ``vocab`` (a quoted,
    qualified schema name) that a run maps with."""
    (release,) = con.execute(release_sql(vocab)).fetchone()
    (maps,) = con.execute(code_maps_sql(vocab)).fetchone()
    return str(release), str(maps)[:16]


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
            versions = cur.fetchall()
            cur.execute(code_maps_sql())
            path = folder / f"vocab-{_digest(counts, versions, cur.fetchone()[0])}.duckdb"
            if not path.exists():
                _build(path, tables, lambda duck, t: pgwarehouse.read_vocab_table(cur, duck, t))
        return path
    con = connect(target, read_only=True)
    try:
        tables = _tables([r[0] for r in con.execute(_present_sql()).fetchall()])
        digest = _digest(
            con.execute(_fingerprint_sql(tables)).fetchall(),
            con.execute(_versions_sql()).fetchall(),
            con.execute(code_maps_sql()).fetchone()[0],
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
