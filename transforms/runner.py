"""Runs the transform SQL files in data-flow order on the embedded engine.

``work/*.sql`` files are scripts that build work tables in the site's stage
schema; ``cdm/<table>.sql`` files are one SELECT each, materialized as table
``@cdm.<table>`` (the CDM being built, beside the published one). Parameters are
written ``@name`` (see omop_etl.sql.render): ``@work`` staging and work tables,
``@stage`` the site's lasting tables (key map), ``@vocab``, ``@cdm``.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import duckdb

from omop_etl import settings
from omop_etl.errors import EtlError
from omop_etl.sql import Ident, quote_ident, render
from omop_etl.warehouse import cursor

SQL_DIR = Path(__file__).resolve().parent / "sql"
ID_BLOCK_SIZE = 1 << 27


@dataclass(frozen=True)
class Step:
    """``kind`` is ``work`` (a script), ``cdm`` (a table's SELECT) or ``ids`` (key map)."""

    kind: str
    name: str


def _steps(kind: str, *names: str) -> tuple[Step, ...]:
    return tuple(Step(kind, name) for name in names)


# The data flow, phase by phase. The steps of one phase only read what earlier
# phases built, so they may run at the same time.
PHASES: tuple[tuple[Step, ...], ...] = (
    _steps("work", "02_concept_lookup", "03_unit_lookup", "05_visit_group", "06_location"),
    _steps("work", "04_event"),
    _steps("work", "07_keys", "15_unmapped_codes"),
    _steps("ids", "work_keys"),
    _steps("work", "08_ids"),
    _steps("work", "09_event_ids"),
    _steps(
        "cdm",
        "location",
        "care_site",
        "provider",
        "person",
        "death",
        "visit_occurrence",
        "visit_detail",
        "condition_occurrence",
        "drug_exposure",
        "procedure_occurrence",
        "device_exposure",
        "measurement",
        "observation",
        "note",
        "payer_plan_period",
    ),
    (
        Step("cdm", "cost"),
        *_steps("work", "10_observation_period", "11_condition_era", "12_drug_era", "13_dose_era"),
    ),
    _steps("work", "14_derived_keys"),
    _steps("ids", "work_derived_keys"),
    _steps(
        "cdm",
        "observation_period",
        "condition_era",
        "drug_era",
        "dose_era",
        "cdm_source",
        "metadata",
    ),
)
STEPS: tuple[Step, ...] = tuple(step for phase in PHASES for step in phase)

# A large site is built in person buckets (Airflow mapped tasks): the phases that
# give ids run once for the site, the phases of per-person CDM rows run per bucket on
# that bucket's persons only, and the derived tables get their ids once more, after.
SITE_TABLES = ("location", "care_site", "provider")  # CDM tables of no person
_PERSON_CDM = 6  # the index in PHASES of the phase of the event CDM tables
KEY_PHASES = (*PHASES[:_PERSON_CDM], tuple(s for s in PHASES[_PERSON_CDM] if s.name in SITE_TABLES))
PERSON_PHASES = (
    tuple(s for s in PHASES[_PERSON_CDM] if s.name not in SITE_TABLES),
    PHASES[_PERSON_CDM + 1],
)
FINAL_PHASES = PHASES[_PERSON_CDM + 2 :]
# What the person phases read from the work schema: tables of person rows, filtered
# to a bucket's persons by the column given, and lookups read whole.
PERSON_INPUTS = {
    "person": "person_source_value",
    "event": "person_source_value",
    "payer_plan": "person_source_value",
    "work_visit_group": "person_source_value",
    "work_event_ids": "person_source_value",
    "cost": "visit_source_value",  # a visit's bucket is its person's
}
LOOKUP_INPUTS = (
    "work_person",
    "work_visit",
    "work_provider",
    "work_care_site",
    "work_address_location",
)
# What the person phases build: per-person CDM tables and the work tables of the
# derived ones (observation periods, eras), unioned over the buckets afterwards.
PERSON_OUTPUTS_CDM = tuple(s.name for phase in PERSON_PHASES for s in phase if s.kind == "cdm")
PERSON_OUTPUTS_WORK = tuple(
    f"work_{s.name[3:]}" for phase in PERSON_PHASES for s in phase if s.kind == "work"
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
    """Run every phase in order, up to ``settings.workers()`` steps of a phase at a time.

    Raises EtlError naming the failing step.
    """
    run_phases(con, params, PHASES, progress)


def run_phases(
    con: duckdb.DuckDBPyConnection,
    params: dict[str, Any],
    phases: tuple[tuple[Step, ...], ...],
    progress: Callable[[Step], None] | None = None,
) -> None:
    """Run the given phases in order (see ``run_transforms``)."""
    with ThreadPoolExecutor(max_workers=settings.workers()) as pool:
        for phase in phases:
            for future in [pool.submit(_run_step, con, step, params, progress) for step in phase]:
                future.result()


def _run_step(
    con: duckdb.DuckDBPyConnection,
    step: Step,
    params: dict[str, Any],
    progress: Callable[[Step], None] | None,
) -> None:
    if progress:
        progress(step)
    cur = cursor(con)  # a connection of its own: steps of a phase run side by side
    try:
        if step.kind == "ids":
            _assign_ids(cur, params, Ident(step.name))
            return
        sql = render(sql_text(step.kind, step.name), params)
        if step.kind == "cdm":
            table = f"{params['cdm'].sql}.{quote_ident(step.name)}"
            sql = f"create or replace table {table} as ({sql})"
        try:
            cur.execute(sql)
        except duckdb.Error as exc:
            raise EtlError(f"transform {step.kind}/{step.name}.sql failed: {exc}") from exc
    finally:
        cur.close()


def _assign_ids(con: duckdb.DuckDBPyConnection, params: dict[str, Any], keys: Ident) -> None:
    """Give the new keys of a work table ids from the key map, one CDM table at a time."""
    work = params["work"].sql
    tables = [
        t for (t,) in con.execute(f"select distinct tbl from {work}.{quote_ident(keys)}").fetchall()
    ]
    template = sql_text("ids", "assign_ids")
    for table in sorted(tables):
        try:
            con.execute(render(template, {**params, "keys": keys, "tbl": table}))
        except duckdb.Error as exc:
            raise EtlError(f"assigning ids for {table} failed: {exc}") from exc
        _check_id_capacity(con, params, table)


def _check_id_capacity(con: duckdb.DuckDBPyConnection, params: dict[str, Any], table: str) -> None:
    (last,) = con.execute(
        f"select max(id) from {params['stage'].sql}.key_map where tbl = ?", [table]
    ).fetchall()[0]
    if last is not None and last > params["id_base"] + ID_BLOCK_SIZE - 1:
        raise EtlError(
            f"the site's id block is full for {table}: at most {ID_BLOCK_SIZE:,} rows per "
            "CDM table per site"
        )
