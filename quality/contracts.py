"""Contract checks on staging with Great Expectations 1.x.

One expectation suite per staging table a site fills, generated from its spec:
required fields are present, codes have the form of their code system, quantities
and days' supply are in range, mapped concept ids are ones the spec's value maps can
produce. (Clinical dates outside the spec's ``date_window`` are already each row's
defect at extraction: rejected, or dropped and flagged, and counted in the batch's
reject rate.) A spec adds its own under
``contracts:`` (any Great Expectations expectation, by its snake_case name, with
its arguments). A batch with a failed expectation is not published.

The suites validate the batch's accepted staging rows (rejected rows already have
their rule) with GE's pandas engine: expectations on single values see each
column's distinct values with their row counts, aggregate ones every row in chunks
of ``CHUNK_ROWS``; per expectation the unexpected rows are counted and compared
with its ``mostly``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import duckdb

from omop_etl.spec import SiteSpec
from omop_etl.sql import quote_ident
from omop_etl.staging import TARGETS

CHUNK_ROWS = 1_000_000

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
            if rule.map and f.type == "int":
                allowed = sorted(
                    {int(v) for v in spec.value_maps[rule.map].values()}
                    | ({int(rule.default)} if rule.default is not None else set())
                )
                # the values this entry's map gives, on this entry's rows (other entries
                # of the target may map the field with other maps)
                _add(
                    suite,
                    "expect_column_values_to_be_in_set",
                    column=name,
                    value_set=allowed,
                    row_condition=("source_file", fs.name),
                )
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
    """Validate the batch's accepted staging rows against the site's suites.

    Expectations on single values (GE's column map expectations: not null, between,
    regex, in set ...) are validated on the column's distinct values with their row
    counts (dates by day), and the unexpected values' rows are counted: exact, and a
    few thousand values instead of millions of rows. Other expectations (aggregates
    such as a column mean, table row counts) see every row, in chunks.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations.expectation import ColumnMapExpectation

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas("staging")
    results: list[ContractResult] = []
    for target, expectations in suites(spec, today).items():
        name = f"{spec.site}.{target}"
        table = f"{work_sql}.{quote_ident(target)}"
        ge = [_ge_expectation(e) for e in expectations]
        counts: dict[int, tuple[int, int, bool]] = {}
        groups: dict[tuple[str, ...], list[int]] = {}
        whole: list[int] = []
        for i, (e, g) in enumerate(zip(expectations, ge, strict=True)):
            if isinstance(g, ColumnMapExpectation) and e.column:
                groups.setdefault((e.column, *sorted(_condition_columns([e]))), []).append(i)
            else:
                whole.append(i)
        for number, (columns, members) in enumerate(groups.items()):
            only_nullness = all(expectations[i].type in _NULLNESS for i in members)
            frame = _distinct_values(con, table, target, columns, batch_id, only_nullness)
            outcome = _validate(
                context, source, f"{name}.{number}", [ge[i] for i in members], frame
            )
            for i, r in zip(members, outcome, strict=True):
                counts[i] = _weighted(expectations[i], r, frame)
        if whole:
            for i, r in _validate_rows(
                context, source, name, expectations, ge, whole, con, table, batch_id
            ):
                counts[i] = r
        for i, expectation in enumerate(expectations):
            n, bad, ok = counts[i]
            mostly = float(expectation.kwargs.get("mostly", 1.0))
            success = ok and (n == 0 or (n - bad) / n >= mostly)
            details = json.dumps(expectation.kwargs, sort_keys=True, default=str)
            results.append(ContractResult(name, expectation, success, n, bad, details))
    return results


_ROWS = "_rows"  # the row count of a distinct value
# expectations that only ask whether a value is there: an id column is then reduced to
# present / NULL instead of millions of distinct ids
_NULLNESS = {"expect_column_values_to_not_be_null", "expect_column_values_to_be_null"}


def _distinct_values(
    con, table: str, target: str, columns: tuple[str, ...], batch_id: str, only_nullness: bool
):
    """The distinct values (dates by day) of ``columns`` with their row counts, as pandas."""
    values = []
    for c in columns:
        ftype = TARGETS[target][c].type if c in TARGETS[target] else "text"
        ref = quote_ident(c)
        if only_nullness and c == columns[0]:
            ref = f"case when {ref} is not null then 'present' end"
        elif ftype in ("date", "timestamp"):
            ref = f"cast(date_trunc('day', {ref}) as timestamp)"
        values.append(f"{ref} as {quote_ident(c)}")
    sql = (
        f"select {', '.join(values)}, count(*) as {_ROWS} from {table} "
        "where batch_id = $batch and reject is null group by all"
    )
    return con.sql(sql, params={"batch": batch_id}).df()


def _validate(context, source, name: str, expectations: list, frame) -> list:
    """GE's results of ``expectations`` on ``frame``, in their order (every index listed)."""
    import great_expectations as gx

    suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
    definition = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("all")
    outcome = definition.get_batch(batch_parameters={"dataframe": frame}).validate(
        suite, result_format={"result_format": "COMPLETE"}
    )
    by_id = {r.expectation_config.id: r for r in outcome.results}
    return [by_id[e.id] for e in suite.expectations]


def _weighted(expectation: Expectation, result, frame) -> tuple[int, int, bool]:
    """(rows in the expectation's domain, unexpected rows, ok) from a distinct-value result."""
    domain = frame
    condition = expectation.kwargs.get("row_condition")
    if isinstance(condition, tuple):
        domain = domain[domain[condition[0]] == condition[1]]
    if expectation.type != "expect_column_values_to_not_be_null":
        domain = domain[domain[expectation.column].notna()]
    unexpected = result.result.get("unexpected_index_list")
    if unexpected is None:  # GE could not evaluate it: no counts, its verdict stands
        return int(domain[_ROWS].sum()), 0, bool(result.success)
    labels = [u if not isinstance(u, dict) else u.get("index") for u in unexpected]
    bad = int(frame.loc[labels, _ROWS].sum()) if labels else 0
    return int(domain[_ROWS].sum()), bad, True


def _validate_rows(context, source, name, expectations, ge, members, con, table, batch_id):
    """Expectations that need every row (aggregates), chunk by chunk."""
    columns = sorted({expectations[i].column for i in members if expectations[i].column})
    select = ", ".join(quote_ident(c) for c in columns) or "1 as one"
    reader = con.sql(
        f"select {select} from {table} where batch_id = $batch and reject is null",
        params={"batch": batch_id},
    ).to_arrow_reader(CHUNK_ROWS)
    totals = {i: [0, 0, True] for i in members}
    for number, chunk in enumerate(reader):
        outcome = _validate(
            context, source, f"{name}.rows.{number}", [ge[i] for i in members], chunk.to_pandas()
        )
        for i, r in zip(members, outcome, strict=True):
            n, bad = r.result.get("element_count"), r.result.get("unexpected_count")
            if n is None or bad is None:
                totals[i][2] = totals[i][2] and bool(r.success)
            else:
                totals[i][0] += int(n)
                totals[i][1] += int(bad)
    return [(i, tuple(t)) for i, t in totals.items()]


def _condition_columns(expectations: list[Expectation]) -> set[str]:
    return {
        e.kwargs["row_condition"][0]
        for e in expectations
        if isinstance(e.kwargs.get("row_condition"), tuple)
    }
