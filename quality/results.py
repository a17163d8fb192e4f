"""The ``results`` schema: what QA staff and the dashboard read about every run.

Everything here is counts, rules, check outcomes and source *codes* — never patient
ids or row contents — so analysts and QA may read ``results`` while ``stage_<site>``
stays closed to them. One run is one site batch processed once (``run_id``).
"""

from __future__ import annotations

import duckdb

SCHEMA = "results"

TABLES: dict[str, str] = {
    # one row per run: published, blocked (and why), or failed; the vocabulary release
    # and the code maps it was mapped with
    "run_log": """
        site varchar, batch_id varchar, status varchar, finished_at timestamp,
        rows_read bigint, rows_loaded bigint, rows_rejected bigint, rows_filtered bigint,
        message varchar, run_id varchar, started_at timestamp,
        vocabulary_release varchar, code_maps_digest varchar""",
    # DQD-style check results, one row per run and check (see quality/checks.py)
    "check_results": """
        run_id varchar, site varchar, batch_id varchar,
        check_id varchar, check_name varchar, check_level varchar, check_description varchar,
        cdm_table_name varchar, cdm_field_name varchar, concept_id varchar,
        unit_concept_id varchar, sql_file varchar, category varchar, subcategory varchar,
        context varchar, severity varchar, threshold_value double,
        num_violated_rows bigint, pct_violated_rows double, num_denominator_rows bigint,
        status varchar, not_applicable_reason varchar, error varchar,
        execution_time double, examples varchar, query_text varchar""",
    # the run's checks as DataQualityDashboard writes them (its viewer opens this JSON)
    "dqd_json": "run_id varchar, site varchar, batch_id varchar, document varchar",
    # Great Expectations contract results on staging, one row per run and expectation
    "contract_results": """
        run_id varchar, site varchar, batch_id varchar, suite varchar,
        expectation varchar, column_name varchar, success boolean,
        element_count bigint, unexpected_count bigint, unexpected_percent double,
        details varchar""",
    # rows per CDM table after the run (the trend chart)
    "row_counts": "run_id varchar, site varchar, batch_id varchar, cdm_table varchar, rows bigint",
    # rejected rows (kind 'reject') and kept-but-fixed rows (kind 'flag') by rule
    "reject_counts": """
        run_id varchar, site varchar, batch_id varchar, source_file varchar,
        kind varchar, rule varchar, rows bigint""",
    # clinical rows with a standard concept, per CDM table
    "mapping_coverage": """
        run_id varchar, site varchar, batch_id varchar, cdm_table varchar,
        mapped_rows bigint, rows bigint""",
    # the most frequent unmapped source codes of the run (codes, never values)
    "unmapped_top": """
        run_id varchar, site varchar, batch_id varchar, source_vocabulary_id varchar,
        source_code varchar, source_name varchar, frequency bigint""",
}


def create_tables(con: duckdb.DuckDBPyConnection, schema_sql: str) -> None:
    """The results tables, empty, in another (existing) schema: a run's outbox."""
    for table, columns in TABLES.items():
        con.execute(f"create table {schema_sql}.{table} ({columns})")


def create_results_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the results schema and its tables where missing (columns added to old ones)."""
    con.execute(f"create schema if not exists {SCHEMA}")
    for table, columns in TABLES.items():
        con.execute(f"create table if not exists {SCHEMA}.{table} ({columns})")
        have = {
            row[0]
            for row in con.execute(
                "select column_name from duckdb_columns() where schema_name = ? and table_name = ?",
                [SCHEMA, table],
            ).fetchall()
        }
        for spec in columns.split(","):
            name, sql_type = spec.split()
            if name not in have:
                con.execute(f"alter table {SCHEMA}.{table} add column {name} {sql_type}")
