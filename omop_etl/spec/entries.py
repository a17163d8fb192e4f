"""One entry of a spec's ``files``: where its files are, how to read them, what each
record gives (column rules, lookups into other files, elements, its record key)."""

from __future__ import annotations

import re
from datetime import date
from pathlib import PurePosixPath
from typing import Any

from omop_etl import jsonpath
from omop_etl.errors import EtlError
from omop_etl.spec.model import ColumnRule, Each, FileFilter, FileSpec, Lookup
from omop_etl.staging import TARGETS

FORMATS = {"csv", "parquet", "ndjson"}
ENCODINGS = {"utf-8", "utf8", "utf-8-sig", "cp949", "euc-kr", "euc_kr"}
CDM_DOMAINS = {"Condition", "Drug", "Procedure", "Measurement", "Observation", "Device"}
# date formats besides strptime patterns: the read options' own, and ISO 8601 (a date,
# or a date-time with optional fraction and optional Z or offset, as FHIR writes them)
FORMAT_ALIASES = {"date", "datetime", "iso8601"}
_SOURCES = ("column", "const", "sql", "json", "lookup", "element")
_COLUMN_KEYS = {*_SOURCES, "transform", "format", "map", "default", "free_text"}
READ_DEFAULTS: dict[str, Any] = {
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
    # a record longer than this (bytes) is rejected as oversized_record
    "max_record_bytes": 16 << 20,
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
    "lookups",
    "each",
    "record_key",
    "duplicates",
    *READ_DEFAULTS,
}
_LOOKUP_KEYS = {"file", "key", "columns", "missing", "choose"}
# a source column name: any text without double quotes or control characters (Korean
# headers, spaces and brackets included); it is always quoted in SQL
_IDENT = re.compile(r'^[^"\x00-\x1f]+$')
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def check_read_options(opts: dict[str, Any], where: str, problems: list[str]) -> None:
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
        if not isinstance(opts[key], str) or ("%" not in opts[key] and opts[key] != "iso8601"):
            problems.append(
                f"{where}.{key}: expected a strptime format such as '%Y%m%d', or iso8601"
            )
    sentinels = opts["sentinel_dates"]
    if not isinstance(sentinels, list) or not all(
        isinstance(d, str | date) and _iso_date(d) for d in sentinels
    ):
        problems.append(f"{where}.sentinel_dates: expected a list of dates as YYYY-MM-DD")
    size = opts["max_record_bytes"]
    if isinstance(size, bool) or not isinstance(size, int) or not 1 << 10 <= size <= 1 << 30:
        problems.append(f"{where}.max_record_bytes: expected a whole number of bytes, 1 KiB–1 GiB")


def _iso_date(value: object) -> bool:
    try:
        date.fromisoformat(str(value))
    except ValueError:
        return False
    return True


def check_pattern(pattern: Any) -> str | None:
    """Why a file pattern is not usable, or None. Patterns are relative to the export
    folder and may name sub-folders (``hosp/*.csv.gz``, ``**/Observation.*.ndjson``).

    >>> check_pattern("hosp/admissions.csv.gz") is None
    True
    >>> check_pattern("../other/x.csv")
    "'..' leaves the export folder"
    """
    if not isinstance(pattern, str) or not pattern.strip():
        return "required, a file name or glob inside the export folder"
    if pattern.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", pattern):
        return "must be relative to the export folder, not an absolute path"
    parts = PurePosixPath(pattern).parts
    if ".." in parts:
        return "'..' leaves the export folder"
    if "\\" in pattern:
        return "separate folders with '/'"
    if parts[-1] == "**":
        return "must end in a file name or glob, not '**'"
    return None


def parse_file(
    entry: Any,
    where: str,
    defaults: dict[str, Any],
    value_maps: dict[str, dict[str, Any]],
    entry_names: list[Any],
    problems: list[str],
) -> FileSpec | None:
    if not isinstance(entry, dict):
        problems.append(f"{where}: expected a mapping")
        return None
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(f"{where}.name: required, lowercase letters, digits and '_'")
        name = f"file{where}"
    where = f"{where} ({name})"
    for key in sorted(set(entry) - _FILE_KEYS):
        problems.append(f"{where}.{key}: unknown key")
    pattern = entry.get("pattern")
    why = check_pattern(pattern)
    if why:
        problems.append(
            f"{where}.pattern: {pattern!r}: {why}" if pattern else f"{where}.pattern: {why}"
        )
        pattern = ""
    read = {**defaults, **{k: entry[k] for k in READ_DEFAULTS if k in entry}}
    if any(k in entry for k in READ_DEFAULTS):
        check_read_options(read, where, problems)
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
    ndjson = read["format"] == "ndjson"
    lookups = _parse_lookups(entry.get("lookups"), where, name, ndjson, entry_names, problems)
    each = _parse_each(entry.get("each"), where, target, ndjson, problems)
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
    context = _Context(value_maps, lookups, each, ndjson)
    columns: list[ColumnRule] = []
    for fname, rule in {**columns_raw, **shorthands}.items():
        col_where = f"{where}.columns.{fname}"
        if fname not in fields:
            problems.append(f"{col_where}: {target!r} has no staging field {fname!r}")
            continue
        parsed = _parse_column(fname, fields[fname].free_text, rule, col_where, context, problems)
        if parsed:
            columns.append(parsed)
    given = {c.field for c in columns}
    for fname, f in fields.items():
        if f.required and fname not in given:
            problems.append(f"{where}.columns: required staging field {fname!r} is not mapped")
    flt = entry.get("filter")
    file_filter = None
    if flt is not None:
        if not isinstance(flt, dict) or not {"rule", "sql"} <= set(flt):
            problems.append(f"{where}.filter: expected {{rule: name, sql: condition to keep}}")
        else:
            file_filter = FileFilter(str(flt["rule"]), str(flt["sql"]))
    record_key = _parse_record_key(entry.get("record_key"), where, ndjson, problems)
    duplicates = entry.get("duplicates", "keep")
    if duplicates not in ("keep", "reject"):
        problems.append(
            f"{where}.duplicates: 'keep' (default: repeated events are kept, as OMOP does) "
            "or 'reject' (a row whose mapped values repeat another's is a duplicate)"
        )
        duplicates = "keep"
    if record_key and duplicates == "reject":
        problems.append(f"{where}: give record_key or duplicates: reject, not both")
    if target in ("cost",) and (each or record_key):
        problems.append(f"{where}: cost lines are summed per encounter: no each or record_key")
    return FileSpec(
        name=name,
        pattern=pattern,
        target=target,
        read=read,
        columns=tuple(columns),
        required=bool(required),
        filter=file_filter,
        lookups=lookups,
        each=each,
        record_key=record_key,
        duplicates=str(duplicates),
    )


class _Context:
    """What a column rule of one entry may refer to."""

    def __init__(self, value_maps, lookups: tuple[Lookup, ...], each: Each | None, ndjson: bool):
        self.value_maps = value_maps
        self.lookups = {lk.name: lk for lk in lookups}
        self.each = each
        self.ndjson = ndjson


def _parse_column(
    fname: str,
    field_free_text: bool,
    rule: Any,
    where: str,
    context: _Context,
    problems: list[str],
) -> ColumnRule | None:
    if isinstance(rule, str | list):
        rule = {"column": rule}
    if not isinstance(rule, dict):
        problems.append(f"{where}: expected a column name or a mapping with column/const/sql")
        return None
    for key in sorted(set(rule) - _COLUMN_KEYS):
        problems.append(f"{where}.{key}: unknown key (allowed: {', '.join(sorted(_COLUMN_KEYS))})")
    sources = [k for k in _SOURCES if k in rule]
    if len(sources) != 1:
        problems.append(f"{where}: give exactly one of {', '.join(_SOURCES)}")
        return None
    path = rule.get("json")
    json_alternatives: tuple[str, ...] = ()
    if isinstance(path, list):  # the first of several paths that holds a value
        json_alternatives = tuple(path)
        path = path[0] if path else None
        for alternative in json_alternatives:
            _check_json(alternative, f"{where}.json", problems)
        if not json_alternatives:
            problems.append(f"{where}.json: a JSON path, or a list of them to try in turn")
    elif path is not None:
        _check_json(path, f"{where}.json", problems)
    if path is not None and not context.ndjson:
        problems.append(f"{where}.json: json paths are for format ndjson only")
    lookup = rule.get("lookup")
    if lookup is not None:
        name, _, column = str(lookup).partition(".")
        found = context.lookups.get(name)
        if found is None or column not in found.columns:
            known = ", ".join(f"{lk}.{c}" for lk, v in context.lookups.items() for c in v.columns)
            problems.append(
                f"{where}.lookup: {lookup!r} is not a lookup value of this file "
                f"(name.column of its lookups: {known or 'none declared'})"
            )
    element = rule.get("element")
    if element is not None:
        _check_element(element, f"{where}.element", context.each, problems)
    transform = rule.get("transform")
    if transform is not None and (
        not isinstance(transform, str) or "{value}" not in transform or "sql" in rule
    ):
        problems.append(
            f"{where}.transform: a SQL expression over {{value}} (the value's text), e.g. "
            "\"replace({value}, 'Patient/', '')\"; not with sql"
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
    column, alternatives = _column_names(rule.get("column"), f"{where}.column", problems)
    fmt = rule.get("format")
    if fmt is not None and (
        not isinstance(fmt, str) or ("%" not in fmt and fmt not in FORMAT_ALIASES)
    ):
        problems.append(f"{where}.format: use date, datetime, iso8601 or a strptime format")
    vmap = rule.get("map")
    if vmap is not None and vmap not in context.value_maps:
        problems.append(f"{where}.map: no value map named {vmap!r} under value_maps")
    return ColumnRule(
        field=fname,
        column=column,
        const=rule.get("const"),
        sql=rule.get("sql"),
        json=path,
        lookup=lookup,
        element=element,
        transform=transform,
        format=fmt,
        map=vmap,
        default=rule.get("default"),
        alternatives=alternatives,
        json_alternatives=json_alternatives,
    )


def _column_names(raw: Any, where: str, problems: list[str]) -> tuple[str | None, tuple[str, ...]]:
    """A column rule's name, or its alternatives (``[START_DATE, START_YEAR]``: the first
    one the header has)."""
    if raw is None:
        return None, ()
    names = raw if isinstance(raw, list) else [raw]
    bad = [n for n in names if not isinstance(n, str) or not _IDENT.match(n)]
    if bad or not names:
        problems.append(
            f"{where}: {raw!r} is not a column name or a list of them "
            "(no double quotes or control characters)"
        )
        return None, ()
    return names[0], tuple(names) if isinstance(raw, list) else ()


def _check_json(path: Any, where: str, problems: list[str]) -> None:
    try:
        jsonpath.parse(path)
    except EtlError as exc:
        problems.append(f"{where}: {exc} (e.g. '$.subject.reference')")


def _check_element(element: Any, where: str, each: Each | None, problems: list[str]) -> None:
    if each is None:
        problems.append(f"{where}: only for a file with `each` (one row per element)")
    elif each.json is not None:
        _check_json(element, where, problems)
    elif element not in ("name", "value"):
        problems.append(f"{where}: 'name' (the column's name) or 'value' (its value)")


def _parse_each(
    raw: Any, where: str, target: str, ndjson: bool, problems: list[str]
) -> Each | None:
    if raw is None:
        return None
    where = f"{where}.each"
    if target != "event":
        problems.append(f"{where}: only for target event (one event per element)")
        return None
    if isinstance(raw, dict) and set(raw) == {"json"}:
        _check_json(raw["json"], f"{where}.json", problems)
        if not ndjson:
            problems.append(f"{where}.json: json paths are for format ndjson only")
        return Each(json=str(raw["json"]))
    if isinstance(raw, dict) and set(raw) == {"columns"}:
        cols = raw["columns"]
        if (
            isinstance(cols, list)
            and cols
            and all(isinstance(c, str) and _IDENT.match(c) for c in cols)
        ):
            if len(set(cols)) != len(cols):
                problems.append(f"{where}.columns: a column is listed twice")
            return Each(columns=tuple(cols))
        problems.append(f"{where}.columns: a list of the wide row's column names")
        return None
    problems.append(
        f"{where}: {{json: <path of an array>}} (one row per array element) or "
        "{columns: [col, ...]} (one row per listed column holding a value)"
    )
    return None


def _value_rule(
    raw: Any, fname: str, where: str, ndjson: bool | None, problems: list[str]
) -> ColumnRule | None:
    """A key part or a lookup value: a column name, a JSON path ($...), or a mapping with
    column or json and an optional transform. ``ndjson`` says whether the file's records
    are JSON (None: not known yet, see ``check_lookup_files``)."""
    if isinstance(raw, str):
        raw = {"json": raw} if raw.startswith("$") else {"column": raw}
    if (
        not isinstance(raw, dict)
        or len([k for k in ("column", "json") if k in raw]) != 1
        or set(raw) - {"column", "json", "transform"}
    ):
        problems.append(f"{where}: a column name, a JSON path or {{column|json, transform}}")
        return None
    if "json" in raw:
        _check_json(raw["json"], where, problems)
        if ndjson is False:
            problems.append(f"{where}: json paths are for format ndjson only")
    elif not isinstance(raw["column"], str) or not _IDENT.match(raw["column"]):
        problems.append(f"{where}: {raw['column']!r} is not a column name")
        return None
    elif ndjson:
        problems.append(f"{where}: an ndjson record has no columns: give a JSON path ($...)")
    transform = raw.get("transform")
    if transform is not None and (not isinstance(transform, str) or "{value}" not in transform):
        problems.append(f"{where}.transform: a SQL expression over {{value}}")
    return ColumnRule(fname, column=raw.get("column"), json=raw.get("json"), transform=transform)


def _parse_record_key(
    raw: Any, where: str, ndjson: bool, problems: list[str]
) -> tuple[ColumnRule, ...]:
    if raw is None:
        return ()
    parts = raw if isinstance(raw, list) else [raw]
    rules = [
        _value_rule(p, f"_key{i}", f"{where}.record_key[{i}]", ndjson, problems)
        for i, p in enumerate(parts)
    ]
    if not parts:
        problems.append(f"{where}.record_key: the columns (or JSON paths) that name a record")
    return tuple(r for r in rules if r)


def _parse_lookups(
    raw: Any, where: str, own: str, ndjson: bool, entry_names: list[Any], problems: list[str]
) -> tuple[Lookup, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{where}.lookups: a mapping of lookup name -> {{file, key, columns}}")
        return ()
    lookups = []
    for name, spec in raw.items():
        at = f"{where}.lookups.{name}"
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(f"{at}: a lookup name is lowercase letters, digits and '_'")
            continue
        if not isinstance(spec, dict):
            problems.append(f"{at}: expected {{file, key, columns}}")
            continue
        for key in sorted(set(spec) - _LOOKUP_KEYS):
            problems.append(f"{at}.{key}: unknown key (allowed: {', '.join(sorted(_LOOKUP_KEYS))})")
        file = spec.get("file")
        if file not in entry_names or file == own:
            problems.append(f"{at}.file: {file!r} is not another file entry of this spec")
        keys = _lookup_keys(spec.get("key"), at, ndjson, problems)
        columns = _lookup_columns(spec.get("columns"), at, problems)
        missing = spec.get("missing", "reject")
        if missing not in ("reject", "keep"):
            problems.append(
                f"{at}.missing: 'reject' (default: a record whose key finds nothing is rejected "
                f"as lookup_missing:{name}) or 'keep' (its lookup values stay empty)"
            )
        choose = _lookup_choose(spec.get("choose"), at, columns, problems)
        lookups.append(Lookup(name, str(file), keys, columns, str(missing), choose))
    return tuple(lookups)


def _lookup_keys(raw: Any, where: str, ndjson: bool, problems: list[str]):
    """``key: id`` (the same column in both files), ``[a, b]``, ``{this: that}`` or a list
    of ``{this: rule, that: rule}``."""
    where = f"{where}.key"
    pairs: list[tuple[Any, Any]] = []
    if isinstance(raw, str):
        pairs = [(raw, raw)]
    elif isinstance(raw, list) and raw and all(isinstance(p, str) for p in raw):
        pairs = [(p, p) for p in raw]
    elif isinstance(raw, list) and raw and all(isinstance(p, dict) for p in raw):
        if not all(set(p) == {"this", "that"} for p in raw):
            problems.append(f"{where}: each part is {{this: ..., that: ...}}")
            return ()
        pairs = [(p["this"], p["that"]) for p in raw]
    elif isinstance(raw, dict) and raw:
        pairs = list(raw.items())
    else:
        problems.append(
            f"{where}: required: a column both files have, a list of them, "
            "{this file's column: that file's column} or a list of {this: ..., that: ...}"
        )
        return ()
    keys = []
    for i, (this, that) in enumerate(pairs):
        a = _value_rule(this, f"_this{i}", f"{where}[{i}].this", ndjson, problems)
        # the other file's side is checked against its format once every entry is parsed
        b = _value_rule(that, f"_that{i}", f"{where}[{i}].that", None, problems)
        if a and b:
            keys.append((a, b))
    return tuple(keys)


def _lookup_columns(raw: Any, where: str, problems: list[str]) -> dict[str, ColumnRule]:
    """``columns: [admittime, race]`` or ``{name: column or JSON path}``."""
    where = f"{where}.columns"
    if isinstance(raw, list) and raw and all(isinstance(c, str) for c in raw):
        raw = {c: c for c in raw}
    if not isinstance(raw, dict) or not raw:
        problems.append(
            f"{where}: required: the values it brings, [col, ...] or {{name: col or $.path}}"
        )
        return {}
    columns = {}
    for name, rule in raw.items():
        if not isinstance(name, str) or not _IDENT.match(name):
            problems.append(f"{where}: {name!r} is not a name")
            continue
        parsed = _value_rule(rule, name, f"{where}.{name}", None, problems)
        if parsed is not None:
            columns[name] = parsed
    return columns


def _lookup_choose(raw: Any, where: str, columns: dict[str, ColumnRule], problems: list[str]):
    if raw is None:
        return None
    if (
        isinstance(raw, dict)
        and len(raw) == 1
        and next(iter(raw)) in ("latest", "earliest")
        and next(iter(raw.values())) in columns
    ):
        direction, column = next(iter(raw.items()))
        return str(direction), str(column)
    problems.append(
        f"{where}.choose: {{latest: <one of its columns>}} or {{earliest: ...}}: which of "
        "several records with the key to take"
    )
    return None


def check_lookup_files(files: list[FileSpec], problems: list[str]) -> None:
    """Each lookup's values and keys are named as its file's records allow: JSON paths
    in an ndjson file, column names in the others."""
    by_name = {f.name: f for f in files}
    for fs in files:
        for lk in fs.lookups:
            other = by_name.get(lk.file)
            if other is None:
                continue
            ndjson = other.read["format"] == "ndjson"
            rules = [that for _, that in lk.keys] + list(lk.columns.values())
            for rule in rules:
                if ndjson and rule.column:
                    problems.append(
                        f"files ({fs.name}).lookups.{lk.name}: {lk.file} is ndjson: name its "
                        f"values by JSON paths ($...), not column {rule.column!r}"
                    )
                elif not ndjson and rule.json:
                    problems.append(
                        f"files ({fs.name}).lookups.{lk.name}: {lk.file} has columns: "
                        f"{rule.json!r} is a JSON path"
                    )
