"""Warehouse targets: an embedded DuckDB file (default) or a PostgreSQL URL."""

from __future__ import annotations

import re
import time
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
        """The location as printed and logged: a URL's password is never shown.

        >>> str(Target("postgresql", "postgresql://loader:s3cret@db:5432/omop"))
        'postgresql://loader:***@db:5432/omop'
        """
        return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", self.location)


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


def _engine_config() -> dict[str, object]:
    """The embedded engine's settings. No extension is ever installed or downloaded:
    only what the wheel bundles."""
    config: dict[str, object] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "memory_limit": settings.duckdb_memory_limit(),
        "preserve_insertion_order": False,
        # DuckDB 2.0 pushes a cast of a CSV column into the reader, which then refuses
        # the whole record when one value does not cast (with store_rejects on): a
        # value rule's failure would cost the record. Staging casts itself (try_cast).
        "disabled_optimizers": "type_pushdown",
    }
    threads = settings.duckdb_threads()
    if threads:
        config["threads"] = threads
    return config


def connect(target: Target, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB warehouse file (PostgreSQL warehouses: omop_etl.pgwarehouse)."""
    if target.kind == "postgresql":
        raise EtlError(f"warehouse {target} is PostgreSQL: this operation needs a DuckDB file")
    path = Path(target.location)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + settings.lock_wait()
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only, config=_engine_config())
            break
        except duckdb.IOException as exc:
            # one writer per file: another run (a site DAG's task, a command) has it open
            if "lock" not in str(exc).lower():
                raise EtlError(f"cannot open warehouse {path}: {exc}") from exc
            if time.monotonic() >= deadline:
                raise ConnectionError(
                    f"warehouse {path} stayed in use by another process for "
                    f"{settings.lock_wait():.0f} s (OMOP_ETL_LOCK_WAIT): {exc}"
                ) from exc
            time.sleep(0.5)
        except duckdb.Error as exc:
            raise EtlError(f"cannot open warehouse {path}: {exc}") from exc
    con.execute("set enable_progress_bar = false")  # our own progress goes to the terminal
    return con


def connect_engine() -> duckdb.DuckDBPyConnection:
    """The embedded engine with nothing attached (a run attaches its scratch to it)."""
    con = duckdb.connect(":memory:", config=_engine_config())
    con.execute("set enable_progress_bar = false")
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


def work_dir(target: Target) -> Path:
    """Where runs keep their scratch files and the vocabulary copy: OMOP_ETL_WORK_DIR, else
    a ``work`` folder beside a DuckDB warehouse, else ``./work``. Airflow workers that
    share a site's runs must share this folder."""
    explicit = settings.work_dir()
    if explicit:
        return explicit
    if target.kind == "duckdb":
        return Path(target.location).resolve().parent / "work"
    return Path("work").resolve()


def read_results(target: Target, site: str | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that reads the warehouse's ``results`` (and with ``site`` the
    site's unmapped codes): the file itself, read-only, or a snapshot of a PostgreSQL
    warehouse's tables (the dashboard and reports read DuckDB)."""
    if target.kind == "postgresql":
        from omop_etl.pgwarehouse import results_snapshot

        return results_snapshot(target, site)
    if not Path(target.location).exists():
        raise EtlError(f"warehouse {target} does not exist yet")
    return connect(target, read_only=True)
