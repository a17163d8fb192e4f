"""Dashboard fixtures: a synthetic results warehouse and the dashboard built from it."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from quality.dashboard import build_dashboard

from .fixtures import make_results_warehouse


@pytest.fixture(scope="session")
def results_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DuckDB warehouse whose results schema holds 2 sites x 2 runs (one blocked)."""
    return make_results_warehouse(tmp_path_factory.mktemp("results") / "warehouse.duckdb")


@pytest.fixture(scope="session")
def dashboard(results_warehouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dashboard of ``results_warehouse`` (built over a read-only connection): index.html."""
    con = duckdb.connect(str(results_warehouse), read_only=True)
    try:
        return build_dashboard(con, tmp_path_factory.mktemp("dashboard"))
    finally:
        con.close()
