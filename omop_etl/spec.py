"""Site specs: the YAML that says how one hospital's export becomes staging rows.

A spec is validated as a whole before anything runs; every problem is reported
with the spec file, the key path and what is wrong. The language is described
in ``mappings/sites/README.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from omop_etl import settings
from omop_etl.errors import EtlError
from omop_etl.staging import TARGETS

FORMATS = {"csv", "parquet", "ndjson"}
ENCODINGS = {"utf-8", "utf8", "utf-8-sig", "cp949", "euc-kr", "euc_kr"}
BATCH_MODES = {"incremental", "snapshot"}
CDM_DOMAINS = {"Condition", "Drug", "Procedure", "Measurement", "Observation", "Device"}
FORMAT_ALIASES = {"date", "datetime"}
_COLUMN_KEYS = {
    "column",
    "const",
    "sql",
    "json",
    "transform",
    "format",
    "map",
    "default",
    "free_text",
}
_FILE_KEYS = {
    "name",
    "pattern",
    "target",
    "required",
    "skip",
    "columns",
    "domain",
    "type_concept_id",
    "filter",
    *(
        "format",
        "encoding",
        "delimiter",
        "quote",
        "escape",
        "header",
        "null_values",
        "date_format",
        "datetime_format",
        "sentinel_dates",
    ),
}
_READ_DEFAULTS: dict[str, Any] = {
    "format": "csv",
    "encoding": "utf-8",
    "delimiter": ",",
    "quote": '"',
    "escape": '"',
    "header": True,
    "null_values": [""],
    "date_format": "%Y-%m-%d",
    "datetime_format": "%Y-%m-%dT%H:%M:%S",
    # placeholder dates some systems write for "unknown": a row holding one is rejected
    "sentinel_dates": ["9999-12-31", "1900-01-01"],
}
_TOP_KEYS = {
    "site",
    "description",
    "id_block",
    "defaults",
    "value_maps",
    "units",
    "files",
    "batches",
    "max_reject_rate",
    "contracts",
    "check_thresholds",
    "code_forms",
    "schedule",
    "buckets",
}
DEFAULT_MAX_REJECT_RATE = 0.05
# how often the site's Airflow DAG looks for a new batch: a cron preset or a five-field
# cron expression; `schedule: null` leaves the DAG to manual runs
DEFAULT_SCHEDULE = "@daily"
# person-hash buckets the site's CDM is built in (Airflow mapped tasks, spread over
# workers); 1 builds it in one task
MAX_BUCKETS = 64
CRON_PRESETS = {"@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"}
_CRON = re.compile(r"^[0-9A-Za-z*/,?#-]+( [0-9A-Za-z*/,?#-]+){4}$")
# a source column name: any text without double quotes or control characters (Korean
# headers, spaces and brackets included); it is always quoted in SQL
_IDENT = re.compile(r'^[^"\x00-\x1f]+$')
MAX_ID_BLOCK = 15


@dataclass(frozen=True)
class ColumnRule:
    """How one staging field is computed from a source row."""

    field: str
    column: str | None = None
    const: Any = None
    sql: str | None = None
    json: str | None = None  # a JSON path into an ndjson file's record
    transform: str | None = None  # SQL applied to the column's or path's text: {value}
    format: str | None = None
    map: str | None = None
    default: Any = None


@dataclass(frozen=True)
class FileFilter:
    """Rows matching ``sql`` are kept; the others are counted under ``rule``."""

    rule: str
    sql: str


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

    @property
    def id_base(self) -> int:
        """First id of this site's block: ids never collide across sites.

        >>> SiteSpec("a", "", 2, ()).id_base
        268435456
        """
        return self.id_block << 27


def spec_path(name: str) -> Path:
    return settings.sites_dir() / f"{settings.check_site_name(name)}.yaml"


def available_sites() -> list[str]:
    return sorted(p.stem for p in settings.sites_dir().glob("*.yaml"))


def load_spec(name_or_path: str | Path) -> SiteSpec:
    """Load and validate a site spec by site name or path; raise EtlError listing every problem."""
    path = Path(name_or_path)
    if path.suffix not in {".yaml", ".yml"}:
        path = spec_path(str(name_or_path))
        if not path.exists():
            known = ", ".join(available_sites()) or "none"
            raise EtlError(f"no site spec named {name_or_path!r} in {path.parent} (known: {known})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EtlError(f"{path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise EtlError(f"{path}: not valid YAML: {exc}") from exc
    problems: list[str] = []
    spec = _parse(raw, problems, path)
    if problems:
        listed = "\n".join(f"  {path}: {p}" for p in problems)
        raise EtlError(f"site spec {path.name} has {len(problems)} problem(s):\n{listed}")
    assert spec is not None
    return spec


def _parse(raw: Any, problems: list[str], path: Path) -> SiteSpec | None:
    if not isinstance(raw, dict):
        problems.append("top level: expected a mapping of keys (site, files, ...)")
        return None
    for key in sorted(set(raw) - _TOP_KEYS):
        problems.append(f"{key}: unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")
    site = raw.get("site")
    if not isinstance(site, str):
        problems.append("site: required, the site name")
        site = path.stem
    elif site != path.stem:
        problems.append(f"site: {site!r} must equal the file name {path.stem!r}")
    else:
        try:
            settings.check_site_name(site)
        except EtlError as exc:
            problems.append(f"site: {exc}")
    id_block = raw.get("id_block")
    if not isinstance(id_block, int) or isinstance(id_block, bool):
        problems.append(f"id_block: required, a whole number from 1 to {MAX_ID_BLOCK}")
        id_block = 0
    elif not 1 <= id_block <= MAX_ID_BLOCK:
        problems.append(f"id_block: {id_block} is outside 1..{MAX_ID_BLOCK}")

    defaults = dict(_READ_DEFAULTS)
    raw_defaults = raw.get("defaults") or {}
    if not isinstance(raw_defaults, dict):
        problems.append("defaults: expected a mapping")
        raw_defaults = {}
    for key, value in raw_defaults.items():
        if key not in _READ_DEFAULTS:
            problems.append(f"defaults.{key}: unknown key")
        defaults[key] = value
    _check_read_options(defaults, "defaults", problems)

    value_maps = raw.get("value_maps") or {}
    if not isinstance(value_maps, dict) or not all(
        isinstance(m, dict) for m in value_maps.values()
    ):
        problems.append("value_maps: expected a mapping of map name -> {source value: target}")
        value_maps = {}
    value_maps = {
        name: {str(k): v for k, v in mapping.items()} for name, mapping in value_maps.items()
    }

    units = raw.get("units") or {}
    unit_vocabulary = units.get("vocabulary") if isinstance(units, dict) else None
    if units and not isinstance(unit_vocabulary, str):
        problems.append("units.vocabulary: expected the source_vocabulary_id of a unit code map")

    batches = raw.get("batches", "incremental")
    if batches not in BATCH_MODES:
        problems.append(
            f"batches: {batches!r} is not one of {sorted(BATCH_MODES)} (incremental: each "
            "batch adds to the earlier ones; snapshot: each batch is the whole export)"
        )
    max_rate = raw.get("max_reject_rate", DEFAULT_MAX_REJECT_RATE)
    if (
        isinstance(max_rate, bool)
        or not isinstance(max_rate, int | float)
        or not 0 <= max_rate <= 1
    ):
        problems.append("max_reject_rate: expected a fraction from 0 to 1 (e.g. 0.05)")
        max_rate = DEFAULT_MAX_REJECT_RATE

    contracts = raw.get("contracts") or []
    if not isinstance(contracts, list):
        problems.append("contracts: expected a list of {target, expectation, arguments...}")
        contracts = []
    for i, c in enumerate(contracts):
        if not isinstance(c, dict) or c.get("target") not in TARGETS:
            problems.append(f"contracts[{i}].target: one of {sorted(TARGETS)}")
        elif not re.match(r"^expect_[a-z_]+$", str(c.get("expectation", ""))):
            problems.append(
                f"contracts[{i}].expectation: a Great Expectations expectation name, "
                "e.g. expect_column_values_to_be_between"
            )
    thresholds = raw.get("check_thresholds") or {}
    if not isinstance(thresholds, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 100
        for v in thresholds.values()
    ):
        problems.append("check_thresholds: expected check id or name -> percent (0 to 100)")
        thresholds = {}

    code_forms = raw.get("code_forms") or {}
    if not isinstance(code_forms, dict) or not all(isinstance(v, str) for v in code_forms.values()):
        problems.append("code_forms: expected code system -> regular expression")
        code_forms = {}
    for system, form in code_forms.items():
        try:
            re.compile(form)
        except re.error as exc:
            problems.append(f"code_forms.{system}: not a regular expression: {exc}")

    schedule = raw.get("schedule", DEFAULT_SCHEDULE)
    if schedule is not None and (
        not isinstance(schedule, str) or not (schedule in CRON_PRESETS or _CRON.match(schedule))
    ):
        problems.append(
            f"schedule: {schedule!r} is not one of {sorted(CRON_PRESETS)}, a five-field cron "
            "expression (e.g. '0 3 * * *') or null (manual runs only)"
        )
        schedule = DEFAULT_SCHEDULE

    buckets = raw.get("buckets", 1)
    if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= MAX_BUCKETS:
        problems.append(f"buckets: {buckets!r} is not a whole number from 1 to {MAX_BUCKETS}")
        buckets = 1

    raw_files = raw.get("files")
    if not isinstance(raw_files, list) or not raw_files:
        problems.append("files: required, a list of the export's files")
        raw_files = []
    files = []
    seen: set[str] = set()
    for i, entry in enumerate(raw_files):
        fs = _parse_file(entry, f"files[{i}]", defaults, value_maps, problems)
        if fs is None:
            continue
        if fs.name in seen:
            problems.append(f"files[{i}].name: {fs.name!r} is used twice")
        seen.add(fs.name)
        files.append(fs)
    if not any(f.target == "person" for f in files):
        problems.append("files: no file has target 'person'")
    return SiteSpec(
        site=site,
        description=str(raw.get("description") or site),
        id_block=id_block,
        files=tuple(files),
        value_maps=value_maps,
        unit_vocabulary=unit_vocabulary,
        path=path,
        batches=str(batches),
        max_reject_rate=float(max_rate),
        contracts=tuple(c for c in contracts if isinstance(c, dict)),
        check_thresholds={str(k): float(v) for k, v in thresholds.items()},
        code_forms={str(k): v for k, v in code_forms.items()},
        schedule=schedule,
        buckets=buckets,
    )


def _check_read_options(opts: dict[str, Any], where: str, problems: list[str]) -> None:
    if opts["format"] not in FORMATS:
        problems.append(f"{where}.format: {opts['format']!r} is not one of {sorted(FORMATS)}")
    if str(opts["encoding"]).lower() not in ENCODINGS:
        problems.append(f"{where}.encoding: {opts['encoding']!r} is not one of {sorted(ENCODINGS)}")
    for key in ("delimiter", "quote", "escape"):
        if not isinstance(opts[key], str) or len(opts[key]) > 1:
            problems.append(f"{where}.{key}: expected one character (or '' for none)")
    if not isinstance(opts["header"], bool):
        problems.append(f"{where}.header: expected true or false")
    if not isinstance(opts["null_values"], list):
        problems.append(f"{where}.null_values: expected a list of strings")
    for key in ("date_format", "datetime_format"):
        if not isinstance(opts[key], str) or "%" not in opts[key]:
            problems.append(f"{where}.{key}: expected a strptime format such as '%Y%m%d'")
    sentinels = opts["sentinel_dates"]
    if not isinstance(sentinels, list) or not all(
        isinstance(d, str | date) and _iso_date(d) for d in sentinels
    ):
        problems.append(f"{where}.sentinel_dates: expected a list of dates as YYYY-MM-DD")


def _iso_date(value: object) -> bool:
    try:
        date.fromisoformat(str(value))
    except ValueError:
        return False
    return True


def _parse_file(
    entry: Any,
    where: str,
    defaults: dict[str, Any],
    value_maps: dict[str, dict[str, Any]],
    problems: list[str],
) -> FileSpec | None:
    if not isinstance(entry, dict):
        problems.append(f"{where}: expected a mapping")
        return None
    name = entry.get("name")
    if not isinstance(name, str) or not re.match(r"^[a-z][a-z0-9_]*$", name):
        problems.append(f"{where}.name: required, lowercase letters, digits and '_'")
        name = f"file{where}"
    where = f"{where} ({name})"
    for key in sorted(set(entry) - _FILE_KEYS):
        problems.append(f"{where}.{key}: unknown key")
    pattern = entry.get("pattern")
    if not isinstance(pattern, str) or not pattern or "/" in pattern or ".." in pattern:
        problems.append(f"{where}.pattern: required, a file name or glob inside the export folder")
        pattern = ""
    read = {**defaults, **{k: entry[k] for k in _READ_DEFAULTS if k in entry}}
    if any(k in entry for k in _READ_DEFAULTS):
        _check_read_options(read, where, problems)
    required = entry.get("required", True)
    skip = entry.get("skip")
    if skip is not None:
        if not isinstance(skip, str) or not skip.strip():
            problems.append(f"{where}.skip: give the reason this file is not used")
        return FileSpec(name, pattern, None, read, required=bool(required), skip=str(skip))

    target = entry.get("target")
    if target not in TARGETS:
        problems.append(f"{where}.target: {target!r} is not one of {sorted(TARGETS)} (or use skip)")
        return None
    fields = TARGETS[target]
    columns_raw = entry.get("columns")
    if not isinstance(columns_raw, dict) or not columns_raw:
        problems.append(f"{where}.columns: required, staging field -> source column rule")
        columns_raw = {}
    shorthands = {}
    if "domain" in entry:
        if target != "event" or entry["domain"] not in CDM_DOMAINS:
            problems.append(f"{where}.domain: only for target event, one of {sorted(CDM_DOMAINS)}")
        shorthands["default_domain"] = {"const": entry["domain"]}
    if "type_concept_id" in entry:
        shorthands["type_concept_id"] = {"const": entry["type_concept_id"]}
    for key in shorthands:
        if key in columns_raw:
            problems.append(f"{where}.columns.{key}: also given by a file-level shorthand")
    columns: list[ColumnRule] = []
    for fname, rule in {**columns_raw, **shorthands}.items():
        col_where = f"{where}.columns.{fname}"
        if fname not in fields:
            problems.append(f"{col_where}: {target!r} has no staging field {fname!r}")
            continue
        free = fields[fname].free_text
        parsed = _parse_column(fname, free, rule, col_where, value_maps, problems)
        if parsed:
            columns.append(parsed)
    given = {c.field for c in columns}
    for fname, f in fields.items():
        if f.required and fname not in given:
            problems.append(f"{where}.columns: required staging field {fname!r} is not mapped")
    if read["format"] != "ndjson" and any(c.json for c in columns):
        problems.append(f"{where}.columns: json paths are for format ndjson only")
    flt = entry.get("filter")
    file_filter = None
    if flt is not None:
        if not isinstance(flt, dict) or not {"rule", "sql"} <= set(flt):
            problems.append(f"{where}.filter: expected {{rule: name, sql: condition to keep}}")
        else:
            file_filter = FileFilter(str(flt["rule"]), str(flt["sql"]))
    return FileSpec(
        name=name,
        pattern=pattern,
        target=target,
        read=read,
        columns=tuple(columns),
        required=bool(required),
        filter=file_filter,
    )


def _parse_column(
    fname: str,
    field_free_text: bool,
    rule: Any,
    where: str,
    value_maps: dict[str, dict[str, Any]],
    problems: list[str],
) -> ColumnRule | None:
    if isinstance(rule, str):
        rule = {"column": rule}
    if not isinstance(rule, dict):
        problems.append(f"{where}: expected a column name or a mapping with column/const/sql")
        return None
    for key in sorted(set(rule) - _COLUMN_KEYS):
        problems.append(f"{where}.{key}: unknown key (allowed: {', '.join(sorted(_COLUMN_KEYS))})")
    sources = [k for k in ("column", "const", "sql", "json") if k in rule]
    if len(sources) != 1:
        problems.append(f"{where}: give exactly one of column, const, sql or json")
        return None
    path = rule.get("json")
    if path is not None and (not isinstance(path, str) or not path.startswith("$")):
        problems.append(f"{where}.json: expected a JSON path such as '$.subject.reference'")
    transform = rule.get("transform")
    if transform is not None and (
        not isinstance(transform, str)
        or "{value}" not in transform
        or not (rule.get("column") or rule.get("json"))
    ):
        problems.append(
            f"{where}.transform: a SQL expression over {{value}} (the text of the column or "
            "JSON path), e.g. \"replace({value}, 'Patient/', '')\"; with column or json only"
        )
    free_text = rule.get("free_text")
    if free_text is not None and free_text != "scrub":
        problems.append(f"{where}.free_text: the one allowed value is 'scrub'")
    if field_free_text and free_text != "scrub" and "const" not in rule:
        problems.append(
            f"{where}: free text may carry identifiers; it is dropped unless the spec says "
            "`free_text: scrub` (then phone numbers, resident registration numbers and "
            "e-mail addresses are replaced by [REDACTED])"
        )
    column = rule.get("column")
    if column is not None and (not isinstance(column, str) or not _IDENT.match(column)):
        problems.append(
            f"{where}.column: {column!r} is not a column name "
            "(no double quotes or control characters)"
        )
    fmt = rule.get("format")
    if fmt is not None and (
        not isinstance(fmt, str) or ("%" not in fmt and fmt not in FORMAT_ALIASES)
    ):
        problems.append(f"{where}.format: use date, datetime or a strptime format")
    vmap = rule.get("map")
    if vmap is not None and vmap not in value_maps:
        problems.append(f"{where}.map: no value map named {vmap!r} under value_maps")
    return ColumnRule(
        field=fname,
        column=column,
        const=rule.get("const"),
        sql=rule.get("sql"),
        json=path,
        transform=transform,
        format=fmt,
        map=vmap,
        default=rule.get("default"),
    )
