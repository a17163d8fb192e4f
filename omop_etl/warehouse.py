"""Warehouse targets: an embedded DuckDB file (default) or a PostgreSQL URL."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from omop_etl import settings
from omop_etl.errors import EtlError


@dataclass(frozen=True)
class Target:
    """Where the warehouse lives: ``kind`` is ``duckdb`` or ``postgresql``."""

    kind: str
    location: str

    def __str__(self) -> str:
        return self.location


def parse_target(raw: str | None = None) -> Target:
    """Resolve a --warehouse value (or the environment default) to a Target.

    >>> parse_target("out/w.duckdb").kind
    'duckdb'
    >>> parse_target("postgresql://u@h/db").kind
    'postgresql'
    """
    value = settings.warehouse_target(raw)
    if value.startswith(("postgresql://", "postgres://", "postgresql+psycopg2://")):
        return Target("postgresql", value)
    if "://" in value:
        raise EtlError(
            f"warehouse {value!r}: unknown scheme; give a DuckDB file path or a postgresql:// URL"
        )
    return Target("duckdb", value)


def connect(target: Target, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the embedded engine on the target.

    No extension is ever installed or downloaded: only what the wheel bundles.
    """
    if target.kind == "postgresql":
        raise EtlError(
            "PostgreSQL warehouses are not supported yet (planned with the shared-warehouse "
            "work); use a DuckDB file path for --warehouse for now"
        )
    path = Path(target.location)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    config = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "memory_limit": settings.duckdb_memory_limit(),
        "preserve_insertion_order": False,
    }
    threads = settings.duckdb_threads()
    if threads:
        config["threads"] = threads
    try:
        con = duckdb.connect(str(path), read_only=read_only, config=config)
    except duckdb.Error as exc:
        raise EtlError(f"cannot open warehouse {path}: {exc}") from exc
    con.execute("set enable_progress_bar = false")  # our own progress goes to the terminal
    return con


def cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Another connection to the same database, for work on another thread."""
    cur = con.cursor()
    cur.execute("set enable_progress_bar = false")
    return cur


def connect_memory() -> duckdb.DuckDBPyConnection:
    """An in-memory engine with the same settings (tests, scratch work)."""
    return duckdb.connect(
        ":memory:",
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
    )
