"""Spec SQL sees the record and its lookups, nothing else.

The SQL a spec writes (``sql`` rules, ``transform``, ``filter``) is checked before it
runs, in an engine of its own with DuckDB's external access turned off: no file,
no path, no other table, no environment. It may use the record's columns (``record``
for an ndjson file) and its lookups' values (``name.column``), and must give one
value per record: no subquery, no window, no aggregate over the file.
"""

from __future__ import annotations

import json

import duckdb

from omop_etl.errors import EtlError
from omop_etl.extract.readers import RECORD, Source
from omop_etl.sql import quote_ident


def _fragments(source: Source) -> list[tuple[str, str]]:
    """(where, SQL expression) of every piece of spec SQL of the entry."""
    fs = source.fs
    found = []
    for rule in fs.columns:
        where = f"{fs.name}.columns.{rule.field}"
        if rule.sql:
            found.append((f"{where}.sql", rule.sql))
        if rule.transform:
            found.append(
                (f"{where}.transform", rule.transform.replace("{value}", "cast(null as varchar)"))
            )
    for lk in fs.lookups:
        for i, (this, that) in enumerate(lk.keys):
            for side, rule in (("this", this), ("that", that)):
                if rule.transform:
                    found.append(
                        (
                            f"{fs.name}.lookups.{lk.name}.key[{i}].{side}.transform",
                            rule.transform.replace("{value}", "cast(null as varchar)"),
                        )
                    )
    if fs.filter:
        found.append((f"{fs.name}.filter.sql", fs.filter.sql))
    return found


def check_spec_sql(source: Source, site: str) -> None:
    """Refuse spec SQL that reads anything but the record and its lookups (one error
    naming the site, the file entry, the key and why)."""
    fragments = _fragments(source)
    if not fragments:
        return
    con = duckdb.connect(
        ":memory:",
        config={
            "enable_external_access": False,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        },
    )
    try:
        columns = ", ".join(f"{quote_ident(c)} varchar" for c in source.columns if c != RECORD)
        if source.fs.read["format"] == "ndjson":
            columns = f"{RECORD} json"
        con.execute(f"create table _src ({columns})")
        joins = ""
        for lk in source.fs.lookups:
            values = ", ".join(f"{quote_ident(c)} varchar" for c in lk.columns)
            con.execute(f"create table {quote_ident(lk.name)} ({values})")
            joins += f" left join {quote_ident(lk.name)} on true"
        con.execute("set lock_configuration = true")
        for where, expression in fragments:
            why = _shape(con, expression)
            if why is None:
                try:
                    con.execute(f"select _src.*, ({expression}) from _src{joins}").fetchall()
                except duckdb.Error as exc:
                    why = _reason(exc)
            if why:
                raise EtlError(f"site {site}, spec {where}: {why}")
    finally:
        con.close()


def _shape(con: duckdb.DuckDBPyConnection, expression: str) -> str | None:
    """Why an expression is not a value of one record (a subquery, a window), or None."""
    text = con.execute("select json_serialize_sql(?)", [f"select ({expression})"]).fetchone()[0]
    tree = json.loads(text)
    if tree.get("error"):
        return f"not a SQL expression: {tree.get('error_message', '')}".strip()
    found = json.dumps(tree)
    if '"class": "SUBQUERY"' in found:
        return (
            "spec SQL sees only the record and its lookups: no subqueries (to use another "
            "file of the batch, declare a lookup)"
        )
    if '"class": "WINDOW"' in found:
        return "spec SQL sees one record at a time: no window functions"
    return None


def _reason(exc: duckdb.Error) -> str:
    message = str(exc).strip().splitlines()[0]
    if isinstance(exc, duckdb.PermissionException) or "disabled" in message:
        return (
            f"spec SQL may not read files, paths or settings (external access is off for "
            f"spec expressions): {message}"
        )
    if isinstance(exc, duckdb.CatalogException):
        return (
            f"spec SQL sees only the record's columns and its lookups' values "
            f"(name.column): {message}"
        )
    if "GROUP BY" in message or "aggregate" in message.lower():
        return f"spec SQL gives one value per record: no aggregates over the file: {message}"
    return message
