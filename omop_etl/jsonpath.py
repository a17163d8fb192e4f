"""JSON paths of spec rules, compiled to DuckDB SQL.

A path is DuckDB's JSON path (``$.code.coding[0].code``) with one addition: an array
element chosen by a field's value, ``[?(@.system=='http://loinc.org')]`` (the first
element whose field equals the value; fields may be nested, ``@.a.b``). FHIR codings
are picked by ``system``, extensions by ``url``::

    $.code.coding[?(@.system=='http://loinc.org')].code
    $.extension[?(@.url=='http://hl7.org/fhir/us/core/StructureDefinition/us-core-race')]
        .extension[?(@.url=='ombCategory')].valueCoding.code
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from omop_etl.errors import EtlError
from omop_etl.sql import literal

_NAME = r"[A-Za-z_$][A-Za-z0-9_$-]*"
_PLAIN = re.compile(rf"^(\.{_NAME}|\[(\d+|\*|-?\d+)\])*$")
_FILTER = re.compile(
    rf"\[\?\(@((?:\.{_NAME})+)\s*==\s*('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|-?[0-9.]+|true|false)\)\]"
)


@dataclass(frozen=True)
class _Filter:
    prefix: str  # the path up to the array, relative ($...)
    field: str  # the element's field compared ($.system)
    value: str


def parse(path: str) -> tuple[list[_Filter], str]:
    """The filters of a path, in order, and the plain path after the last one.

    >>> parse("$.a[?(@.s=='x')].b")
    ([_Filter(prefix='$.a', field='$.s', value='x')], '$.b')
    >>> parse("$.a.b[0]")
    ([], '$.a.b[0]')
    """
    if not isinstance(path, str) or not path.startswith("$"):
        raise EtlError(f"JSON path {path!r} must start with $")
    filters: list[_Filter] = []
    rest = path[1:]
    while True:
        match = _FILTER.search(rest)
        if match is None:
            break
        prefix = rest[: match.start()]
        _check_plain(prefix, path)
        raw = match.group(2)
        value = raw[1:-1].replace("\\'", "'").replace('\\"', '"') if raw[0] in "'\"" else raw
        filters.append(_Filter("$" + prefix, "$" + match.group(1), value))
        rest = rest[match.end() :]
    _check_plain(rest, path)
    return filters, "$" + rest


def _check_plain(part: str, path: str) -> None:
    if not _PLAIN.match(part):
        raise EtlError(
            f"JSON path {path!r}: {part!r} is not a path of .names and [index] steps "
            "(an element by value is [?(@.field=='value')])"
        )


def has_filter(path: str) -> bool:
    return bool(parse(path)[0])


def value_sql(base: str, path: str) -> str:
    """SQL for the text at ``path`` in the JSON expression ``base`` (NULL where absent).

    >>> value_sql("record", "$.a.b")
    "json_extract_string(record, '$.a.b')"
    """
    filters, rest = parse(path)
    expr = base
    for f in filters:
        array = f"try_cast(json_extract({expr}, {literal(f.prefix)}) as json[])"
        match = f"json_extract_string(_e, {literal(f.field)}) = {literal(f.value)}"
        expr = f"list_filter({array}, lambda _e: {match})[1]"
    return f"json_extract_string({expr}, {literal(rest)})"


def elements_sql(base: str, path: str) -> str:
    """SQL for the elements of the JSON array at ``path``, as a list of JSON values
    (NULL when the record holds no array there)."""
    filters, rest = parse(path)
    expr = base
    for f in filters:
        array = f"try_cast(json_extract({expr}, {literal(f.prefix)}) as json[])"
        match = f"json_extract_string(_e, {literal(f.field)}) = {literal(f.value)}"
        expr = f"list_filter({array}, lambda _e: {match})[1]"
    return f"try_cast(json_extract({expr}, {literal(rest)}) as json[])"
