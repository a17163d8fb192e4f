"""Deployment settings: the one place that reads the environment.

Everything else asks this module for paths, the warehouse target and the
schema names, so local runs, CI and production differ only in variables.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TRANSFORMS_DIR = PROJECT_ROOT / "transforms"
CDM_SPEC_DIR = TRANSFORMS_DIR / "cdm"
QUALITY_DIR = PROJECT_ROOT / "quality"

VOCAB_SCHEMA = "vocab"
DEFAULT_WAREHOUSE_FILE = "warehouse.duckdb"

_SITE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


def mappings_dir() -> Path:
    """Folder of site specs, code maps and the demo vocabulary (OMOP_ETL_MAPPINGS)."""
    return Path(os.environ.get("OMOP_ETL_MAPPINGS", PROJECT_ROOT / "mappings"))


def demo_vocabulary_dir() -> Path:
    """The bundled Athena-format demo vocabulary."""
    return mappings_dir() / "vocabulary" / "demo"


def vocabulary_supplement_dir() -> Path:
    """Metadata concepts the demo vocabulary lacks (see its README)."""
    return mappings_dir() / "vocabulary" / "supplement"


def sites_dir() -> Path:
    return mappings_dir() / "sites"


def codemaps_dir() -> Path:
    return mappings_dir() / "codemaps"


def warehouse_target(explicit: str | None = None) -> str:
    """The warehouse: --warehouse, else OMOP_ETL_WAREHOUSE, else ./warehouse.duckdb."""
    return explicit or os.environ.get("OMOP_ETL_WAREHOUSE") or DEFAULT_WAREHOUSE_FILE


def work_dir() -> Path | None:
    """OMOP_ETL_WORK_DIR: runs' scratch files (see omop_etl.warehouse.work_dir)."""
    value = os.environ.get("OMOP_ETL_WORK_DIR")
    return Path(value) if value else None


def exports_dir() -> Path:
    """OMOP_ETL_EXPORTS: the folder of the sites' export areas, one folder per site
    holding its dated batch folders (default ./exports)."""
    return Path(os.environ.get("OMOP_ETL_EXPORTS", "exports"))


def dashboard_dir() -> Path:
    """OMOP_ETL_DASHBOARD: where the consortium DAG writes the QA dashboard."""
    return Path(os.environ.get("OMOP_ETL_DASHBOARD", "out/dashboard"))


def demo_key() -> bool:
    """OMOP_ETL_DEMO_KEY=1: sites without a secret use the public demo key. For the
    synthetic demo only (the demo sets it for its own runs)."""
    return os.environ.get("OMOP_ETL_DEMO_KEY") == "1"


def lock_wait() -> float:
    """OMOP_ETL_LOCK_WAIT: seconds to wait for a DuckDB warehouse file another process
    holds (one writer at a time), default 300; then the error is transient."""
    return float(os.environ.get("OMOP_ETL_LOCK_WAIT", "300"))


def duckdb_memory_limit() -> str:
    """Memory cap for the embedded engine (OMOP_ETL_MEMORY_LIMIT, default 2GB)."""
    return os.environ.get("OMOP_ETL_MEMORY_LIMIT", "2GB")


def workers() -> int:
    """Statements a run executes at the same time: files read, transform steps of a phase
    (OMOP_ETL_WORKERS, default 2)."""
    return max(1, int(os.environ.get("OMOP_ETL_WORKERS", "2")))


def duckdb_threads() -> int | None:
    value = os.environ.get("OMOP_ETL_THREADS")
    return int(value) if value else None


def check_site_name(name: str) -> str:
    """A site name becomes part of schema names, so it must be a plain identifier.

    >>> check_site_name("synthea")
    'synthea'
    """
    if not _SITE_NAME.match(name):
        from omop_etl.errors import EtlError

        raise EtlError(
            f"site name {name!r} is not valid: use lowercase letters, digits and '_', "
            "starting with a letter (at most 31 characters)"
        )
    return name


def cdm_schema(site: str) -> str:
    return f"cdm_{check_site_name(site)}"


def stage_schema(site: str) -> str:
    return f"stage_{check_site_name(site)}"
