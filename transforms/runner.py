"""Runs the transform SQL files in data-flow order on the embedded engine.

``work/*.sql`` files are scripts that build work tables in the site's stage
schema; ``cdm/<table>.sql`` files are one SELECT each, materialized as table
``@cdm.<table>`` (the CDM being built, beside the published one). Parameters are
written ``@name`` (see omop_etl.sql.render): ``@work`` staging and work tables,
``@stage`` the site's lasting tables (key map), ``@vocab``, ``@cdm``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import duckdb

from omop_etl.errors import EtlError
from omop_etl.sql import Ident, quote_ident, render

SQL_DIR = Path(__file__).resolve().parent / "sql"
ID_BLOCK_SIZE = 1 << 27


@dataclass(frozen=True)
class Step:
    """``kind`` is ``work`` (a script), ``cdm`` (a table's SELECT) or ``ids`` (key map)."""

    kind: str
    name: str


STEPS: tuple[Step, ...] = (
    Step("work", "02_concept_lookup"),
    Step("work", "03_unit_lookup"),
    Step("work", "04_event"),
    Step("work", "05_visit_group"),
    Step("work", "06_location"),
    Step("work", "07_keys"),
    Step("ids", "work_keys"),
    Step("work", "08_ids"),
    Step("work", "09_event_ids"),
    Step("cdm", "location"),
    Step("cdm", "care_site"),
    Step("cdm", "provider"),
    Step("cdm", "person"),
    Step("cdm", "death"),
    Step("cdm", "visit_occurrence"),
    Step("cdm", "visit_detail"),
    Step("cdm", "condition_occurrence"),
    Step("cdm", "drug_exposure"),
    Step("cdm", "procedure_occurrence"),
    Step("cdm", "device_exposure"),
    Step("cdm", "measurement"),
    Step("cdm", "observation"),
    Step("cdm", "payer_plan_period"),
    Step("cdm", "cost"),
    Step("work", "10_observation_period"),
    Step("work", "11_condition_era"),
    Step("work", "12_drug_era"),
    Step("work", "13_dose_era"),
    Step("work", "14_derived_keys"),
    Step("ids", "work_derived_keys"),
    Step("cdm", "observation_period"),
    Step("cdm", "condition_era"),
    Step("cdm", "drug_era"),
    Step("cdm", "dose_era"),
    Step("cdm", "cdm_source"),
    Step("cdm", "metadata"),
)

CDM_TABLES_WRITTEN = tuple(s.name for s in STEPS if s.kind == "cdm")


@cache
def sql_text(kind: str, name: str) -> str:
    path = SQL_DIR / ("work/assign_ids" if kind == "ids" else f"{kind}/{name}")
    return path.with_suffix(".sql").read_text(encoding="utf-8")


def run_transforms(
    con: duckdb.DuckDBPyConnection,
    params: dict[str, Any],
    progress: Callable[[Step], None] | None = None,
) -> None:
    """Run every step in order. Raises EtlError naming the failing step."""
    for step in STEPS:
        if progress:
            progress(step)
        if step.kind == "ids":
            _assign_ids(con, params, Ident(step.name))
            continue
        sql = render(sql_text(step.kind, step.name), params)
        if step.kind == "cdm":
            table = render("@cdm", params) + "." + quote_ident(step.name)
            sql = f"create or replace table {table} as ({sql})"
        try:
            con.execute(sql)
        except duckdb.Error as exc:
            raise EtlError(f"transform {step.kind}/{step.name}.sql failed: {exc}") from exc


def _assign_ids(con: duckdb.DuckDBPyConnection, params: dict[str, Any], keys: Ident) -> None:
    """Give the new keys of a work table ids from the key map, one CDM table at a time."""
    work = render("@work", params)
    tables = [
        t for (t,) in con.execute(f"select distinct tbl from {work}.{quote_ident(keys)}").fetchall()
    ]
    template = sql_text("ids", "assign_ids")
    for table in sorted(tables):
        try:
            con.execute(render(template, {**params, "keys": keys, "tbl": table}))
        except duckdb.Error as exc:
            raise EtlError(f"assigning ids for {table} failed: {exc}") from exc
    _check_id_capacity(con, params)


def _check_id_capacity(con: duckdb.DuckDBPyConnection, params: dict[str, Any]) -> None:
    limit = params["id_base"] + ID_BLOCK_SIZE - 1
    full = con.execute(
        f"select tbl, max(id) from {render('@stage', params)}.key_map "
        "group by tbl having max(id) > ?",
        [limit],
    ).fetchall()
    if full:
        tables = ", ".join(t for t, _ in full)
        raise EtlError(
            f"the site's id block is full for {tables}: at most {ID_BLOCK_SIZE:,} rows per "
            "CDM table per site"
        )
