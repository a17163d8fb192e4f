"""Safe SQL text: quoted identifiers, literals and @-parameter substitution."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from omop_etl.errors import EtlError

_PARAM = re.compile(r"@([a-z_][a-z0-9_]*)")


def quote_ident(name: str) -> str:
    """Double-quote an identifier.

    >>> quote_ident('cdm_synthea')
    '"cdm_synthea"'
    >>> quote_ident('odd"name')
    '"odd""name"'
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise EtlError(f"invalid SQL identifier {name!r}")
    return '"' + name.replace('"', '""') + '"'


def literal(value: Any) -> str:
    """A SQL literal for a Python value.

    >>> literal("it's")
    "'it''s'"
    >>> literal(8507), literal(None), literal(True)
    ('8507', 'null', 'true')
    >>> literal(["a", "b"]), literal([])
    ("['a', 'b']::varchar[]", '[]::varchar[]')
    """
    if value is None:
        return "null"
    if isinstance(value, list | tuple):  # a list of text
        return "[" + ", ".join(literal(str(v)) for v in value) + "]::varchar[]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return repr(value) if not isinstance(value, Decimal) else str(value)
    return "'" + str(value).replace("'", "''") + "'"


class Ident(str):
    """A name ``render`` writes as a quoted identifier; several parts make a qualified one.

    >>> print(render("select * from @s.person", {"s": Ident("scratch", "stage_a")}))
    select * from "scratch"."stage_a".person
    """

    parts: tuple[str, ...]

    def __new__(cls, *parts: str) -> Ident:
        if not parts:
            raise EtlError("an identifier needs at least one part")
        value = super().__new__(cls, ".".join(parts))
        value.parts = parts
        return value

    @property
    def sql(self) -> str:
        """The quoted, qualified name.

        >>> Ident("scratch", "stage_a").sql
        '"scratch"."stage_a"'
        """
        return ".".join(quote_ident(part) for part in self.parts)


def render(sql: str, params: dict[str, Any]) -> str:
    """Replace ``@name`` placeholders: ``Ident`` values are quoted, others become literals.

    >>> print(render("select * from @cdm.person where id > @base and x = @s",
    ...              {"cdm": Ident("cdm_a"), "base": 5, "s": "it"}))
    select * from "cdm_a".person where id > 5 and x = 'it'
    """

    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in params:
            raise EtlError(f"SQL parameter @{key} has no value")
        value = params[key]
        if isinstance(value, Ident):
            return value.sql
        return literal(value)

    return _PARAM.sub(sub, sql)
