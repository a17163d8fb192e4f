"""What the Airflow DAG files share, so that they only wire tasks.

- **The site registry.** ``omop_etl/dag_sites.py`` lists every site spec's DAG
  settings (site, description, schedule). DAG files import it instead of reading
  ``mappings/sites/*.yaml``: the DAG processor imports them every 30 seconds, and
  DAG files must do no file or database access. ``omop-etl dags sync`` writes it
  from the specs; a test fails when it is out of date.
- **Retries.** Every task is retried with exponential backoff: a dropped connection
  or a busy warehouse gets time to come back.
- **Data errors fail fast.** ``call`` runs a step of ``omop_etl.tasks`` and turns a
  data error (``EtlError``, a blocked batch included) into Airflow's
  fail-without-retry with the same message: a rerun would fail the same way.
- **Assets.** Each site DAG's publish task updates its site's Asset; the consortium
  DAG is scheduled on them.

Nothing here imports Airflow or the pipeline at module level: the command line
imports this module to write the registry, and the pipeline is imported by the
task that runs, not by the DAG processor.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from omop_etl.errors import EtlError

log = logging.getLogger(__name__)

OWNER = "omop-etl"
RETRIES = 3
# a fixed past date: with catchup off, the first scheduled run is the next one due
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)
SITE_DAG_PREFIX = "omop_site_"
REGISTRY_PATH = Path(__file__).with_name("dag_sites.py")


def default_args() -> dict[str, Any]:
    """Task arguments of every DAG: 3 retries, 2-4, 4-8, 8-16 minutes apart (at most 30).

    Airflow waits ``retry_delay × 2^(try - 1)`` to twice that (its jitter). Data
    errors are not retried at all (see ``call``).
    """
    return {
        "owner": OWNER,
        "retries": RETRIES,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
    }


def site_dag_id(site: str) -> str:
    """The DAG id of a site.

    >>> site_dag_id("seoul_general")
    'omop_site_seoul_general'
    """
    return f"{SITE_DAG_PREFIX}{site}"


def site_asset(site: str) -> Any:
    """The Asset a site DAG updates when it publishes: the site's CDM schema.

    An ``x-`` URI scheme: Airflow checks no provider's rules for it, and the URI names
    the schema whichever engine (DuckDB, PostgreSQL) holds the warehouse.
    """
    from airflow.sdk import Asset

    return Asset(name=f"omop_cdm_{site}", uri=f"x-omop://warehouse/cdm_{site}", group="omop_cdm")


@contextmanager
def data_errors_fail_fast() -> Iterator[None]:
    """Inside a task: a data error fails the task at once, without retry.

    ``EtlError`` (bad input, a bad spec, a blocked batch) becomes Airflow's
    ``AirflowFailException`` with the same message, the original as its cause. Any
    other exception (``psycopg2.OperationalError``, a dropped connection, an IO error)
    is transient: it propagates unchanged and Airflow retries the task.
    """
    try:
        yield
    except EtlError as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(exc)) from exc


def call(step: str, *args: Any) -> Any:
    """Run ``omop_etl.tasks.<step>(*args)`` as a task body, data errors failing fast.

    The pipeline is imported here, when the task runs, never when the DAG file is
    parsed. Logs carry the step and the run's ids, never row contents.
    """
    tasks = importlib.import_module("omop_etl.tasks")
    log.info("%s %s", step, _ids(args))
    with data_errors_fail_fast():
        return getattr(tasks, step)(*args)


def _ids(args: tuple[Any, ...]) -> str:
    """The ids among a step's arguments (a run handle's site, batch and run id).

    >>> _ids(({"site": "a", "batch_id": "b", "run_id": "r", "folder": "/x"},))
    'site=a batch_id=b run_id=r'
    >>> _ids(("a", "2026-01-31"))
    'a 2026-01-31'
    """
    parts = []
    for arg in args:
        if isinstance(arg, dict):
            parts += [f"{k}={arg[k]}" for k in ("site", "batch_id", "run_id") if k in arg]
        elif isinstance(arg, str | None):
            parts.append(str(arg))
    return " ".join(parts)


def choose_batch(site: str, requested: str | None = None) -> str:
    """The batch one site DAG run processes.

    The run's ``batch`` param, when given (a published batch runs again, which changes
    nothing), else the site's oldest unpublished batch: batches publish in order, one
    per run. With none pending the task is skipped, and so are the steps after it:
    nothing to do is not a failure.
    """
    if requested:
        log.info("site %s: batch %s, as the run's batch param asks", site, requested)
        return requested
    pending = call("pending_batches", site)
    if not pending:
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException(f"site {site}: no unpublished batch in its export folder")
    log.info("site %s: %d unpublished batch(es); this run takes %s", site, len(pending), pending[0])
    return pending[0]


# -- the registry: omop_etl/dag_sites.py, written from the specs ----------------------

_REGISTRY_HEADER = '''\
"""The sites that get an Airflow DAG, with their DAG settings.

Generated by `omop-etl dags sync` from mappings/sites/*.yaml: do not edit. A site's
DAG is omop_site_<site>; its schedule is the spec's `schedule:` key (None: manual runs).
The DAG files import this instead of reading the specs, which would be file access
each time the DAG processor parses them.
"""

# descriptions stay on one line, as the specs write them
# ruff: noqa: E501

SITES: tuple[dict[str, str | int | None], ...] = (
'''


def registry_entries() -> list[dict[str, str | int | None]]:
    """Every site spec's DAG settings, sorted by site; a spec with problems raises EtlError."""
    from omop_etl.spec import available_sites, load_spec

    specs = [load_spec(site) for site in available_sites()]
    return [
        {"site": s.site, "description": s.description, "schedule": s.schedule, "buckets": s.buckets}
        for s in specs
    ]


def render_registry(entries: list[dict[str, str | int | None]]) -> str:
    """The registry module's text, formatted as ``ruff format`` leaves it.

    >>> print(render_registry([{"site": "a", "schedule": None}]).split("= (")[1])
    <BLANKLINE>
        {
            "site": "a",
            "schedule": None,
        },
    )
    <BLANKLINE>
    """
    lines = [_REGISTRY_HEADER.rstrip("\n")]
    for entry in entries:
        lines.append("    {")
        lines += [f"        {_literal(k)}: {_literal(v)}," for k, v in entry.items()]
        lines.append("    },")
    lines.append(")")
    return "\n".join(lines) + "\n"


def _literal(value: str | int | None) -> str:
    """A Python literal as ``ruff format`` writes it: the quote that needs fewer escapes
    (double on a tie), non-ASCII text kept readable.

    >>> print(_literal('say "hi"'), _literal("it's"), _literal(None))
    'say "hi"' "it's" None
    """
    if value is None or isinstance(value, int):
        return repr(value)
    quote = "'" if value.count('"') > value.count("'") else '"'

    def escape(ch: str) -> str:
        if ch in ("\\", quote):
            return "\\" + ch
        return ch if ch.isprintable() else repr(ch)[1:-1]  # a control character: its escape

    return quote + "".join(map(escape, value)) + quote


def write_registry(entries: list[dict[str, str | int | None]], path: Path = REGISTRY_PATH) -> bool:
    """Write the registry of these entries; True when its text changed."""
    text = render_registry(entries)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True


def registry_is_current(
    entries: list[dict[str, str | int | None]], path: Path = REGISTRY_PATH
) -> bool:
    """Whether the registry file lists exactly these entries (``omop-etl dags sync --check``)."""
    return path.exists() and path.read_text(encoding="utf-8") == render_registry(entries)
