"""The DataQualityDashboard (DQD v2.8.4) check catalogue, generated from its CSVs, run on DuckDB.

The checks are not typed in by hand: each row of ``dqd/OMOP_CDMv5.4_Check_Descriptions.csv``
names a check type, its level (TABLE, FIELD, CONCEPT), its Kahn context, category and
subcategory, its severity and an ``evaluationFilter`` (``isRequired=='Yes'``,
``isForeignKey=='Yes' & fkDomain!= ''``, ...) that selects the rows of the table-, field-
or concept-level CSV it applies to. One check is made per check type and selected row;
its threshold is the row's ``<checkName>Threshold`` column and its notes the
``<checkName>Notes`` column, as DQD does. The SQL is ours, written for DuckDB (DQD's
OHDSI-SQL files were read to learn what each check counts; none is copied).

Check types
-----------
The CSV of DQD v2.8.4 has 27 check types. Three are deprecated: DQD v2.8.4's
``executeDqChecks`` warns "DEPRECATION WARNING" when they run, its NEWS (2.6.0) says they
are replaced by new checks and will go in a future major release, and its check index
documents them no more. They are left out unless ``catalogue(include_deprecated=True)``:

* ``plausibleDuringLife`` -- reimplemented by DQD as ``plausibleBeforeDeath``;
* ``plausibleTemporalAfter`` -- reimplemented as ``plausibleAfterBirth`` and
  ``plausibleStartBeforeEnd`` (a clearer, more complete treatment of temporality);
* ``plausibleGender`` -- reimplemented as ``plausibleGenderUseDescendants`` (more readable
  results, faster).

(``measureConditionEraCompleteness`` and ``measureObservationPeriodOverlap`` are not
deprecated and are generated, although the issue that asked for this module left them
out of its list and named ``plausibleTemporalAfter`` and ``plausibleGender`` instead.)

The other 24 (``CHECK_TYPES``) are generated. The vocabulary tables DQD skips by default
(its ``tablesToExclude``: CONCEPT, VOCABULARY, CONCEPT_ANCESTOR, CONCEPT_RELATIONSHIP,
CONCEPT_CLASS, CONCEPT_SYNONYM, RELATIONSHIP, DOMAIN) are skipped here too;
SOURCE_TO_CONCEPT_MAP and DRUG_STRENGTH are checked in the vocabulary schema; COHORT and
COHORT_DEFINITION (DQD's cohort schema) in the CDM schema, where this pipeline keeps them.

Concept-level plausible values
------------------------------
DQD v2.8.4 lists ``plausibleValueLow``/``plausibleValueHigh`` only as FIELD checks, but its
concept-level CSV carries value ranges per concept and unit (and DQD ships
``concept_plausible_value_low/high.sql`` for them). Here they are CONCEPT checks too
(``sqlFile`` ``concept_plausible_value_low.sql`` / ``..._high.sql``; same Kahn labels and
severity as the field checks; description ``CONCEPT_VALUE_DESCRIPTIONS``). Rows with a
``plausibleValueLow``/``plausibleValueHigh`` come from DQD's concept-level CSV plus
``quality/plausible_values.csv``, our file. Its columns are DQD's concept-level ones:

* ``cdmTableName``, ``cdmFieldName`` -- ``MEASUREMENT``, ``MEASUREMENT_CONCEPT_ID``;
* ``conceptId``, ``conceptName`` -- the LOINC concept of each lab of the demo catalogue
  (``omop_etl/demo/catalogue.py``, ``LABS``), as in ``mappings/vocabulary/demo/CONCEPT.csv``;
* ``unitConceptId``, ``unitConceptName`` -- the lab's UCUM unit concept (same file);
* ``plausibleValueLow`` = 0 (no negative concentration, count or activity) and
  ``plausibleValueHigh`` = the lab's ``plausible_high``, the physiological limit above
  which the demo plants its implausible values; both thresholds 0 (any such value
  fails the check: these limits are far outside any real result) and a note.

A row of ours replaces DQD's row for the same table, field, concept and unit.

Running
-------
Every check has SQL returning one row ``(num_violated_rows, num_denominator_rows)``,
written against the placeholders ``@cdm`` and ``@vocab`` (``Check.query(cdm, vocab)``
fills them in), and, where it makes sense, SQL for up to 5 example values of violating
rows: the source value (``*_source_value``) that belongs to the checked field or, for
value checks, the violating value itself (dates as their year); never
``person_source_value``, a provider, care site or location source value, or an id.

``run_checks`` runs them on ``workers`` ``con.cursor()`` connections (made in the calling
thread, each used by one worker thread at a time). Checks that read the same rows are
run as one query: all the one-scan checks of a table (every isRequired,
measureValueCompleteness, cdmDatatype, ... of its fields) in one aggregate;
the foreign-key, domain, class and standard-concept checks of a column in one query over
the column's value counts; the unit checks of a table over its (concept, unit) counts.
When such a query fails, its checks are run one by one, so each gets its own error.

Statuses follow DQD v2.8.4 (``evaluateThresholds.R``, ``calculateNotApplicableStatus.R``)
in its priority order: ``Error`` (the SQL failed: the error text is kept), ``Not
Applicable``, ``Failed`` (``pct_violated_rows * 100 > threshold``, or any violated row
when the threshold is 0 or missing), ``Passed``. As in DQD:

* cdmTable and cdmField fail (not error) when the table or column does not exist (an
  error matching DQD's "missing" patterns, plus DuckDB's "does not have a column named");
* a check is not applicable when its table does not exist or is empty, its field does
  not exist or is not populated (every value NULL), or, for a concept check, no row has
  the concept (and unit) -- with DQD's exceptions: cdmTable never, cdmField and
  measurePersonCompleteness only when the table is missing, measureValueCompleteness not
  for an unpopulated field, measureConditionEraCompleteness when CONDITION_OCCURRENCE is
  missing or empty. A check whose SQL failed because its table or field is missing keeps
  status ``Error`` and gets the not-applicable reason too (DQD flags both);
* the facts come from the cdmTable, cdmField and measureValueCompleteness results; when
  ``checks`` lacks some of them they are run as well (not returned), so a check's status
  does not depend on which other checks were asked for.

``dqd_json`` writes the results in the JSON shape of DQD's ``executeDqChecks`` that its
Shiny viewer reads (see ``VIEWER_FIELDS``).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import functools
import json
import queue
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import duckdb

DQD_VERSION = "2.8.4"
CDM_VERSION = "5.4"
HERE = Path(__file__).resolve().parent
DQD_DIR = HERE / "dqd"
CHECK_DESCRIPTIONS_FILE = DQD_DIR / f"OMOP_CDMv{CDM_VERSION}_Check_Descriptions.csv"
TABLE_LEVEL_FILE = DQD_DIR / f"OMOP_CDMv{CDM_VERSION}_Table_Level.csv"
FIELD_LEVEL_FILE = DQD_DIR / f"OMOP_CDMv{CDM_VERSION}_Field_Level.csv"
CONCEPT_LEVEL_FILE = DQD_DIR / f"OMOP_CDMv{CDM_VERSION}_Concept_Level.csv"
PLAUSIBLE_VALUES_FILE = HERE / "plausible_values.csv"

DEPRECATED_CHECKS: Mapping[str, str] = {
    "plausibleDuringLife": "reimplemented by DQD v2.8.4 as plausibleBeforeDeath",
    "plausibleTemporalAfter": (
        "reimplemented by DQD v2.8.4 as plausibleAfterBirth and plausibleStartBeforeEnd"
    ),
    "plausibleGender": "reimplemented by DQD v2.8.4 as plausibleGenderUseDescendants",
}
CHECK_TYPES = (
    "cdmTable",
    "measurePersonCompleteness",
    "measureConditionEraCompleteness",
    "measureObservationPeriodOverlap",
    "cdmField",
    "isRequired",
    "cdmDatatype",
    "isPrimaryKey",
    "isForeignKey",
    "fkDomain",
    "fkClass",
    "isStandardValidConcept",
    "measureValueCompleteness",
    "standardConceptRecordCompleteness",
    "sourceConceptRecordCompleteness",
    "sourceValueCompleteness",
    "plausibleValueLow",
    "plausibleValueHigh",
    "withinVisitDates",
    "plausibleAfterBirth",
    "plausibleBeforeDeath",
    "plausibleStartBeforeEnd",
    "plausibleGenderUseDescendants",
    "plausibleUnitConceptIds",
)
# DQD's default tablesToExclude (executeDqChecks)
DEFAULT_TABLES_TO_EXCLUDE = (
    "CONCEPT",
    "VOCABULARY",
    "CONCEPT_ANCESTOR",
    "CONCEPT_RELATIONSHIP",
    "CONCEPT_CLASS",
    "CONCEPT_SYNONYM",
    "RELATIONSHIP",
    "DOMAIN",
)
# Descriptions of the concept-level value checks (DQD v2.8.4 has no row for them).
CONCEPT_VALUE_DESCRIPTIONS = {
    "plausibleValueLow": (
        "For CONCEPT_ID @conceptId (@conceptName) with UNIT_CONCEPT_ID @unitConceptId "
        "(@unitConceptName), the number and percent of records whose VALUE_AS_NUMBER is "
        "below @plausibleValueLow."
    ),
    "plausibleValueHigh": (
        "For CONCEPT_ID @conceptId (@conceptName) with UNIT_CONCEPT_ID @unitConceptId "
        "(@unitConceptName), the number and percent of records whose VALUE_AS_NUMBER is "
        "above @plausibleValueHigh."
    ),
}

PASSED, FAILED, NOT_APPLICABLE, ERROR = "Passed", "Failed", "Not Applicable", "Error"
STATUSES = (PASSED, FAILED, NOT_APPLICABLE, ERROR)
EXAMPLE_LIMIT = 5

# The CheckResults fields of the JSON that DQD's viewer (inst/shinyApps) reads.
VIEWER_FIELDS = (
    "checkId",
    "checkName",
    "checkLevel",
    "checkDescription",
    "cdmTableName",
    "cdmFieldName",
    "conceptId",
    "unitConceptId",
    "category",
    "subcategory",
    "context",
    "numViolatedRows",
    "pctViolatedRows",
    "numDenominatorRows",
    "executionTime",
    "notApplicable",
    "notApplicableReason",
    "failed",
    "passed",
    "isError",
    "error",
    "thresholdValue",
    "notesValue",
    "queryText",
)
# Every field of a DQD v2.8.4 CheckResults object, in DQD's order.
JSON_FIELDS = (
    "numViolatedRows",
    "pctViolatedRows",
    "numDenominatorRows",
    "executionTime",
    "queryText",
    "checkName",
    "checkLevel",
    "checkDescription",
    "cdmTableName",
    "cdmFieldName",
    "conceptId",
    "unitConceptId",
    "sqlFile",
    "category",
    "subcategory",
    "context",
    "warning",
    "error",
    "checkId",
    "failed",
    "passed",
    "isError",
    "notApplicable",
    "notApplicableReason",
    "thresholdValue",
    "notesValue",
)

# An error DQD reads as "table or field missing" (evaluateThresholds.R), plus DuckDB's
# wording for a qualified column that is not there
_MISSING_ERROR = re.compile(
    "does not exist|missing|not found|invalid object name|invalid column name|ORA-00942"
    "|no such table|no such column|does not have a column named",
    re.IGNORECASE,
)
_VOCAB_FK_TABLES = {"CONCEPT", "DOMAIN", "CONCEPT_CLASS", "VOCABULARY", "RELATIONSHIP"}
# Source values that identify a person, provider, care site or location: never examples.
_NO_EXAMPLE_COLUMNS = {
    "person_source_value",
    "provider_source_value",
    "care_site_source_value",
    "location_source_value",
}
# DQD's concept record completeness also counts a NULL concept whose source value is
# given, for these fields (field_concept_record_completeness.sql).
_COMPLETENESS_SOURCE = {
    "unit_concept_id": "unit_source_value",
    "unit_source_concept_id": "unit_source_value",
    "admitted_from_concept_id": "admitted_from_source_value",
    "admitting_source_concept_id": "admitting_source_value",
    "discharged_to_concept_id": "discharged_to_source_value",
    "discharge_to_concept_id": "discharge_to_source_value",
    "condition_status_concept_id": "condition_status_source_value",
    "route_concept_id": "route_source_value",
    "modifier_concept_id": "modifier_source_value",
    "qualifier_concept_id": "qualifier_source_value",
    "cause_concept_id": "cause_source_value",
    "cause_source_concept_id": "cause_source_value",
    "anatomic_site_concept_id": "anatomic_site_source_value",
    "disease_status_concept_id": "disease_status_source_value",
    "country_concept_id": "country_source_value",
    "place_of_service_concept_id": "place_of_service_source_value",
    "specialty_concept_id": "specialty_source_value",
    "specialty_source_concept_id": "specialty_source_value",
    "payer_concept_id": "payer_source_value",
    "payer_source_concept_id": "payer_source_value",
    "plan_concept_id": "plan_source_value",
    "plan_source_concept_id": "plan_source_value",
    "sponsor_concept_id": "sponsor_source_value",
    "sponsor_source_concept_id": "sponsor_source_value",
    "stop_reason_concept_id": "stop_reason_source_value",
    "stop_reason_source_concept_id": "stop_reason_source_value",
}
_GENDER_CONCEPTS = {"Male": 8507, "Female": 8532}
# Check fields stored in results.check_results
_RECORDED = (
    "check_id",
    "check_name",
    "check_level",
    "check_description",
    "cdm_table_name",
    "cdm_field_name",
    "concept_id",
    "unit_concept_id",
    "sql_file",
    "category",
    "subcategory",
    "context",
    "severity",
    "threshold_value",
)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLACEHOLDER = re.compile(r"@(cdm|vocab)\b")
_PARAM = re.compile(r"@([A-Za-z_]\w*)")
_FILTER_TERM = re.compile(r"^\s*(\w+)\s*(==|!=)\s*'([^']*)'\s*$")


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Check:
    """One DQD check: its identity and labels as DQD reports them, its threshold and SQL.

    ``sql`` and ``examples_sql`` are DuckDB SQL with the placeholders ``@cdm`` and
    ``@vocab`` for the schemas (``query``/``examples_query`` fill them in). ``sql``
    returns one row ``(num_violated_rows, num_denominator_rows)``; ``examples_sql`` up to
    5 distinct example values of violating rows, or is None where there is nothing to
    show. ``threshold_value`` is a percent (None: DQD's NA, treated like 0).
    """

    check_id: str
    check_name: str
    check_level: str
    check_description: str
    cdm_table_name: str
    cdm_field_name: str | None
    concept_id: str | None
    unit_concept_id: str | None
    sql_file: str
    category: str
    subcategory: str | None
    context: str
    severity: str
    threshold_value: float | None
    notes_value: str | None
    sql: str
    examples_sql: str | None
    # checks with the same `source` are run as one aggregate query (`sql` is
    # "select <violated>, <denominator> from <source>")
    source: str | None = field(default=None, repr=False)
    violated: str | None = field(default=None, repr=False)
    denominator: str | None = field(default=None, repr=False)

    def query(self, cdm: str = "cdm", vocab: str = "vocab") -> str:
        """``sql`` for the given CDM and vocabulary schemas (names or quoted SQL prefixes)."""
        return _render(self.sql, cdm, vocab)

    def examples_query(self, cdm: str = "cdm", vocab: str = "vocab") -> str | None:
        """``examples_sql`` for the given schemas, or None."""
        return None if self.examples_sql is None else _render(self.examples_sql, cdm, vocab)


@dataclass(frozen=True, kw_only=True)
class CheckResult(Check):
    """A check's outcome: DQD's numbers, the status, and example values of violating rows."""

    num_violated_rows: int | None
    pct_violated_rows: float | None  # 0..1
    num_denominator_rows: int | None
    status: str  # Passed | Failed | Not Applicable | Error
    not_applicable_reason: str | None
    error: str | None
    execution_time: float  # seconds
    examples: list[str]
    query_text: str

    def record(self) -> dict[str, Any]:
        """The columns of ``results.check_results`` but run_id, site and batch_id.

        ``examples`` is a JSON list (what the QA dashboard reads).
        """
        values = {f.name: getattr(self, f.name) for f in fields(Check) if f.name in _RECORDED}
        return {
            **values,
            "num_violated_rows": self.num_violated_rows,
            "pct_violated_rows": self.pct_violated_rows,
            "num_denominator_rows": self.num_denominator_rows,
            "status": self.status,
            "not_applicable_reason": self.not_applicable_reason,
            "error": self.error,
            "execution_time": self.execution_time,
            "examples": json.dumps(self.examples, ensure_ascii=False),
            "query_text": self.query_text,
        }

    @property
    def is_error(self) -> bool:
        return self.status == ERROR

    @property
    def not_applicable(self) -> bool:
        """DQD's notApplicable flag (also set on an Error whose table or field is missing)."""
        return self.not_applicable_reason is not None

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    @property
    def passed(self) -> bool:
        return self.status == PASSED


class CheckResults(list[CheckResult]):
    """The list ``run_checks`` returns, with the run's start and end (local time)."""

    started_at: dt.datetime
    ended_at: dt.datetime


# ---------------------------------------------------------------------------
# SQL text helpers
# ---------------------------------------------------------------------------


def _schema_sql(schema: str) -> str:
    """A schema name as SQL: a plain name is quoted, anything else is taken as SQL already."""
    schema = schema.strip()
    if _IDENT.match(schema):
        return '"' + schema + '"'
    if not schema:
        raise ValueError("empty schema name")
    return schema


def _render(template: str, cdm: str, vocab: str) -> str:
    prefixes = {"cdm": _schema_sql(cdm), "vocab": _schema_sql(vocab)}
    return _PLACEHOLDER.sub(lambda m: prefixes[m.group(1)], template)


def _q(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"not a plain SQL name: {name!r}")
    return f'"{name.lower()}"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _int_list(raw: str, what: str) -> list[int]:
    try:
        return [int(part) for part in raw.split(",") if part.strip()]
    except ValueError as exc:
        raise ValueError(f"{what}: {raw!r} is not a list of concept ids") from exc


def _number(raw: str, what: str) -> str:
    try:
        float(raw)
    except ValueError as exc:
        raise ValueError(f"{what}: {raw!r} is not a number") from exc
    return raw


def _plausible_value_sql(raw: str, what: str) -> str:
    """A DQD plausible value (a number or one of its SQL Server date expressions) in DuckDB."""
    text = raw.strip()
    compact = re.sub(r"\s+", "", text).upper()
    m = re.fullmatch(r"'(\d{4})(\d{2})(\d{2})'", text)
    if m:
        return f"date '{m.group(1)}-{m.group(2)}-{m.group(3)}'"
    if compact == "DATEADD(DD,1,GETDATE())":
        return "(current_date + 1)"
    if compact == "YEAR(GETDATE())+1":
        return "(year(current_date) + 1)"
    return _number(text, what)


def _describe(template: str, values: Mapping[str, str]) -> str:
    """DQD's description: @parameters replaced by the row's values in upper case."""
    upper = {k: v.upper() for k, v in values.items() if v != ""}
    return _PARAM.sub(lambda m: upper.get(m.group(1), m.group(0)), template).strip()


def _check_id(*parts: str | None) -> str:
    kept = [p.replace(" ", "") for p in parts if p is not None and p.replace(" ", "") != ""]
    return "_".join(kept).lower()


# ---------------------------------------------------------------------------
# The CSVs
# ---------------------------------------------------------------------------


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return [
            {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            for row in csv.DictReader(fh)
        ]


def _evaluation_filter(expression: str) -> Callable[[Mapping[str, str]], bool]:
    """DQD's evaluationFilter (``a=='Yes' & b!=''``); an empty value is R's NA: no match."""
    terms = []
    for part in expression.split("&"):
        m = _FILTER_TERM.match(part)
        if not m:
            raise ValueError(f"unsupported evaluationFilter {expression!r}")
        terms.append(m.groups())

    def accepts(row: Mapping[str, str]) -> bool:
        for name, op, value in terms:
            actual = row.get(name, "")
            if actual == "" or (actual == value) != (op == "=="):
                return False
        return True

    return accepts


@dataclass(frozen=True)
class _Spec:
    descriptions: tuple[dict[str, str], ...]
    tables: tuple[dict[str, str], ...]
    fields: tuple[dict[str, str], ...]
    concepts: tuple[dict[str, str], ...]
    table_schema: Mapping[str, str]  # TABLE -> CDM | VOCAB | COHORT
    columns: Mapping[str, Mapping[str, str]]  # TABLE -> field (lower) -> datatype


@functools.cache
def _spec() -> _Spec:
    fields_ = _read_csv(FIELD_LEVEL_FILE)
    tables = _read_csv(TABLE_LEVEL_FILE)
    columns: dict[str, dict[str, str]] = {}
    for row in fields_:
        columns.setdefault(row["cdmTableName"].upper(), {})[row["cdmFieldName"].lower()] = row[
            "cdmDatatype"
        ]
    concepts = _read_csv(CONCEPT_LEVEL_FILE)
    ours = _read_csv(PLAUSIBLE_VALUES_FILE)

    def key(row: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(
            row.get(k, "").upper()
            for k in ("cdmTableName", "cdmFieldName", "conceptId", "unitConceptId")
        )

    replacing = {key(row): row for row in ours}
    merged = []
    for row in concepts:
        if key(row) in replacing:
            merged.append(replacing.pop(key(row)))
        else:
            merged.append(row)
    merged += [row for row in ours if key(row) in replacing]
    return _Spec(
        descriptions=tuple(_read_csv(CHECK_DESCRIPTIONS_FILE)),
        tables=tuple(tables),
        fields=tuple(fields_),
        concepts=tuple(merged),
        table_schema={row["cdmTableName"].upper(): row["schema"].upper() for row in tables},
        columns=columns,
    )


# ---------------------------------------------------------------------------
# SQL of each check type
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sql:
    sql: str | None = None  # a whole query (else source/violated/denominator)
    source: str | None = None
    violated: str | None = None
    denominator: str | None = None
    examples: str | None = None

    def text(self) -> str:
        if self.sql is not None:
            return self.sql
        return (
            f"select {self.violated} as num_violated_rows,\n"
            f"       {self.denominator} as num_denominator_rows\nfrom {self.source}"
        )


class _Ctx:
    """What a check's SQL needs to know about its table, field and row."""

    def __init__(self, spec: _Spec, level: str, row: Mapping[str, str]):
        self.spec, self.level, self.row = spec, level, row
        self.table = row["cdmTableName"].upper()
        self.field = row.get("cdmFieldName", "").lower() or None
        schema = spec.table_schema.get(self.table, "CDM")
        self.schema = "@vocab" if schema == "VOCAB" else "@cdm"
        self.t = f"{self.schema}.{_q(self.table)}"  # the table, qualified

    def has(self, column: str) -> bool:
        return column in self.spec.columns.get(self.table, {})

    def datatype(self, column: str | None = None) -> str:
        return self.spec.columns.get(self.table, {}).get(column or self.field or "", "")

    def is_date(self, column: str | None = None) -> bool:
        return self.datatype(column).lower() in ("date", "datetime")

    @property
    def f(self) -> str:
        assert self.field is not None
        return _q(self.field)

    # ---- examples ------------------------------------------------------

    def main_source(self) -> str | None:
        """The table's own source value column (e.g. condition_source_value)."""
        name = self.table.lower()
        special = {"death": "cause_source_value", "payer_plan_period": "payer_source_value"}
        candidates = [special[name]] if name in special else []
        for suffix in ("_occurrence", "_exposure"):
            name = name.removesuffix(suffix)
        candidates.append(f"{name}_source_value")
        for column in candidates:
            if self.has(column) and column not in _NO_EXAMPLE_COLUMNS:
                return column
        return None

    def field_source(self, column: str | None = None) -> str | None:
        """The source value column that belongs to a field, else the table's own."""
        column = column or self.field or ""
        candidates = []
        if column.endswith("_source_value"):
            candidates.append(column)
        elif column == "value_as_concept_id":
            candidates.append("value_source_value")
        elif column.endswith("_source_concept_id"):
            candidates.append(column.removesuffix("_source_concept_id") + "_source_value")
        elif column.endswith("_concept_id"):
            candidates.append(column.removesuffix("_concept_id") + "_source_value")
        for candidate in candidates:
            if self.has(candidate) and candidate not in _NO_EXAMPLE_COLUMNS:
                return candidate
        return self.main_source()

    def examples(self, value: str | None, frm: str, where: str) -> str | None:
        """Up to 5 distinct values of ``value`` (SQL) among the rows ``where`` holds."""
        if value is None:
            return None
        return (
            f"select distinct cast({value} as varchar) as example\nfrom {frm}\n"
            f"where ({where}) and {value} is not null\norder by 1\nlimit {EXAMPLE_LIMIT}"
        )

    def source_examples(self, frm: str, where: str, column: str | None = None) -> str | None:
        source = self.field_source(column)
        return self.examples(None if source is None else f"t.{_q(source)}", frm, where)

    def value_examples(self, frm: str, where: str) -> str | None:
        """The violating value itself (a date as its year); for an id, the source value."""
        if (self.field or "").endswith("_id") and not (self.field or "").endswith("_concept_id"):
            return self.source_examples(frm, where)
        value = f"t.{self.f}"
        if self.is_date():
            value = f"year(cast({value} as date))"
        return self.examples(value, frm, where)


def _scan(ctx: _Ctx, violated: str, denominator: str, examples: str | None) -> _Sql:
    return _Sql(source=f"{ctx.t} t", violated=violated, denominator=denominator, examples=examples)


def _sql_cdm_table(ctx: _Ctx) -> _Sql:
    return _scan(ctx, "case when count(*) = 0 then 0 else 0 end", "1", None)


def _sql_cdm_field(ctx: _Ctx) -> _Sql:
    return _scan(ctx, f"case when count({ctx.f}) = 0 then 0 else 0 end", "1", None)


def _sql_person_completeness(ctx: _Ctx) -> _Sql:
    return _Sql(
        source=(
            f'@cdm."person" p\nleft join (select distinct t."person_id" from {ctx.t} t) x\n'
            '  on p."person_id" = x."person_id"'
        ),
        violated='count(*) filter (where x."person_id" is null)',
        denominator="count(*)",
    )


def _sql_condition_era_completeness(ctx: _Ctx) -> _Sql:
    return _Sql(
        source=(
            '(select distinct co."person_id" from @cdm."condition_occurrence" co\n'
            ' where co."condition_concept_id" <> 0) co\n'
            f'left join (select distinct t."person_id" from {ctx.t} t) e\n'
            '  on co."person_id" = e."person_id"'
        ),
        violated='count(*) filter (where e."person_id" is null)',
        denominator="count(*)",
    )


def _sql_observation_period_overlap(ctx: _Ctx) -> _Sql:
    start, end = '"observation_period_start_date"', '"observation_period_end_date"'
    return _Sql(
        sql=(
            'select (select count(distinct a."person_id")\n'
            f"        from {ctx.t} a\n"
            f'        join {ctx.t} b on a."person_id" = b."person_id"\n'
            '          and a."observation_period_id" <> b."observation_period_id"\n'
            f"        where (a.{start} <= b.{end} and a.{end} >= b.{start})\n"
            f"           or a.{end} + 1 = b.{start} or b.{end} + 1 = a.{start})"
            " as num_violated_rows,\n"
            f'       (select count(distinct "person_id") from {ctx.t}) as num_denominator_rows'
        )
    )


def _sql_is_required(ctx: _Ctx) -> _Sql:
    where = f"t.{ctx.f} is null"
    return _scan(
        ctx,
        f"count(*) filter (where {where})",
        "count(*)",
        ctx.source_examples(f"{ctx.t} t", where),
    )


def _sql_cdm_datatype(ctx: _Ctx) -> _Sql:
    f = f"t.{ctx.f}"
    where = (
        f"{f} is not null and (try_cast({f} as bigint) is null"
        f" or try_cast({f} as double) <> try_cast({f} as bigint))"
    )
    return _scan(
        ctx,
        f"count(*) filter (where {where})",
        "count(*)",
        ctx.value_examples(f"{ctx.t} t", where),
    )


def _sql_is_primary_key(ctx: _Ctx) -> _Sql:
    where = f"t.{ctx.f} in (select d.{ctx.f} from {ctx.t} d group by d.{ctx.f} having count(*) > 1)"
    return _Sql(
        source=f"(select t.{ctx.f} as v, count(*) as n from {ctx.t} t group by t.{ctx.f}) h",
        violated="coalesce(sum(h.n) filter (where h.v is not null and h.n > 1), 0)",
        denominator="coalesce(sum(h.n), 0)",
        examples=ctx.source_examples(f"{ctx.t} t", where),
    )


def _fk_target(ctx: _Ctx) -> tuple[str, str, str]:
    table = ctx.row["fkTableName"].upper()
    schema = "@vocab" if table in _VOCAB_FK_TABLES else "@cdm"
    return table, f"{schema}.{_q(table)}", _q(ctx.row["fkFieldName"])


def _concept_source(ctx: _Ctx) -> str:
    """A column's value counts joined to its concepts (the FK/domain/class/standard checks)."""
    return (
        f"(select t.{ctx.f} as v, count(*) as n from {ctx.t} t group by t.{ctx.f}) h\n"
        'left join @vocab."concept" c on c."concept_id" = h.v'
    )


def _sql_is_foreign_key(ctx: _Ctx) -> _Sql:
    table, target, key = _fk_target(ctx)
    where = (
        f"t.{ctx.f} is not null and not exists (select 1 from {target} k where k.{key} = t.{ctx.f})"
    )
    examples = ctx.source_examples(f"{ctx.t} t", where)
    if table == "CONCEPT" and key == '"concept_id"':
        return _Sql(
            source=_concept_source(ctx),
            violated=(
                'coalesce(sum(h.n) filter (where h.v is not null and c."concept_id" is null), 0)'
            ),
            denominator="coalesce(sum(h.n), 0)",
            examples=examples,
        )
    return _Sql(
        source=(
            f"(select t.{ctx.f} as v, count(*) as n from {ctx.t} t group by t.{ctx.f}) h\n"
            f"left join (select distinct k.{key} as k from {target} k) fk on fk.k = h.v"
        ),
        violated="coalesce(sum(h.n) filter (where h.v is not null and fk.k is null), 0)",
        denominator="coalesce(sum(h.n), 0)",
        examples=examples,
    )


def _concept_check(ctx: _Ctx, condition: str, denominator: str) -> _Sql:
    """A check on the concept a column points to: ``condition`` over vocab concept ``c``."""
    return _Sql(
        source=_concept_source(ctx),
        violated=f"coalesce(sum(h.n) filter (where {condition}), 0)",
        denominator=denominator,
        examples=ctx.source_examples(
            f'{ctx.t} t\njoin @vocab."concept" c on c."concept_id" = t.{ctx.f}', condition
        ),
    )


def _sql_fk_domain(ctx: _Ctx) -> _Sql:
    domain = _lit(ctx.row["fkDomain"])
    return _concept_check(
        ctx, f'c."concept_id" <> 0 and c."domain_id" not in ({domain})', "coalesce(sum(h.n), 0)"
    )


def _sql_fk_class(ctx: _Ctx) -> _Sql:
    klass = _lit(ctx.row["fkClass"])
    return _concept_check(
        ctx, f'c."concept_id" <> 0 and c."concept_class_id" <> {klass}', "coalesce(sum(h.n), 0)"
    )


def _sql_is_standard_valid_concept(ctx: _Ctx) -> _Sql:
    return _concept_check(
        ctx,
        'c."concept_id" <> 0 and (c."standard_concept" is distinct from \'S\''
        ' or c."invalid_reason" is not null)',
        "coalesce(sum(h.n) filter (where h.v is not null), 0)",
    )


def _sql_measure_value_completeness(ctx: _Ctx) -> _Sql:
    where = f"t.{ctx.f} is null"
    return _scan(
        ctx,
        f"count(*) filter (where {where})",
        "count(*)",
        ctx.source_examples(f"{ctx.t} t", where),
    )


def _sql_concept_record_completeness(ctx: _Ctx) -> _Sql:
    f = f"t.{ctx.f}"
    source = _COMPLETENESS_SOURCE.get(ctx.field or "")
    if ctx.table == "DOSE_ERA" and ctx.field in ("unit_concept_id", "unit_source_concept_id"):
        source = None
    if ctx.table != "PROVIDER" and ctx.field in ("gender_concept_id", "gender_source_concept_id"):
        source = None
    if ctx.table == "PROVIDER" and ctx.field in ("gender_concept_id", "gender_source_concept_id"):
        source = "gender_source_value"
    if source is not None and not ctx.has(source):
        source = None
    where, denominator = f"{f} = 0", f"{f} is not null"
    if source is not None:
        where += f" or ({f} is null and t.{_q(source)} is not null)"
        denominator += f" or t.{_q(source)} is not null"
    return _scan(
        ctx,
        f"count(*) filter (where {where})",
        f"count(*) filter (where {denominator})",
        ctx.source_examples(f"{ctx.t} t", where),
    )


def _sql_source_value_completeness(ctx: _Ctx) -> _Sql:
    f = f"t.{ctx.f}"
    standard = f"t.{_q(ctx.row['standardConceptFieldName'])}"
    violated = (
        f"count(distinct {f}) filter (where {standard} = 0)"
        f" + coalesce(max(case when {standard} = 0 and {f} is null then 1 else 0 end), 0)"
    )
    denominator = f"count(distinct {f}) + coalesce(max(case when {f} is null then 1 else 0 end), 0)"
    return _scan(
        ctx,
        violated,
        denominator,
        ctx.examples(
            None if ctx.field in _NO_EXAMPLE_COLUMNS else f,
            f"{ctx.t} t",
            f"{standard} = 0",
        ),
    )


def _plausible_value(ctx: _Ctx, op: str, column: str) -> _Sql:
    bound = _plausible_value_sql(ctx.row[column], f"{ctx.table}.{ctx.field} {column}")
    f = f"t.{ctx.f}"
    where = (
        f"cast({f} as date) {op} cast({bound} as date)" if ctx.is_date() else f"{f} {op} {bound}"
    )
    return _scan(
        ctx,
        f"count(*) filter (where {where})",
        f"count({f})",
        ctx.value_examples(f"{ctx.t} t", where),
    )


def _sql_plausible_value_low(ctx: _Ctx) -> _Sql:
    if ctx.level == "CONCEPT":
        return _concept_value(ctx, "<", "plausibleValueLow")
    return _plausible_value(ctx, "<", "plausibleValueLow")


def _sql_plausible_value_high(ctx: _Ctx) -> _Sql:
    if ctx.level == "CONCEPT":
        return _concept_value(ctx, ">", "plausibleValueHigh")
    return _plausible_value(ctx, ">", "plausibleValueHigh")


def _concept_value(ctx: _Ctx, op: str, column: str) -> _Sql:
    concept = int(ctx.row["conceptId"])
    unit = int(ctx.row["unitConceptId"])
    bound = _number(ctx.row[column], f"{ctx.table} concept {concept} {column}")
    rows = (
        f't.{ctx.f} = {concept} and t."unit_concept_id" = {unit}'
        ' and t."value_as_number" is not null'
    )
    where = f'{rows} and t."value_as_number" {op} {bound}'
    return _scan(
        ctx,
        f"count(*) filter (where {where})",
        f"count(*) filter (where {rows})",
        ctx.examples('t."value_as_number"', f"{ctx.t} t", where),
    )


def _person_source(ctx: _Ctx) -> str:
    """The table joined to each person's birth date and gender (left join: keeps every row)."""
    birth = (
        "coalesce(cast(p.\"birth_datetime\" as date), try_cast(printf('%04d-%02d-%02d',"
        ' p."year_of_birth", coalesce(p."month_of_birth", 1), coalesce(p."day_of_birth", 1))'
        " as date))"
    )
    mid_year = 'coalesce(cast(p."birth_datetime" as date), make_date(p."year_of_birth", 6, 1))'
    return (
        f'{ctx.t} t\nleft join (select p."person_id", p."gender_concept_id",\n'
        f"  {birth} as birth_date,\n  {mid_year} as birth_date_mid_year\n"
        '  from @cdm."person" p) p on t."person_id" = p."person_id"'
    )


def _sql_plausible_after_birth(ctx: _Ctx) -> _Sql:
    f = f"t.{ctx.f}"
    where = f"{f} is not null and cast({f} as date) < p.birth_date"
    return _Sql(
        source=_person_source(ctx),
        violated=f"count(*) filter (where {where})",
        denominator=f"count({f})",
        examples=ctx.source_examples(_person_source(ctx), where, ctx.main_source()),
    )


def _death_source(ctx: _Ctx) -> str:
    return f'{ctx.t} t\njoin @cdm."death" d on t."person_id" = d."person_id"'


def _sql_plausible_before_death(ctx: _Ctx) -> _Sql:
    f = f"t.{ctx.f}"
    where = f'{f} is not null and cast({f} as date) > d."death_date" + 60'
    return _Sql(
        source=_death_source(ctx),
        violated=f"count(*) filter (where {where})",
        denominator=f"count({f})",
        examples=ctx.source_examples(_death_source(ctx), where, ctx.main_source()),
    )


def _sql_plausible_during_life(ctx: _Ctx) -> _Sql:
    f = f"t.{ctx.f}"
    where = f'cast({f} as date) > d."death_date" + 60'
    return _Sql(
        source=_death_source(ctx),
        violated=f"count(*) filter (where {where})",
        denominator="count(*)",
        examples=ctx.source_examples(_death_source(ctx), where, ctx.main_source()),
    )


def _sql_plausible_start_before_end(ctx: _Ctx) -> _Sql:
    f, end = f"t.{ctx.f}", f"t.{_q(ctx.row['plausibleStartBeforeEndFieldName'])}"
    both = f"{f} is not null and {end} is not null"
    where = f"{both} and cast({f} as date) > cast({end} as date)"
    return _scan(
        ctx,
        f"count(*) filter (where {where})",
        f"count(*) filter (where {both})",
        ctx.source_examples(f"{ctx.t} t", where, ctx.main_source()),
    )


def _sql_plausible_temporal_after(ctx: _Ctx) -> _Sql:
    f = f"t.{ctx.f}"
    other_table = ctx.row["plausibleTemporalAfterTableName"].upper()
    after = _q(ctx.row["plausibleTemporalAfterFieldName"])
    if other_table == "PERSON" and ctx.table != "PERSON":
        if after != '"birth_datetime"':
            raise ValueError(f"{ctx.table}.{ctx.field}: plausibleTemporalAfter on PERSON.{after}")
        where = f"p.birth_date_mid_year > cast({f} as date)"
        return _Sql(
            source=_person_source(ctx),
            violated=f"count(*) filter (where {where})",
            denominator="count(*)",
            examples=ctx.source_examples(_person_source(ctx), where, ctx.main_source()),
        )
    if other_table != ctx.table:
        raise ValueError(f"{ctx.table}.{ctx.field}: plausibleTemporalAfter on {other_table}")
    where = f"cast(t.{after} as date) > cast({f} as date)"
    return _scan(
        ctx,
        f"count(*) filter (where {where})",
        "count(*)",
        ctx.source_examples(f"{ctx.t} t", where, ctx.main_source()),
    )


def _sql_within_visit_dates(ctx: _Ctx) -> _Sql:
    f = f"t.{ctx.f}"
    source = (
        f'{ctx.t} t\njoin @cdm."visit_occurrence" vo'
        ' on t."visit_occurrence_id" = vo."visit_occurrence_id"'
    )
    where = f'{f} < vo."visit_start_date" - 7 or {f} > vo."visit_end_date" + 7'
    return _Sql(
        source=source,
        violated=f"count(*) filter (where {where})",
        denominator="count(*)",
        examples=ctx.source_examples(source, where, ctx.main_source()),
    )


def _gender_histogram(ctx: _Ctx) -> str:
    return (
        f'(select t.{ctx.f} as c, p."gender_concept_id" as g, count(*) as n\n'
        f' from {ctx.t} t left join @cdm."person" p on t."person_id" = p."person_id"\n'
        " group by all) h"
    )


def _gender(ctx: _Ctx, column: str) -> int:
    value = ctx.row[column]
    if value not in _GENDER_CONCEPTS:
        raise ValueError(f"{ctx.table} concept {ctx.row['conceptId']}: {column} {value!r}")
    return _GENDER_CONCEPTS[value]


def _sql_plausible_gender(ctx: _Ctx) -> _Sql:
    concept = int(ctx.row["conceptId"])
    gender = _gender(ctx, "plausibleGender")
    frm = f'{ctx.t} t\njoin @cdm."person" p on t."person_id" = p."person_id"'
    return _Sql(
        source=_gender_histogram(ctx),
        violated=f"coalesce(sum(h.n) filter (where h.c = {concept} and h.g <> {gender}), 0)",
        denominator=f"coalesce(sum(h.n) filter (where h.c = {concept}), 0)",
        examples=ctx.source_examples(
            frm, f't.{ctx.f} = {concept} and p."gender_concept_id" <> {gender}'
        ),
    )


def _sql_plausible_gender_use_descendants(ctx: _Ctx) -> _Sql:
    ancestors = ", ".join(str(c) for c in _int_list(ctx.row["conceptId"], "conceptId"))
    gender = _gender(ctx, "plausibleGenderUseDescendants")
    frm = (
        f'{ctx.t} t\njoin @cdm."person" p on t."person_id" = p."person_id"\n'
        f'join @vocab."concept_ancestor" ca on ca."descendant_concept_id" = t.{ctx.f}'
    )
    return _Sql(
        source=(
            _gender_histogram(ctx)
            + '\njoin @vocab."concept_ancestor" ca on ca."descendant_concept_id" = h.c'
        ),
        violated=(
            "coalesce(sum(h.n) filter (where"
            f' ca."ancestor_concept_id" in ({ancestors}) and h.g <> {gender}), 0)'
        ),
        denominator=(
            f'coalesce(sum(h.n) filter (where ca."ancestor_concept_id" in ({ancestors})), 0)'
        ),
        examples=ctx.source_examples(
            frm, f'ca."ancestor_concept_id" in ({ancestors}) and p."gender_concept_id" <> {gender}'
        ),
    )


def _sql_plausible_unit_concept_ids(ctx: _Ctx) -> _Sql:
    concept = int(ctx.row["conceptId"])
    units = _int_list(ctx.row["plausibleUnitConceptIds"], "plausibleUnitConceptIds")
    allowed = ", ".join(str(u) for u in [*units, 0])

    unit_column = 't."unit_concept_id"'

    def wrong(u: str) -> str:
        if units == [-1]:  # DQD: -1 means the only plausible unit is none
            return f"{u} <> 0"
        return f"{u} not in ({allowed})"

    return _Sql(
        source=(
            f'(select t.{ctx.f} as c, t."unit_concept_id" as u, count(*) as n\n'
            f" from {ctx.t} t group by all) h"
        ),
        violated=(
            f"coalesce(sum(h.n) filter (where h.c = {concept} and h.u is not null"
            f" and {wrong('h.u')}), 0)"
        ),
        denominator=(
            f"coalesce(sum(h.n) filter (where h.c = {concept} and (h.u <> 0 or h.u is null)), 0)"
        ),
        examples=ctx.source_examples(
            f"{ctx.t} t",
            f't.{ctx.f} = {concept} and t."unit_concept_id" is not null and {wrong(unit_column)}',
            "unit_concept_id",
        ),
    )


_BUILDERS: dict[str, Callable[[_Ctx], _Sql]] = {
    "cdmTable": _sql_cdm_table,
    "measurePersonCompleteness": _sql_person_completeness,
    "measureConditionEraCompleteness": _sql_condition_era_completeness,
    "measureObservationPeriodOverlap": _sql_observation_period_overlap,
    "cdmField": _sql_cdm_field,
    "isRequired": _sql_is_required,
    "cdmDatatype": _sql_cdm_datatype,
    "isPrimaryKey": _sql_is_primary_key,
    "isForeignKey": _sql_is_foreign_key,
    "fkDomain": _sql_fk_domain,
    "fkClass": _sql_fk_class,
    "isStandardValidConcept": _sql_is_standard_valid_concept,
    "measureValueCompleteness": _sql_measure_value_completeness,
    "standardConceptRecordCompleteness": _sql_concept_record_completeness,
    "sourceConceptRecordCompleteness": _sql_concept_record_completeness,
    "sourceValueCompleteness": _sql_source_value_completeness,
    "plausibleValueLow": _sql_plausible_value_low,
    "plausibleValueHigh": _sql_plausible_value_high,
    "plausibleTemporalAfter": _sql_plausible_temporal_after,
    "plausibleDuringLife": _sql_plausible_during_life,
    "withinVisitDates": _sql_within_visit_dates,
    "plausibleAfterBirth": _sql_plausible_after_birth,
    "plausibleBeforeDeath": _sql_plausible_before_death,
    "plausibleStartBeforeEnd": _sql_plausible_start_before_end,
    "plausibleGender": _sql_plausible_gender,
    "plausibleGenderUseDescendants": _sql_plausible_gender_use_descendants,
    "plausibleUnitConceptIds": _sql_plausible_unit_concept_ids,
}


# ---------------------------------------------------------------------------
# The catalogue
# ---------------------------------------------------------------------------


def _threshold(row: Mapping[str, str], check_name: str) -> float | None:
    raw = row.get(f"{check_name}Threshold", "")
    return float(raw) if raw != "" else None


def _description_rows(spec: _Spec, include_deprecated: bool) -> list[dict[str, str]]:
    rows = []
    for row in spec.descriptions:
        if row["checkName"] in DEPRECATED_CHECKS and not include_deprecated:
            continue
        if row["checkName"] not in _BUILDERS or not row["evaluationFilter"] or not row["sqlFile"]:
            raise ValueError(f"unknown DQD check type {row['checkName']!r}")
        rows.append(row)
        if row["checkLevel"] == "FIELD" and row["checkName"] in CONCEPT_VALUE_DESCRIPTIONS:
            rows.append(
                {
                    **row,
                    "checkLevel": "CONCEPT",
                    "checkDescription": CONCEPT_VALUE_DESCRIPTIONS[row["checkName"]],
                    "sqlFile": row["sqlFile"].replace("field_", "concept_", 1),
                    "evaluationFilter": f"{row['checkName']}!=''",
                }
            )
    return rows


def catalogue(
    overrides: Mapping[str, float] | None = None,
    *,
    include_deprecated: bool = False,
    tables_to_exclude: Iterable[str] = DEFAULT_TABLES_TO_EXCLUDE,
) -> list[Check]:
    """Every DQD v2.8.4 check that applies to a CDM v5.4, generated from the DQD CSVs.

    ``overrides`` are per-site thresholds (percent) keyed by check id or check name; a
    check id wins over a check name. ``include_deprecated`` adds the three check types
    DQD v2.8.4 deprecates (``DEPRECATED_CHECKS``).
    """
    spec = _spec()
    overrides = dict(overrides or {})
    excluded = {t.upper() for t in tables_to_exclude}
    level_rows = {"TABLE": spec.tables, "FIELD": spec.fields, "CONCEPT": spec.concepts}
    checks: list[Check] = []
    seen: set[str] = set()
    for desc in _description_rows(spec, include_deprecated):
        name, level = desc["checkName"], desc["checkLevel"]
        accepts = _evaluation_filter(desc["evaluationFilter"])
        for row in level_rows[level]:
            if row["cdmTableName"].upper() in excluded or not accepts(row):
                continue
            ctx = _Ctx(spec, level, row)
            built = _BUILDERS[name](ctx)
            field_name = row["cdmFieldName"].upper() if level != "TABLE" else None
            concept = (row.get("conceptId") or None) if level == "CONCEPT" else None
            unit = (row.get("unitConceptId") or None) if level == "CONCEPT" else None
            check_id = _check_id(level, name, ctx.table, field_name, concept, unit)
            if check_id in seen:
                raise ValueError(f"check {check_id} made twice: a row is listed twice in the CSVs")
            seen.add(check_id)
            threshold = _threshold(row, name)
            threshold = overrides.get(check_id, overrides.get(name, threshold))
            checks.append(
                Check(
                    check_id=check_id,
                    check_name=name,
                    check_level=level,
                    check_description=_describe(
                        desc["checkDescription"],
                        {**row, "cdmTableName": ctx.table, "cdmFieldName": field_name or ""},
                    ),
                    cdm_table_name=ctx.table,
                    cdm_field_name=field_name,
                    concept_id=concept,
                    unit_concept_id=unit,
                    sql_file=desc["sqlFile"],
                    category=desc["kahnCategory"],
                    subcategory=desc["kahnSubcategory"] or None,
                    context=desc["kahnContext"],
                    severity=desc["severity"],
                    threshold_value=None if threshold is None else float(threshold),
                    notes_value=row.get(f"{name}Notes") or None,
                    sql=built.text(),
                    examples_sql=built.examples,
                    source=built.source,
                    violated=built.violated,
                    denominator=built.denominator,
                )
            )
    return checks


@functools.cache
def _default_catalogue() -> tuple[Check, ...]:
    return tuple(catalogue(include_deprecated=True))


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------


@dataclass
class _Outcome:
    num: int | None = None
    den: int | None = None
    error: str | None = None
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)


@dataclass
class _Task:
    members: list[int]  # indexes into the jobs
    sql: str  # rendered
    cost: int
    grouped: bool


def _na_basis(checks: Sequence[Check]) -> list[Check]:
    """The cdmTable/cdmField/measureValueCompleteness checks the NA rules need and lack."""
    have = {(c.check_name, c.cdm_table_name, c.cdm_field_name) for c in checks}
    tables = {c.cdm_table_name for c in checks}
    table_fields = {(c.cdm_table_name, c.cdm_field_name) for c in checks if c.cdm_field_name}
    if "CONDITION_ERA" in tables:  # measureConditionEraCompleteness looks at this table
        tables.add("CONDITION_OCCURRENCE")
    basis = []
    for c in _default_catalogue():
        key = (c.check_name, c.cdm_table_name, c.cdm_field_name)
        if key in have:
            continue
        if (c.check_name == "cdmTable" and c.cdm_table_name in tables) or (
            c.check_name in ("cdmField", "measureValueCompleteness")
            and (
                (c.cdm_table_name, c.cdm_field_name) in table_fields
                or (c.check_name == "measureValueCompleteness" and c.cdm_table_name in tables)
            )
        ):
            basis.append(c)
    return basis


class _Cursors:
    """``con.cursor()`` connections made in the calling thread, lent to one worker at a time."""

    def __init__(self, con: duckdb.DuckDBPyConnection, count: int):
        self._all = [con.cursor() for _ in range(max(1, count))]
        self._free: queue.SimpleQueue[duckdb.DuckDBPyConnection] = queue.SimpleQueue()
        for cur in self._all:
            self._free.put(cur)

    @contextlib.contextmanager
    def take(self) -> Iterator[duckdb.DuckDBPyConnection]:
        cur = self._free.get()
        try:
            yield cur
        finally:
            self._free.put(cur)

    def map(
        self, work: Callable[[duckdb.DuckDBPyConnection, Any], Any], items: Sequence[Any]
    ) -> list[Any]:
        """``work(cursor, item)`` for every item, as many at once as there are cursors."""

        def one(item: Any) -> Any:
            with self.take() as cur:
                return work(cur, item)

        with ThreadPoolExecutor(max_workers=len(self._all)) as pool:
            return list(pool.map(one, items))

    def close(self) -> None:
        for cur in self._all:
            cur.close()


def _table_sizes(
    cur: duckdb.DuckDBPyConnection, jobs: Sequence[Check], cdm: str, vocab: str
) -> dict[str, int]:
    """Rows per table (cheap in DuckDB), to start the biggest queries first."""
    sizes: dict[str, int] = {}
    for c in jobs:
        if c.cdm_table_name in sizes:
            continue
        schema = vocab if _spec().table_schema.get(c.cdm_table_name) == "VOCAB" else cdm
        try:
            row = cur.execute(f"select count(*) from {schema}.{_q(c.cdm_table_name)}").fetchone()
            sizes[c.cdm_table_name] = int(row[0]) if row else 0
        except duckdb.Error:
            sizes[c.cdm_table_name] = 0
    return sizes


_GROUP_LIMIT = 400  # checks per grouped query


def _plan(jobs: Sequence[Check], cdm: str, vocab: str, sizes: Mapping[str, int]) -> list[_Task]:
    groups: dict[str, list[int]] = {}
    tasks: list[_Task] = []
    for i, c in enumerate(jobs):
        if c.source is not None:
            groups.setdefault(c.source, []).append(i)
        else:
            cost = sizes.get(c.cdm_table_name, 0)
            tasks.append(_Task([i], c.query(cdm, vocab), cost, grouped=False))
    for source, members in groups.items():
        for start in range(0, len(members), _GROUP_LIMIT):
            chunk = members[start : start + _GROUP_LIMIT]
            first = jobs[chunk[0]]
            if len(chunk) == 1:
                tasks.append(
                    _Task(chunk, first.query(cdm, vocab), sizes.get(first.cdm_table_name, 0), False)
                )
                continue
            columns = ",\n  ".join(
                f"{jobs[i].violated} as v{k}, {jobs[i].denominator} as d{k}"
                for k, i in enumerate(chunk)
            )
            sql = _render(f"select\n  {columns}\nfrom {source}", cdm, vocab)
            cost = sizes.get(first.cdm_table_name, 0) * (1 + len(chunk) // 20)
            tasks.append(_Task(chunk, sql, cost, grouped=True))
    tasks.sort(key=lambda t: -t.cost)
    return tasks


def _as_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _run_single(cur: duckdb.DuckDBPyConnection, sql: str) -> _Outcome:
    started = time.perf_counter()
    try:
        row = cur.execute(sql).fetchone()
        if row is None or len(row) != 2:
            raise duckdb.InvalidInputException("a check query must return one row of two numbers")
        return _Outcome(_as_int(row[0]), _as_int(row[1]), seconds=time.perf_counter() - started)
    except duckdb.Error as exc:
        return _Outcome(error=str(exc), seconds=time.perf_counter() - started)


def _run_task(
    cur: duckdb.DuckDBPyConnection, task: _Task, jobs: Sequence[Check], cdm: str, vocab: str
) -> list[tuple[int, _Outcome]]:
    """The outcome of each check of a task (a grouped query falls back to one by one)."""
    if not task.grouped:
        return [(task.members[0], _run_single(cur, task.sql))]
    started = time.perf_counter()
    try:
        row = cur.execute(task.sql).fetchone()
    except duckdb.Error:
        row = None
    if row is None:  # one by one, so each check gets its own error
        return [(i, _run_single(cur, jobs[i].query(cdm, vocab))) for i in task.members]
    share = (time.perf_counter() - started) / len(task.members)
    return [
        (i, _Outcome(_as_int(row[2 * k]), _as_int(row[2 * k + 1]), None, share))
        for k, i in enumerate(task.members)
    ]


def _run_examples(cur: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    try:
        return [str(r[0]) for r in cur.execute(sql).fetchall()]
    except duckdb.Error:
        return []


@dataclass
class _Flags:
    failed: bool = False
    is_error: bool = False
    na: bool = False
    reason: str | None = None


def _evaluate(check: Check, out: _Outcome) -> _Flags:
    """DQD's evaluateThresholds for one check."""
    flags = _Flags()
    if out.error is not None:
        if check.check_name in ("cdmTable", "cdmField") and _MISSING_ERROR.search(out.error):
            flags.failed = True
        else:
            flags.is_error = True
    elif check.threshold_value is None or check.threshold_value == 0:
        flags.failed = out.num is not None and out.num > 0
    else:
        flags.failed = _pct(out) * 100 > check.threshold_value
    return flags


def _pct(out: _Outcome) -> float:
    if out.num is None or out.den is None:
        return 0.0
    return 0.0 if out.den == 0 else out.num / out.den


def _apply_not_applicable(
    jobs: Sequence[Check], outcomes: Sequence[_Outcome], flags: Sequence[_Flags]
) -> None:
    """DQD's calculateNotApplicableStatus."""
    missing_table: dict[str, bool] = {}
    missing_field: dict[tuple[str, str | None], bool] = {}
    empty_table: dict[str, bool] = {}
    empty_field: dict[tuple[str, str | None], bool] = {}
    for c, out, fl in zip(jobs, outcomes, flags, strict=True):
        if c.check_name == "cdmTable":
            missing_table[c.cdm_table_name] = fl.failed
        elif c.check_name == "cdmField":
            missing_field[(c.cdm_table_name, c.cdm_field_name)] = fl.failed
        elif c.check_name == "measureValueCompleteness" and out.den is not None:
            empty_table[c.cdm_table_name] = empty_table.get(c.cdm_table_name, False) or (
                out.den == 0
            )
            empty_field[(c.cdm_table_name, c.cdm_field_name)] = out.den == out.num
    co_gone = missing_table.get("CONDITION_OCCURRENCE", False) or empty_table.get(
        "CONDITION_OCCURRENCE", False
    )
    for c, out, fl in zip(jobs, outcomes, flags, strict=True):
        key = (c.cdm_table_name, c.cdm_field_name)
        t_missing = missing_table.get(c.cdm_table_name, False)
        f_missing = missing_field.get(key, False)
        t_empty = empty_table.get(c.cdm_table_name, False)
        f_empty = empty_field.get(key, False)
        concept_level = c.check_level == "CONCEPT" and out.den == 0
        concept_missing = concept_level and c.unit_concept_id is None
        concept_unit_missing = concept_level and c.unit_concept_id is not None
        if c.check_name == "measureConditionEraCompleteness":
            fl.na = co_gone
            if co_gone:
                fl.reason = "Table CONDITION_OCCURRENCE is empty."
        elif c.check_name == "measurePersonCompleteness" or c.check_name == "cdmField":
            fl.na = t_missing
        elif c.check_name == "cdmTable":
            fl.na = False
        elif t_missing or f_missing:
            fl.na = True
        elif fl.is_error:
            fl.na = False
        elif t_empty:
            fl.na = True
        elif c.check_name == "measureValueCompleteness":
            fl.na = False
        else:
            fl.na = f_empty or concept_missing or concept_unit_missing
        if fl.na and fl.reason is None:
            table, field_ = c.cdm_table_name, c.cdm_field_name
            if t_missing:
                fl.reason = f"Table {table} does not exist."
            elif f_missing:
                fl.reason = f"Field {table}.{field_} does not exist."
            elif t_empty:
                fl.reason = f"Table {table} is empty."
            elif f_empty:
                fl.reason = f"Field {table}.{field_} is not populated."
            elif concept_missing:
                fl.reason = f"{field_}={c.concept_id} is missing from the {table} table."
            else:
                fl.reason = (
                    f"Combination of {field_}={c.concept_id}, unitConceptId={c.unit_concept_id}"
                    f" and VALUE_AS_NUMBER IS NOT NULL is missing from the {table} table."
                )
        if fl.na:
            fl.failed = False


def _status(fl: _Flags) -> str:
    if fl.is_error:
        return ERROR
    if fl.na:
        return NOT_APPLICABLE
    return FAILED if fl.failed else PASSED


def run_checks(
    con: duckdb.DuckDBPyConnection,
    cdm: str,
    vocab: str,
    checks: Iterable[Check],
    *,
    workers: int = 2,
    examples: str = "failed",
) -> CheckResults:
    """Run ``checks`` on the CDM in schema ``cdm`` with the vocabulary in schema ``vocab``.

    ``cdm`` and ``vocab`` are schema names (quoted here) or SQL prefixes already quoted
    (``"catalog"."schema"``). ``workers`` queries run at once, each on its own
    ``con.cursor()``. ``examples``: for which checks to fetch up to 5 example values of
    violating rows: ``"failed"`` (default), ``"violated"`` (any violated row, not NA or
    Error), or ``"none"``. Results come in the order of ``checks``.
    """
    if examples not in ("failed", "violated", "none"):
        raise ValueError(f"examples must be 'failed', 'violated' or 'none', not {examples!r}")
    cdm_sql, vocab_sql = _schema_sql(cdm), _schema_sql(vocab)
    asked = list(checks)
    jobs = asked + _na_basis(asked)
    started_at, started = dt.datetime.now(), time.perf_counter()
    cursors = _Cursors(con, workers)
    try:
        with cursors.take() as cur:
            sizes = _table_sizes(cur, jobs, cdm_sql, vocab_sql)
        tasks = _plan(jobs, cdm_sql, vocab_sql, sizes)
        done = [_Outcome(error="not run") for _ in jobs]
        for found in cursors.map(lambda cur, t: _run_task(cur, t, jobs, cdm_sql, vocab_sql), tasks):
            for i, outcome in found:
                done[i] = outcome
        flags = [_evaluate(c, o) for c, o in zip(jobs, done, strict=True)]
        _apply_not_applicable(jobs, done, flags)

        wanted = []
        for i in range(len(asked)):
            status, out, sql = (
                _status(flags[i]),
                done[i],
                asked[i].examples_query(cdm_sql, vocab_sql),
            )
            if sql is None or not out.num or examples == "none":
                continue
            if status == FAILED or (examples == "violated" and status == PASSED):
                wanted.append((i, sql))
        values = cursors.map(lambda cur, item: _run_examples(cur, item[1]), wanted)
        for (i, _), found_values in zip(wanted, values, strict=True):
            done[i].examples = found_values
    finally:
        cursors.close()

    results = CheckResults()
    for c, out, fl in zip(asked, done, flags, strict=False):
        results.append(
            CheckResult(
                **{f.name: getattr(c, f.name) for f in fields(Check)},
                num_violated_rows=out.num,
                pct_violated_rows=None if out.error is not None else _pct(out),
                num_denominator_rows=out.den,
                status=_status(fl),
                not_applicable_reason=fl.reason if fl.na else None,
                error=out.error,
                execution_time=out.seconds,
                examples=out.examples,
                query_text=c.query(cdm_sql, vocab_sql),
            )
        )
    results.started_at = started_at
    results.ended_at = started_at + dt.timedelta(seconds=time.perf_counter() - started)
    return results


# ---------------------------------------------------------------------------
# DQD's results JSON
# ---------------------------------------------------------------------------


def _camel(name: str) -> str:
    """SqlRender's snakeCaseToCamelCase: ``CDM_SOURCE_NAME`` -> ``cdmSourceName``."""
    head, *rest = name.lower().split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _elapsed(seconds: float) -> str:
    """R's ``sprintf("%.0f %s", difftime)`` with difftime's automatic unit."""
    for unit, size in (("days", 86400.0), ("hours", 3600.0), ("mins", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} secs"


def _check_json(r: CheckResult) -> dict[str, Any]:
    values = {
        "numViolatedRows": r.num_violated_rows,
        "pctViolatedRows": r.pct_violated_rows,
        "numDenominatorRows": r.num_denominator_rows,
        "executionTime": f"{r.execution_time:f} secs",
        "queryText": r.query_text,
        "checkName": r.check_name,
        "checkLevel": r.check_level,
        "checkDescription": r.check_description,
        "cdmTableName": r.cdm_table_name,
        "cdmFieldName": r.cdm_field_name,
        "conceptId": r.concept_id,
        "unitConceptId": r.unit_concept_id,
        "sqlFile": r.sql_file,
        "category": r.category,
        "subcategory": r.subcategory,
        "context": r.context,
        "warning": None,
        "error": r.error,
        "checkId": r.check_id,
        "failed": int(r.failed),
        "passed": int(r.passed),
        "isError": int(r.is_error),
        "notApplicable": int(r.not_applicable),
        "notApplicableReason": r.not_applicable_reason,
        "thresholdValue": r.threshold_value,
        "notesValue": r.notes_value,
    }
    return {name: values[name] for name in JSON_FIELDS}


def _overview(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """DQD's summarizeResults (its countPassed is every check that did not fail)."""

    def count(pred: Callable[[Mapping[str, Any]], bool]) -> int:
        return sum(1 for r in rows if pred(r))

    total = len(rows)
    threshold_failed = count(lambda r: r["failed"] == 1 and r["error"] is None)
    error_failed = count(lambda r: r["error"] is not None)
    overall_failed = count(lambda r: r["failed"] == 1)
    passed = total - overall_failed
    judged = passed + overall_failed
    overview: dict[str, Any] = {
        "countTotal": total,
        "countPassed": passed,
        "countErrorFailed": error_failed,
        "countThresholdFailed": threshold_failed,
        "countOverallFailed": overall_failed,
        "percentPassed": round(passed / judged * 100, 2) if judged else 0.0,
        "percentFailed": round(overall_failed / judged * 100, 2) if judged else 0.0,
    }
    categories = ("Plausibility", "Conformance", "Completeness")
    for cat in categories:
        overview[f"countTotal{cat}"] = count(lambda r, cat=cat: r["category"] == cat)
    for cat in categories:
        overview[f"countFailed{cat}"] = count(
            lambda r, cat=cat: r["category"] == cat and r["failed"] == 1
        )
    for cat in categories:
        overview[f"countPassed{cat}"] = count(
            lambda r, cat=cat: r["category"] == cat and r["passed"] == 1
        )
    return overview


def dqd_json(
    results: Sequence[CheckResult],
    metadata: Mapping[str, Any],
    *,
    started_at: dt.datetime | None = None,
    ended_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """The results in the JSON shape of DQD v2.8.4's ``executeDqChecks`` (and its viewer).

    ``metadata`` is the CDM's ``cdm_source`` row (``CDM_SOURCE_NAME``, ...); ``Metadata``
    holds it as given plus ``DQD_VERSION``, and the camelCase twin of each key
    (``cdmSourceName``, ``dqdVersion``), which is what DQD >= 2.1 writes and its viewer
    reads (``Metadata[0].cdmSourceName``). ``Metadata`` is a one-element list, as
    jsonlite writes DQD's one-row data frame; fields without a value are ``null``.
    The run's start and end default to those ``run_checks`` recorded.
    """
    ended = ended_at or getattr(results, "ended_at", None) or dt.datetime.now()
    started = started_at or getattr(results, "started_at", None)
    if started is None:
        started = ended - dt.timedelta(seconds=sum(r.execution_time for r in results))
    seconds = max((ended - started).total_seconds(), 0.0)
    rows = [_check_json(r) for r in results]
    meta = {str(k): _json_value(v) for k, v in metadata.items()}
    meta["DQD_VERSION"] = DQD_VERSION
    for key, value in list(meta.items()):
        meta.setdefault(_camel(key), value)
    return {
        "startTimestamp": started.strftime("%Y-%m-%d %H:%M:%S"),
        "endTimestamp": ended.strftime("%Y-%m-%d %H:%M:%S"),
        "executionTime": _elapsed(seconds),
        "executionTimeSeconds": seconds,
        "CheckResults": rows,
        "Metadata": [meta],
        "Overview": _overview(rows),
    }


def cdm_source_metadata(con: duckdb.DuckDBPyConnection, cdm: str) -> dict[str, Any]:
    """The first ``cdm_source`` row of a CDM, keys in upper case (for ``dqd_json``)."""
    cur = con.cursor()
    try:
        rel = cur.execute(f'select * from {_schema_sql(cdm)}."cdm_source" limit 1')
        names = [d[0].upper() for d in rel.description]
        row = rel.fetchone()
    finally:
        cur.close()
    return dict(zip(names, row, strict=True)) if row else {}


__all__ = [
    "CHECK_TYPES",
    "DEPRECATED_CHECKS",
    "DQD_VERSION",
    "STATUSES",
    "VIEWER_FIELDS",
    "Check",
    "CheckResult",
    "CheckResults",
    "catalogue",
    "cdm_source_metadata",
    "dqd_json",
    "run_checks",
]
