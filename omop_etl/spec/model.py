"""What a site spec says, once validated: frozen dataclasses the pipeline reads.

The YAML language itself is described in ``mappings/sites/README.md``; the parser
(``omop_etl.spec.parse``) turns a spec file into these objects or lists every problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

from omop_etl.errors import EtlError

DEFAULT_MAX_REJECT_RATE = 0.05
# how often the site's Airflow DAG looks for a new batch: a cron preset or a five-field
# cron expression; `schedule: null` leaves the DAG to manual runs
DEFAULT_SCHEDULE = "@daily"
# the earliest clinical date a site's export may hold unless its spec says otherwise;
# the latest is a year after the run (see SiteSpec.window)
DEFAULT_EARLIEST = date(1900, 1, 2)
DEFAULT_TIMEZONE = "UTC"


@dataclass(frozen=True)
class ColumnRule:
    """How one staging field (or a lookup's key or value) is computed from a record.

    Exactly one source: ``column`` (a source column; ``alternatives`` lists the names it
    may have, first present wins, resolved against the header by ``FileSpec.bind``),
    ``const``, ``sql`` (an expression over the record and its lookups), ``json`` (a JSON
    path into an ndjson record; ``json_alternatives`` lists the paths to try in turn),
    ``lookup`` (``name.column`` of a lookup) or ``element``
    (a value of the record's current element, for files with ``each``).
    """

    field: str
    column: str | None = None
    const: Any = None
    sql: str | None = None
    json: str | None = None
    lookup: str | None = None
    element: str | None = None
    transform: str | None = None  # SQL applied to the value's text: {value}
    format: str | None = None
    map: str | None = None
    default: Any = None
    alternatives: tuple[str, ...] = ()
    # JSON paths to try in order, the first with a value wins (``json: [a, b]``)
    json_alternatives: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How rejects name the value's place in the record."""
        if self.lookup:
            return f"lookup {self.lookup}"
        if self.element is not None:
            return f"element {self.element}"
        if self.json_alternatives:
            return " | ".join(self.json_alternatives)
        return self.column or self.json or self.field


@dataclass(frozen=True)
class FileFilter:
    """Rows matching ``sql`` are kept; the others are counted under ``rule``."""

    rule: str
    sql: str


@dataclass(frozen=True)
class Lookup:
    """Values of another file of the same batch, joined to each record by a key.

    ``keys`` pairs a rule over this file's record with one over the other file's
    record; ``columns`` are the values it brings (name -> rule over the other file).
    Where several records of the other file share a key with different values,
    ``choose`` (``("latest" | "earliest", column name)``) picks one; without it the
    record is rejected as ``lookup_ambiguous:<name>``. A record whose key finds nothing
    is rejected as ``lookup_missing:<name>`` (``missing: reject``) or keeps NULLs
    (``missing: keep``).
    """

    name: str
    file: str
    keys: tuple[tuple[ColumnRule, ColumnRule], ...]
    columns: dict[str, ColumnRule]
    missing: str = "reject"
    choose: tuple[str, str] | None = None


@dataclass(frozen=True)
class Each:
    """A record that gives several staging rows: one per element.

    ``json``: the elements of a JSON array (``$.component``); ``columns``: wide rows,
    one element per listed column that holds a value (its ``name`` and ``value``).
    """

    json: str | None = None
    columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileSpec:
    name: str
    pattern: str
    target: str | None
    read: dict[str, Any]
    columns: tuple[ColumnRule, ...] = ()
    required: bool = True
    skip: str | None = None
    filter: FileFilter | None = None
    lookups: tuple[Lookup, ...] = ()
    each: Each | None = None
    # the columns that name a record: a later record with the same key supersedes it
    record_key: tuple[ColumnRule, ...] = ()
    # "keep" (OMOP keeps repeated events) or "reject" (exact copies become duplicates)
    duplicates: str = "keep"

    def bind(self, header: list[str], site: str, file_name: str) -> FileSpec:
        """The file spec with each column rule's name chosen among its alternatives:
        the first one the file's header has. A rule none of whose names is there is an
        error naming the site, the file and the names."""

        def resolve(rule: ColumnRule) -> ColumnRule:
            if not rule.alternatives:
                return rule
            present = [c for c in rule.alternatives if c in header]
            if not present:
                raise EtlError(
                    f"site {site}, file {file_name}: none of the columns "
                    f"{', '.join(rule.alternatives)} named in the spec ({self.name}.{rule.field}) "
                    "is in the header (line 1)"
                )
            return replace(rule, column=present[0])

        if not any(r.alternatives for r in (*self.columns, *self.record_key)):
            return self
        return replace(
            self,
            columns=tuple(resolve(r) for r in self.columns),
            record_key=tuple(resolve(r) for r in self.record_key),
        )


@dataclass(frozen=True)
class SiteSpec:
    site: str
    description: str
    id_block: int
    files: tuple[FileSpec, ...]
    value_maps: dict[str, dict[str, Any]] = field(default_factory=dict)
    unit_vocabulary: str | None = None
    path: Path | None = None
    batches: str = "incremental"
    max_reject_rate: float = DEFAULT_MAX_REJECT_RATE
    # hand-written expectations: {target, expectation (GE snake_case name), arguments...}
    contracts: tuple[dict[str, Any], ...] = ()
    # DQD thresholds of this site, by check id or check name (percent of violating rows)
    check_thresholds: dict[str, float] = field(default_factory=dict)
    # code system -> regular expression its codes match (contracts on staging)
    code_forms: dict[str, str] = field(default_factory=dict)
    # the Airflow schedule of the site's DAG (None: manual runs only)
    schedule: str | None = DEFAULT_SCHEDULE
    # person-hash buckets its CDM is built in, as mapped tasks (1: one task)
    buckets: int = 1
    # the time zone of the site's clinical times: offset-aware values are converted to it
    timezone: str = DEFAULT_TIMEZONE
    # clinical dates outside [earliest, latest] are a row's defect (latest None: a year
    # after the run)
    earliest: date = DEFAULT_EARLIEST
    latest: date | None = None
    # the spec files this one was read from: its own, then the ones it extends
    sources: tuple[Path, ...] = ()

    @property
    def id_base(self) -> int:
        """First id of this site's block: ids never collide across sites.

        >>> SiteSpec("a", "", 2, ()).id_base
        268435456
        """
        return self.id_block << 27

    def window(self, today: date) -> tuple[date, date]:
        """The dates a clinical date of this site may take, for a run on ``today``.

        >>> SiteSpec("a", "", 2, ()).window(date(2026, 12, 4))
        (datetime.date(1900, 1, 2), datetime.date(2027, 12, 4))
        """
        if self.latest is not None:
            return self.earliest, self.latest
        try:
            latest = today.replace(year=today.year + 1)
        except ValueError:  # 29 February
            latest = today.replace(year=today.year + 1, day=28)
        return self.earliest, latest

    def file(self, name: str) -> FileSpec:
        return next(f for f in self.files if f.name == name)
