"""Contract checks on staging with Great Expectations 1.x.

One expectation suite per staging table a site fills, generated from its spec:
required fields are present, dates fall in a plausible window, codes have the form
of their code system, quantities and days' supply are in range, mapped concept ids
are ones the spec's value maps can produce. A spec adds its own under
``contracts:`` (any Great Expectations expectation, by its snake_case name, with
its arguments). A batch with a failed expectation is not published.

The suites validate the batch's accepted staging rows (rejected rows already have
their rule), streamed from DuckDB in chunks of ``CHUNK_ROWS`` rows through GE's
pandas engine, so memory stays bounded; per expectation the unexpected counts of
the chunks are added up and compared with its ``mostly``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import duckdb

from omop_etl.spec import SiteSpec
from omop_etl.sql import quote_ident
from omop_etl.staging import TARGETS

CHUNK_ROWS = 1_000_000
EARLIEST = datetime(1900, 1, 2)  # 1900-01-01 is a sentinel, rejected before contracts run

# The form of codes per code system (KCD-7 and EDI in their canonical form); a spec's
# `code_forms` adds systems or replaces these.
CODE_FORMS = {
    "KCD7": r"^[A-Z][0-9]{2}[0-9A-Z]{0,3}$",
    "EDI": r"^[A-Z0-9]{5,10}$",
    "LOINC": r"^[0-9]{1,7}-[0-9]$",
    "SNOMED": r"^[0-9]{6,18}$",
    "RxNorm": r"^[0-9]{1,9}$",
    "CVX": r"^[0-9]{1,3}$",
}


@dataclass(frozen=True)
class Expectation:
    """One expectation of a suite: GE's snake_case type and its arguments."""

    type: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def column(self) -> str | None:
        return self.kwargs.get("column")


@dataclass
class ContractResult:
    suite: str
    expectation: Expectation
    success: bool
    element_count: int
    unexpected_count: int
    details: str = ""

    @property
    def unexpected_percent(self) -> float:
        return 100.0 * self.unexpected_count / self.element_count if self.element_count else 0.0


def suites(spec: SiteSpec, today: date) -> dict[str, list[Expectation]]:
    """The expectation suites of a site, per staging target it fills."""
    horizon = datetime(today.year + 1, today.month, 1)
    out: dict[str, list[Expectation]] = {}
    for fs in spec.files:
        if not fs.target:
            continue
        fields = TARGETS[fs.target]
        suite = out.setdefault(fs.target, [])
        rules = {r.field: r for r in fs.columns}

        for name, f in fields.items():
            rule = rules.get(name)
            if rule is None:
                continue
            if f.required:
                _add(suite, "expect_column_values_to_not_be_null", column=name)
            if f.type in ("date", "timestamp") and rule.const is None:
                _add(
                    suite,
                    "expect_column_values_to_be_between",
                    column=name,
                    min_value=EARLIEST,
                    max_value=horizon,
                    mostly=0.999,
                )
            if rule.map and f.type == "int":
                allowed = sorted(
                    {int(v) for v in spec.value_maps[rule.map].values()}
                    | ({int(rule.default)} if rule.default is not None else set())
                )
                _add(suite, "expect_column_values_to_be_in_set", column=name, value_set=allowed)
        if fs.target == "event":
            for system, form in {**CODE_FORMS, **spec.code_forms}.items():
                _add(
                    suite,
                    "expect_column_values_to_match_regex",
                    column="code",
                    regex=form,
                    mostly=0.99,
                    row_condition=("code_system", system),
                )
            if "days_supply" in rules:
                _add(
                    suite,
                    "expect_column_values_to_be_between",
                    column="days_supply",
                    min_value=0,
                    max_value=365,
                    mostly=0.999,
                )
            if "quantity" in rules:
                _add(suite, "expect_column_values_to_be_between", column="quantity", min_value=0)
    for extra in spec.contracts:
        kwargs = {k: v for k, v in extra.items() if k not in ("target", "expectation")}
        out.setdefault(extra["target"], []).append(Expectation(extra["expectation"], kwargs))
    return out


def _add(suite: list[Expectation], kind: str, **kwargs: Any) -> None:
    expectation = Expectation(kind, kwargs)
    if expectation not in suite:
        suite.append(expectation)


def _ge_expectation(expectation: Expectation):
    """The GE expectation object; a row condition (column, value) means column == value."""
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    name = "".join(part.capitalize() for part in expectation.type.split("_"))
    try:
        kind = getattr(gx.expectations, name)
    except AttributeError:
        raise ValueError(f"no Great Expectations expectation named {expectation.type!r}") from None
    kwargs = dict(expectation.kwargs)
    if isinstance(kwargs.get("row_condition"), tuple):
        column, value = kwargs["row_condition"]
        kwargs["row_condition"] = Column(column) == value
    return kind(**kwargs)


def run_contracts(
    con: duckdb.DuckDBPyConnection,
    spec: SiteSpec,
    work_sql: str,
    batch_id: str,
    today: date,
) -> list[ContractResult]:
    """Validate the batch's accepted staging rows against the site's suites."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    source = context.data_sources.add_pandas("staging")
    results: list[ContractResult] = []
    for target, expectations in suites(spec, today).items():
        name = f"{spec.site}.{target}"
        columns = sorted(
            {e.column for e in expectations if e.column}
            | {"code_system"} & set(TARGETS[target])
            | _condition_columns(expectations)
        )
        suite = context.suites.add(
            gx.ExpectationSuite(name=name, expectations=[_ge_expectation(e) for e in expectations])
        )
        ids = [e.id for e in suite.expectations]
        batch_definition = source.add_dataframe_asset(
            name=target
        ).add_batch_definition_whole_dataframe("batch")
        counts = [[0, 0, True] for _ in expectations]  # elements, unexpected, ok without counts
        select = ", ".join(quote_ident(c) for c in columns) or "1 as one"
        reader = con.sql(
            f"select {select} from {work_sql}.{quote_ident(target)} "
            "where batch_id = $batch and reject is null",
            params={"batch": batch_id},
        ).to_arrow_reader(CHUNK_ROWS)
        for chunk in reader:
            frame = chunk.to_pandas()
            outcome = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(
                suite, result_format="SUMMARY"
            )
            by_id = {r.expectation_config.id: r for r in outcome.results}
            for i, expectation_id in enumerate(ids):
                r = by_id[expectation_id]
                n = r.result.get("element_count")
                bad = r.result.get("unexpected_count")
                if n is None or bad is None:  # a table-level expectation: no counts
                    counts[i][2] = counts[i][2] and bool(r.success)
                else:
                    counts[i][0] += int(n)
                    counts[i][1] += int(bad)
        for expectation, (n, bad, ok) in zip(expectations, counts, strict=True):
            mostly = float(expectation.kwargs.get("mostly", 1.0))
            success = ok and (n == 0 or (n - bad) / n >= mostly)
            details = json.dumps(expectation.kwargs, sort_keys=True, default=str)
            results.append(ContractResult(name, expectation, success, n, bad, details))
    return results


def _condition_columns(expectations: list[Expectation]) -> set[str]:
    return {
        e.kwargs["row_condition"][0]
        for e in expectations
        if isinstance(e.kwargs.get("row_condition"), tuple)
    }
