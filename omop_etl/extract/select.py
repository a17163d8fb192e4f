"""The SELECT that maps one file of one file entry onto its staging table.

A record is read once. Its lookups (values of other files of the batch, by key) are
joined to it; an entry with ``each`` turns it into one row per element. Each mapped
field is converted to its staging type, and each row gets the first rule it breaks
(``reject``) and what was fixed in it (``flag``). Layers, inside out:

1. ``_src``: the file's records (with their record number where needed, the values of
   the file's plain JSON paths, the record's elements), joined to its lookups;
2. the fields typed from the record (patient ids pseudonymized through the table of
   ids the patient files hold, else by their HMAC), the raw text of each;
3. free text scrubbed, codes in their canonical form;
4. the row's key, reject rule, flag, and values out of the date window emptied.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from omop_etl import jsonpath
from omop_etl.codes import normalized_sql
from omop_etl.extract.readers import RECORD, Source
from omop_etl.privacy import IDENTIFIER_PATTERNS, hmac_sql, scrub_sql
from omop_etl.spec import ColumnRule, FileSpec, Lookup, SiteSpec
from omop_etl.sql import literal, quote_ident
from omop_etl.staging import KEYED_BY_CONTENT, PATIENT_ID_FIELD, SQL_TYPES, SUMMED_BY, TARGETS

SRC = "_src"  # the alias of the file's records
_JSON = "_json"  # an ndjson record's values at the file's plain JSON paths, parsed once
_ELEMENT = "_element"  # the record's current element (entries with `each`)
NO_ELEMENTS = "no_elements"  # the placeholder row of a record that has no element
NOT_IN_KEY = {"code_name"}  # fields a content key leaves out
_ANY_IDENTIFIER = "|".join(f"({p})" for _, p in IDENTIFIER_PATTERNS)
_OFFSET = r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)$"


@dataclass(frozen=True)
class _Check:
    """One row rule: ``condition`` true means the row breaks ``rule`` on ``column``."""

    condition: str
    rule: str
    column: str  # a SQL expression of the column's label
    raw: str


@dataclass(frozen=True)
class Read:
    """Everything the SELECT of one file needs besides the entry and its file."""

    spec: SiteSpec
    batch_id: str
    file_no: int
    key: bytes  # the site's pseudonymization secret
    pseudonyms: str  # table of (_pm_id, _pm_pseudonym) of the patient files' ids
    window: tuple[date, date]  # the dates a clinical date may take
    lookup_sources: dict[str, list[Source]]  # file entry name -> its files in this batch
    # number the records in file order (an entry with a record key whose key repeats)
    ordered: bool = False


def case(whens: list[tuple[str, str]]) -> str:
    """A searched CASE of (condition, value) pairs; NULL when there are none."""
    if not whens:
        return "cast(null as varchar)"
    return "case " + " ".join(f"when {c} then {v}" for c, v in whens) + " end"


def _json_paths(rule: ColumnRule) -> tuple[str, ...]:
    return rule.json_alternatives or ((rule.json,) if rule.json else ())


def plain_json_paths(fs: FileSpec) -> list[str]:
    """The JSON paths without filters a file's rules read (extracted in one pass)."""
    paths = [p for r in fs.columns for p in _json_paths(r) if not jsonpath.has_filter(p)]
    return list(dict.fromkeys(paths))


def value_expr(rule: ColumnRule, source: Source, alias: str = SRC) -> str:
    """The raw VARCHAR expression of a rule's value in the record (no type, no map)."""
    if rule.const is not None:
        raw = f"cast({literal(rule.const)} as varchar)"
    elif rule.column:
        raw = f"cast({alias}.{quote_ident(rule.column)} as varchar)"
    elif rule.json:
        paths = plain_json_paths(source.fs) if alias == SRC else []
        values = [
            f"{alias}.{_JSON}[{paths.index(p) + 1}]"
            if p in paths
            else jsonpath.value_sql(f"{alias}.{RECORD}", p)
            for p in _json_paths(rule)
        ]
        raw = values[0] if len(values) == 1 else f"coalesce({', '.join(values)})"
    elif rule.lookup:
        name, _, column = rule.lookup.partition(".")
        raw = f"cast({quote_ident(name)}.{quote_ident(column)} as varchar)"
    elif rule.element is not None:
        if source.fs.each and source.fs.each.json is not None:
            raw = jsonpath.value_sql(f"{alias}.{_ELEMENT}", rule.element)
        else:
            raw = f"{alias}.{_ELEMENT}.{quote_ident(rule.element)}"
    else:
        raw = f"cast(({rule.sql}) as varchar)"
    if rule.transform:
        raw = f"({rule.transform.replace('{value}', raw)})"
    return raw


def _convert(expr: str, ftype: str, fmt: str | None, fs: FileSpec, tz: str) -> str:
    """SQL that turns a VARCHAR expression into the staging type (NULL when unparsable).

    Date-times with an offset (``%z`` in the format, or ``iso8601``) are converted to the
    site's time zone; without one they are taken as the site's local time.
    """
    if ftype == "text":
        return expr
    if ftype in ("int", "double"):
        return f"try_cast({expr} as {SQL_TYPES[ftype]})"
    pattern = {"date": fs.read["date_format"], "datetime": fs.read["datetime_format"]}.get(
        fmt or "", fmt
    )
    if pattern is None:
        pattern = fs.read["datetime_format"] if ftype == "timestamp" else fs.read["date_format"]
    if pattern == "iso8601":
        parsed = (
            f"case when regexp_matches({expr}, {literal(_OFFSET)}) "
            f"then timezone({literal(tz)}, try_cast({expr} as timestamptz)) "
            f"else try_cast({expr} as timestamp) end"
        )
    elif "%z" in pattern or "%Z" in pattern:
        parsed = f"timezone({literal(tz)}, try_strptime({expr}, {literal(pattern)}))"
    else:
        parsed = f"try_strptime({expr}, {literal(pattern)})"
    return f"cast({parsed} as {SQL_TYPES[ftype]})"


def _rule_sql(rule: ColumnRule, ftype: str, source: Source, spec: SiteSpec) -> tuple[str, str]:
    """(typed expression, raw VARCHAR expression) for one staging field."""
    fs = source.fs
    if rule.const is not None:
        value = literal(rule.const)
        return f"cast({value} as {SQL_TYPES[ftype]})", f"cast({value} as varchar)"
    raw = value_expr(rule, source)
    if rule.map:
        mapping = spec.value_maps[rule.map]
        cases = " ".join(f"when {literal(k)} then {literal(v)}" for k, v in mapping.items())
        default = literal(rule.default) if rule.default is not None else "null"
        typed = f"cast(case {raw} {cases} else {default} end as varchar)"
        return _convert(typed, ftype, None, fs, spec.timezone), raw
    if rule.sql and not rule.format:
        typed = f"try_cast(({rule.sql}) as {SQL_TYPES[ftype]})"
        if rule.default is not None:
            typed = f"coalesce({typed}, {literal(rule.default)})"
        return typed, raw
    typed = _convert(raw, ftype, rule.format, fs, spec.timezone)
    if rule.default is not None:
        typed = f"coalesce({typed}, cast({literal(rule.default)} as {SQL_TYPES[ftype]}))"
    return typed, raw


def numbered(relation: str) -> str:
    """The records with their number in the order DuckDB read them (1, 2, ...)."""
    return f"(select *, row_number() over () as _record_no from {relation})"


def records(source: Source, tag: str, *, record_no: bool) -> str:
    """The file's records: with their read order number, and (ndjson) the values of the
    file's plain JSON paths, parsed once."""
    relation = source.relation(tag)
    if record_no:
        relation = numbered(relation)
    paths = plain_json_paths(source.fs)
    if not paths:
        return relation
    listed = ", ".join(literal(p) for p in paths)
    return f"(select *, json_extract_string({RECORD}, [{listed}]) as {_JSON} from {relation})"


def lookup_relation(lookup: Lookup, sources: list[Source], tag: str) -> str:
    """One row per key of the looked-up file: its values, how many different value rows
    the key has (``_lk_n``), and ``_lk_found``."""
    keys = [f"_lk_{i}" for i in range(len(lookup.keys))]
    names = list(lookup.columns)
    parts = []
    for n, source in enumerate(sources):
        alias = "_that"
        exprs = [
            f"{value_expr(that, source, alias)} as {k}"
            for (_, that), k in zip(lookup.keys, keys, strict=True)
        ]
        exprs += [
            f"{value_expr(rule, source, alias)} as {quote_ident(c)}"
            for c, rule in lookup.columns.items()
        ]
        parts.append(f"select {', '.join(exprs)} from {source.relation(f'{tag}_{n}')} as {alias}")
    if not parts:
        nulls = [f"cast(null as varchar) as {k}" for k in keys]
        nulls += [f"cast(null as varchar) as {quote_ident(c)}" for c in names]
        parts = [f"select {', '.join(nulls)} where false"]
    rows = " union all ".join(parts)
    not_null = " and ".join(f"{k} is not null" for k in keys)
    group = ", ".join(keys)
    if lookup.choose:
        direction, by = lookup.choose
        pick = "max_by" if direction == "latest" else "min_by"
        struct = (
            "struct_pack(" + ", ".join(f"{quote_ident(c)} := {quote_ident(c)}" for c in names) + ")"
        )
        chosen = f"{pick}({struct}, struct_pack(o := {quote_ident(by)}, s := {struct}))"
        values = [f"{chosen}.{quote_ident(c)} as {quote_ident(c)}" for c in names]
        count = "1"
    else:
        values = [f"min({quote_ident(c)}) as {quote_ident(c)}" for c in names]
        count = "count(*)"
    return (
        f"(select {group}, {', '.join(values)}, {count} as _lk_n, true as _lk_found "
        f"from (select distinct * from ({rows}) where {not_null}) group by {group})"
    )


def _elements(source: Source) -> str:
    """The list of a record's elements (JSON values, or name/value structs)."""
    each = source.fs.each
    assert each is not None
    if each.json is not None:
        return jsonpath.elements_sql(RECORD, each.json)
    cells = ", ".join(
        f"{{'name': {literal(c)}, 'value': cast({quote_ident(c)} as varchar)}}"
        for c in each.columns
    )
    return f"list_filter([{cells}], lambda _e: _e.value is not null)"


def _expand(relation: str, source: Source) -> str:
    """One row per element of each record, numbered from 1; a record without elements
    keeps one row with element number 0 (counted, then set aside)."""
    items = f"({_elements(source)})"
    listed = f"case when len({items}) > 0 then {items} else [null] end"
    return (
        f"(select * exclude (_els, _n, _i), case when _n > 0 then _i else 0 end as _element_no "
        f"from (select *, unnest(_els) as {_ELEMENT}, unnest(generate_series(1, len(_els))) as _i "
        f"from (select *, {listed} as _els, coalesce(len({items}), 0) as _n from {relation})))"
    )


def file_select(source: Source, read: Read, tag: str, *, record_no: bool) -> str:
    """The SELECT that maps one file onto its staging table, with each row's reject rule.

    ``record_no``: the second read, which also says which column broke which rule and
    its raw value, and numbers the records.
    """
    fs = source.fs
    spec = read.spec
    fields = TARGETS[fs.target]
    rules = {r.field: r for r in fs.columns}
    number = record_no or (bool(fs.record_key) and read.ordered)
    inner = [f"{SRC}._record_no" if number else "cast(null as bigint) as _record_no"]
    middle = []
    checks: list[_Check] = []
    flags: list[tuple[str, str]] = []
    window_fields: list[str] = []
    ndjson = fs.read["format"] == "ndjson"
    if ndjson:
        inner.append(f"{SRC}.{RECORD} is null as _malformed")
        checks.append(_Check("_malformed", "malformed_json", literal(RECORD), "null"))
    if fs.each:
        inner.append(f"{SRC}._element_no")
        label = fs.each.json or "columns"
        checks.append(_Check("_element_no = 0", NO_ELEMENTS, literal(label), "null"))
    else:
        inner.append("cast(null as integer) as _element_no")
    used = {r.column for r in (*fs.columns, *fs.record_key) if r.column}
    used |= {this.column for lk in fs.lookups for this, _ in lk.keys if this.column}
    used |= set(fs.each.columns) if fs.each else set()
    unread = sorted(set(source.columns) - used)
    if source.check_every_column and unread and fs.read["format"] == "csv":
        # DuckDB decodes only the columns a query uses: touch the others too, so an
        # undecodable byte anywhere in a record rejects the record (the check never fires)
        touched = " or ".join(f"{SRC}.{quote_ident(c)} is null" for c in unread)
        inner.append(f"({touched}) as _every_column_read")
        checks.append(_Check("_every_column_read is null", "unreachable", "''", "null"))
    # a filter decides first which records are in scope: a record it leaves out is
    # filtered whatever its values (only a record that is not one at all comes before)
    record_level = len(checks)
    joins = [_lookup_join(lk, source, read, tag) for lk in fs.lookups]
    for lk in fs.lookups:
        alias = quote_ident(lk.name)
        inner.append(f"{alias}._lk_found is null as {quote_ident('_lk_missing_' + lk.name)}")
        inner.append(f"coalesce({alias}._lk_n, 0) > 1 as {quote_ident('_lk_many_' + lk.name)}")
        keys = ", ".join(this.label for this, _ in lk.keys)
        if lk.missing == "reject":
            checks.append(
                _Check(
                    quote_ident("_lk_missing_" + lk.name),
                    f"lookup_missing:{lk.name}",
                    literal(keys),
                    "null",
                )
            )
        checks.append(
            _Check(
                quote_ident("_lk_many_" + lk.name),
                f"lookup_ambiguous:{lk.name}",
                literal(keys),
                "null",
            )
        )
    earliest, latest = read.window
    for name, f in fields.items():
        rule = rules.get(name)
        if rule is None:
            continue  # a field the entry does not map stays NULL (insert by name)
        typed, raw = _rule_sql(rule, f.type, source, spec)
        if name == PATIENT_ID_FIELD and rule.const is None:
            joins.append(f"left join {read.pseudonyms} as _pm on _pm._pm_id = {typed}")
            typed = f"coalesce(_pm._pm_pseudonym, {hmac_sql(typed, read.key)})"
        label = _label(rule, fs)
        if f.free_text:
            text = quote_ident("_text_" + name)
            inner.append(f"{typed} as {text}")
            middle.append(
                f"case when regexp_matches({text}, {literal(_ANY_IDENTIFIER)}) "
                f"then {scrub_sql(text)} else {text} end as {quote_ident(name)}"
            )
            flags.append((f"{quote_ident(name)} <> {text}", literal(f"scrubbed:{name}")))
        else:
            inner.append(f"{typed} as {quote_ident(name)}")
        value = quote_ident(name)
        raw_ref = quote_ident("_raw_" + name)
        if rule.map:  # a value the map does not know gets the default: kept, and said
            known = ", ".join(literal(k) for k in spec.value_maps[rule.map])
            unmapped = quote_ident("_unmapped_" + name)
            missed = f"{raw} not in ({known})" if known else "true"
            inner.append(f"({raw} is not null and {missed}) as {unmapped}")
            flags.append((unmapped, literal(f"unmapped_value:{name}")))
        if rule.const is None and f.type != "text":
            inner.append(f"{raw} as {raw_ref}")
            checks.append(
                _Check(
                    f"{raw_ref} is not null and {value} is null",
                    f"invalid_{f.type}:{name}",
                    label,
                    raw_ref,
                )
            )
            if f.type in ("date", "timestamp") and fs.read["sentinel_dates"]:
                days = ", ".join(f"date {literal(str(d))}" for d in fs.read["sentinel_dates"])
                checks.append(
                    _Check(
                        f"cast({value} as date) in ({days})",
                        f"sentinel_date:{name}",
                        label,
                        raw_ref,
                    )
                )
            if f.type in ("date", "timestamp"):
                outside = (
                    f"(cast({value} as date) < date {literal(str(earliest))} "
                    f"or cast({value} as date) > date {literal(str(latest))})"
                )
                if f.required:  # without the date the row is nothing: it is rejected
                    checks.append(_Check(outside, f"out_of_window:{name}", label, raw_ref))
                else:  # an optional date out of the window is dropped, the row kept
                    flags.append((outside, literal(f"out_of_window:{name}")))
                    window_fields.append(name)
        if f.required:
            ref = raw_ref if f.type != "text" and rule.const is None else "null"
            checks.append(_Check(f"{value} is null", f"missing:{name}", label, ref))
    if "code" in rules:  # codes of systems written several ways, in their canonical form
        middle.append(f"{normalized_sql('code', 'code_system')} as code")
    whens = [(c.condition, literal(c.rule)) for c in checks]
    if fs.filter:
        inner.append(f"coalesce(({fs.filter.sql}), false) as _keep")
        whens.insert(record_level, ("not _keep", literal("filter:" + fs.filter.rule)))
    if fs.record_key:
        for i, part in enumerate(fs.record_key):
            inner.append(f"{value_expr(part, source)} as {quote_ident(f'_key_{i}')}")
    outer = [
        f"{literal(read.batch_id)} as batch_id",
        f"{literal(fs.name)} as source_file",
        f"{read.file_no} as file_no",
        f"{_row_key(fs)} as row_key",
        f"{case(whens)} as reject",
        f"{case(flags)} as flag",
        "1 as copy_no" if fs.target in KEYED_BY_CONTENT else "cast(null as integer) as copy_no",
        "_element_no as element_no",
        "_record_no as record_no",
        *(_windowed(n, fs, read) if n in window_fields else quote_ident(n) for n in mapped(fs)),
    ]
    relation = records(source, tag, record_no=number)
    if fs.each:
        relation = _expand(relation, source)
    if record_no:
        labels = [(c.condition, c.column) for c in checks]
        if fs.each:
            labels = [(c, f"{col} || ' (element ' || _element_no || ')'") for c, col in labels]
        outer += [
            "_record_no",
            f"{case(labels)} as _col",
            f"{case([(c.condition, c.raw) for c in checks])} as _raw",
        ]
    typed_rows = f"select {', '.join(inner)} from {relation} as {SRC} {' '.join(joins)}"
    if middle:
        star = "* exclude (code)" if "code" in rules else "*"
        typed_rows = f"select {star}, {', '.join(middle)} from ({typed_rows})"
    select = f"select {', '.join(outer)} from ({typed_rows})"
    if fs.target in SUMMED_BY and not record_no:
        select = _summed(select, fs)
    return select


def mapped(fs: FileSpec) -> list[str]:
    """The staging fields an entry maps, in staging order: the only ones its SELECT
    gives (the others stay NULL), so a wide staging model costs unmapped files nothing."""
    rules = {r.field for r in fs.columns}
    return [n for n in TARGETS[fs.target] if n in rules]


def _label(rule: ColumnRule, fs: FileSpec) -> str:
    return literal(rule.label)


def _windowed(name: str, fs: FileSpec, read: Read) -> str:
    """An optional date field, emptied when it lies outside the date window."""
    earliest, latest = read.window
    value = quote_ident(name)
    return (
        f"case when cast({value} as date) between date {literal(str(earliest))} "
        f"and date {literal(str(latest))} then {value} end as {value}"
    )


def _lookup_join(lookup: Lookup, source: Source, read: Read, tag: str) -> str:
    sources = read.lookup_sources.get(lookup.file, [])
    relation = lookup_relation(lookup, sources, f"{tag}_lk_{lookup.name}")
    alias = quote_ident(lookup.name)
    on = " and ".join(
        f"{alias}._lk_{i} = {value_expr(this, source)}" for i, (this, _) in enumerate(lookup.keys)
    )
    return f"left join {relation} as {alias} on {on}"


def _row_key(fs: FileSpec) -> str:
    """The row's key: a record key the spec declares, else (events, coverage periods,
    which have no id of their own) a hash of the fields it maps, else the fast hash of
    all fields (only matched within one run: duplicates, rejects)."""
    fields = TARGETS[fs.target]
    rules = {r.field for r in fs.columns}
    element = ", coalesce(cast(_element_no as varchar), '')" if fs.each else ""
    if fs.target in SUMMED_BY:
        # one staging row per group: the row key names the group, line by line too
        return f"cast(hash({literal(fs.name)}, {quote_ident(SUMMED_BY[fs.target])}) as uhugeint)"
    if fs.record_key:
        parts = ", ".join(
            f"coalesce({quote_ident(f'_key_{i}')}, chr(30))" for i in range(len(fs.record_key))
        )
        return f"md5_number(concat_ws(chr(31), {literal(fs.name)}, 'key', {parts}{element}))"
    if fs.target in KEYED_BY_CONTENT:
        # persisted in the key map: md5 is the same in every DuckDB version; over the
        # fields this file maps, in staging order (the others are NULL for every row),
        # but for the code's name, which describes the code, not the event
        parts = ", ".join(
            f"coalesce(cast({quote_ident(n)} as varchar), chr(30))"
            for n in fields
            if n in rules and n not in NOT_IN_KEY
        )
        return f"md5_number(concat_ws(chr(31), {literal(fs.name)}, {parts}{element}))"
    names = ", ".join(map(quote_ident, mapped(fs)))
    return f"cast(hash({literal(fs.name)}, {names}) as uhugeint)"


def _summed(select: str, fs: FileSpec) -> str:
    """Lines summed per group key and reject rule; ``source_rows`` counts them."""
    key = SUMMED_BY[fs.target]
    groups = ["batch_id", "source_file", "file_no", "row_key", "reject", quote_ident(key)]
    fields = TARGETS[fs.target]
    values = [
        f"{'sum' if fields[n].type == 'double' else 'min'}({quote_ident(n)}) as {quote_ident(n)}"
        for n in mapped(fs)
        if n != key
    ]
    return (
        f"select {', '.join(groups)}, {', '.join(values)}, count(*) as source_rows, "
        "min(copy_no) as copy_no, min(element_no) as element_no, min(record_no) as record_no "
        f"from ({select}) group by {', '.join(groups)}"
    )
