"""Load OMOP standardized vocabularies (Athena downloads) and local code maps.

The ten vocabulary tables live in their own schema (``vocab`` by default). An
Athena download is streamed into them by DuckDB's CSV reader, so a multi-GB
release loads in bounded memory; nothing here touches rows one by one in Python.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from omop_etl import schema, settings
from omop_etl.codes import normalized_sql
from omop_etl.errors import EtlError
from omop_etl.sql import literal, quote_ident

if TYPE_CHECKING:
    from omop_etl.warehouse import Target

# A concept row the bundled demo subset carries only as a stand-in for a concept it
# does not ship: vocabulary 'Unknown' and concept_code 'placeholder-<concept_id>'. A
# supplement row may replace such a stub; a real row always wins over the supplement.
PLACEHOLDER_VOCABULARY = "Unknown"
PLACEHOLDER_CODE_PREFIX = "placeholder-"

DEFAULT_VALID_START = "1970-01-01"
DEFAULT_VALID_END = "2099-12-31"


# A file to load and its header (lower-case column names, in file order).
_Source = tuple[Path, list[str]]


@dataclass(frozen=True)
class Column:
    """One vocabulary column: CDM v5.4 name, DuckDB type and whether it is required."""

    name: str
    type: str
    required: bool = True


@dataclass(frozen=True)
class VocabularyTable:
    """One vocabulary table, its Athena file and the key a supplement row must not repeat."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    optional_file: bool = False

    @property
    def file_name(self) -> str:
        return f"{self.name.upper()}.csv"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)


# What a supplement row must not repeat, per table, in the CDM's table order.
_KEYS: dict[str, tuple[str, ...]] = {
    "concept": ("concept_id",),
    "vocabulary": ("vocabulary_id",),
    "domain": ("domain_id",),
    "concept_class": ("concept_class_id",),
    "concept_relationship": ("concept_id_1", "concept_id_2", "relationship_id"),
    "relationship": ("relationship_id",),
    "concept_synonym": ("concept_id", "concept_synonym_name", "language_concept_id"),
    "concept_ancestor": ("ancestor_concept_id", "descendant_concept_id"),
    "source_to_concept_map": (
        "source_vocabulary_id",
        "source_code",
        "target_concept_id",
        "valid_end_date",
    ),
    "drug_strength": ("drug_concept_id", "ingredient_concept_id"),
}
_OPTIONAL_FILES = {"concept_synonym", "source_to_concept_map", "drug_strength"}


def _vocabulary_tables() -> tuple[VocabularyTable, ...]:
    """The vocabulary tables as the CDM v5.4 spec defines them (names, types, required)."""
    spec = schema.load_spec()
    return tuple(
        VocabularyTable(
            name,
            tuple(
                # DuckDB ignores VARCHAR lengths; the loader compares plain type names
                Column(f.name, schema.sql_type(f.datatype, "duckdb").split("(")[0], f.required)
                for f in spec[name].fields
            ),
            key,
            optional_file=name in _OPTIONAL_FILES,
        )
        for name, key in _KEYS.items()
    )


VOCABULARY_TABLES: tuple[VocabularyTable, ...] = _vocabulary_tables()
TABLES_BY_NAME: dict[str, VocabularyTable] = {table.name: table for table in VOCABULARY_TABLES}
STCM = TABLES_BY_NAME["source_to_concept_map"]
# Usagi's mapping file as Usagi saves it (WriteCodeMappingsToFile in OHDSI/Usagi): one
# row per source code and target concept; only APPROVED rows of mapping type MAPS_TO are
# maps. Its "Export for review" has targetConceptId/targetVocabularyId instead.
USAGI_REQUIRED = ("sourceCode", "sourceName", "mappingStatus", "conceptId")
USAGI_VOCABULARY_COLUMN = "ADD_INFO:sourceVocabularyId"


# ---------------------------------------------------------------------------------------
# SQL helpers


def _first_row(
    con: duckdb.DuckDBPyConnection, query: str, parameters: Sequence[object] | None = None
) -> tuple | None:
    """The first row of a query, read to its end so that the connection is free again."""
    rows = (
        con.execute(query, parameters).fetchall() if parameters else con.execute(query).fetchall()
    )
    return rows[0] if rows else None


def _columns_struct(names: Sequence[str]) -> str:
    return "{" + ", ".join(f"{literal(name)}: 'VARCHAR'" for name in names) + "}"


def _athena_reader(path: Path, header: Sequence[str]) -> str:
    """read_csv over an Athena file: tab-separated, unquoted, every field as text."""
    return (
        f"read_csv({literal(str(path))}, delim='\\t', quote='', escape='', header=true, "
        f"auto_detect=false, strict_mode=true, null_padding=false, encoding='utf-8', "
        f"columns={_columns_struct(header)})"
    )


def _csv_reader(path: Path, header: Sequence[str]) -> str:
    """read_csv over an ordinary comma-separated, double-quoted file, every field as text."""
    return (
        f"read_csv({literal(str(path))}, delim=',', quote='\"', escape='\"', header=true, "
        f"auto_detect=false, strict_mode=true, null_padding=false, encoding='utf-8', "
        f"columns={_columns_struct(header)})"
    )


_ATHENA_DATE = "[0-9]{8}"


def _typed(column: Column, source: str) -> str:
    """SQL turning the text field `source` into the column's type (raising when it cannot)."""
    if column.type == "DATE":
        checked = (
            f"CASE WHEN {source} IS NULL OR regexp_full_match({source}, '{_ATHENA_DATE}') "
            f"THEN {source} ELSE 'not a YYYYMMDD date' END"
        )
        return f"CAST(strptime({checked}, '%Y%m%d') AS DATE)"
    if column.type == "VARCHAR":
        return source
    return f"CAST({source} AS {column.type})"


def _problem(column: Column, source: str) -> str:
    """SQL giving a description of what is wrong with the field, or NULL when it is fine."""
    name = column.name
    checks = []
    if column.required:
        checks.append(f"WHEN {source} IS NULL THEN 'column {name}: value is missing'")
    if column.type == "DATE":
        checks.append(
            f"WHEN {source} IS NOT NULL AND NOT (regexp_full_match({source}, '{_ATHENA_DATE}') "
            f"AND try_strptime({source}, '%Y%m%d') IS NOT NULL) "
            f"THEN 'column {name}: \"' || {source} || '\" is not a date in YYYYMMDD form'"
        )
    elif column.type in ("INTEGER", "DOUBLE"):
        kind = "an integer" if column.type == "INTEGER" else "a number"
        checks.append(
            f"WHEN {source} IS NOT NULL AND TRY_CAST({source} AS {column.type}) IS NULL "
            f"THEN 'column {name}: \"' || {source} || '\" is not {kind}'"
        )
    if not checks:
        return "NULL"
    return "CASE " + " ".join(checks) + " END"


def _first_bad_row(
    con: duckdb.DuckDBPyConnection, relation: str, problems: Sequence[str]
) -> tuple[int, str] | None:
    """(line, problem) of the first record of `relation` failing a check, in file order."""
    if not problems:
        return None
    query = (
        f"SELECT rn + 1 AS line, problem FROM (SELECT rn, coalesce({', '.join(problems)}) "
        f"AS problem FROM (SELECT row_number() OVER () AS rn, * FROM {relation})) "
        f"WHERE problem IS NOT NULL ORDER BY rn LIMIT 1"
    )
    with _ordered_scans(con):
        row = _first_row(con, query)
    return (int(row[0]), str(row[1])) if row else None


@contextmanager
def _ordered_scans(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Keep file order in scans for a while, so that row numbers are line numbers."""
    row = _first_row(con, "SELECT current_setting('preserve_insertion_order')")
    previous = bool(row and row[0] in (True, "true"))
    con.execute("SET preserve_insertion_order = true")
    try:
        yield
    finally:
        con.execute(f"SET preserve_insertion_order = {str(previous).lower()}")


def _begin(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("BEGIN TRANSACTION")
    except duckdb.Error as exc:
        raise EtlError(
            f"cannot start the vocabulary transaction ({_short(exc)}); "
            "commit or roll back the open transaction on this connection first"
        ) from exc


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    with suppress(duckdb.Error):
        con.execute("ROLLBACK")


def _table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    row = _first_row(
        con,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, table],
    )
    return bool(row and row[0])


def _count(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> int:
    row = _first_row(con, f"SELECT count(*) FROM {quote_ident(schema)}.{quote_ident(table)}")
    return int(row[0]) if row else 0


# ---------------------------------------------------------------------------------------
# Athena folders


def _folder_files(folder: Path) -> dict[str, Path]:
    """The folder's files by lower-case name (Athena names are upper case, matched loosely)."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        key = path.name.lower()
        if key in files:
            raise EtlError(
                f"vocabulary folder {folder}: both {files[key].name} and {path.name} are present; "
                "keep one"
            )
        files[key] = path
    return files


def _read_header(path: Path, delimiter: str) -> list[str]:
    """The header row of a text file (only this one line is read in Python)."""
    try:
        with path.open(encoding="utf-8", newline="") as stream:
            line = stream.readline()
    except UnicodeDecodeError as exc:
        raise EtlError(f"{path}: line 1: not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise EtlError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    line = line.lstrip("\ufeff").rstrip("\r\n")
    if not line:
        raise EtlError(f"{path}: line 1: the header row is missing (the file is empty)")
    if delimiter == "\t":
        return line.split("\t")
    return next(csv.reader([line], delimiter=delimiter))


def _athena_header(table: VocabularyTable, path: Path) -> list[str]:
    header = _read_header(path, "\t")
    lowered = [name.strip().lower() for name in header]
    missing = [name for name in table.column_names if name not in lowered]
    if missing:
        if len(header) == 1 and "," in header[0]:
            hint = " (it looks comma-separated; Athena files are tab-separated)"
        else:
            hint = ""
        raise EtlError(
            f"{path}: line 1: the header lacks column(s) {', '.join(missing)}{hint}; "
            f"expected {', '.join(table.column_names)}"
        )
    duplicates = sorted({name for name in lowered if lowered.count(name) > 1})
    if duplicates:
        raise EtlError(f"{path}: line 1: column(s) {', '.join(duplicates)} appear twice")
    return lowered


def _athena_select(table: VocabularyTable, path: Path, header: Sequence[str]) -> str:
    """SELECT of the file's rows typed as the table's columns."""
    fields = ", ".join(
        f"{_typed(column, quote_ident(column.name))} AS {quote_ident(column.name)}"
        for column in table.columns
    )
    return f"SELECT {fields} FROM {_athena_reader(path, header)}"


def _short(error: duckdb.Error) -> str:
    """DuckDB's message, reduced to "line N: problem" when it names a CSV line."""
    message = str(error).strip().split("\n\n")[0].split("\nPossible")[0]
    found = re.search(r"CSV Error on Line: (\d+)", message)
    if not found:
        return message.split("\n  file =")[0].strip()
    details = [
        line.strip()
        for line in message[found.end() :].splitlines()
        if line.strip() and not line.startswith("Original Line:")
    ]
    return f"line {found.group(1)}: {'; '.join(details) or message}"


def _describe_failure(
    con: duckdb.DuckDBPyConnection,
    table: VocabularyTable,
    path: Path,
    header: Sequence[str],
    error: duckdb.Error,
) -> EtlError:
    """An EtlError naming the file, and the line and problem when they can be found."""
    try:
        problems = [_problem(column, quote_ident(column.name)) for column in table.columns]
        found = _first_bad_row(con, _athena_reader(path, header), problems)
    except duckdb.Error as second:
        return EtlError(f"{path}: {_short(second)}")
    if found:
        line, problem = found
        return EtlError(f"{path}: line {line}: {problem}")
    return EtlError(f"{path}: {_short(error)}")


def _create_tables(con: duckdb.DuckDBPyConnection, schema: str) -> None:
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
    for table in VOCABULARY_TABLES:
        columns = ", ".join(
            f"{quote_ident(c.name)} {c.type}{' NOT NULL' if c.required else ''}"
            for c in table.columns
        )
        target = f"{quote_ident(schema)}.{quote_ident(table.name)}"
        con.execute(f"CREATE TABLE IF NOT EXISTS {target} ({columns})")


def _placeholder(alias: str) -> str:
    return (
        f"({alias}.vocabulary_id = {literal(PLACEHOLDER_VOCABULARY)} AND {alias}.concept_code = "
        f"{literal(PLACEHOLDER_CODE_PREFIX)} || CAST({alias}.concept_id AS VARCHAR))"
    )


def _add_supplement(
    con: duckdb.DuckDBPyConnection,
    schema: str,
    table: VocabularyTable,
    path: Path,
    header: Sequence[str],
) -> None:
    """Append the supplement file's rows whose key the table does not have yet.

    A concept that is only a placeholder stub in the table is replaced by the supplement row.
    """
    target = f"{quote_ident(schema)}.{quote_ident(table.name)}"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _vocab_supplement AS {_athena_select(table, path, header)}"
    )
    same_key = " AND ".join(
        f"b.{quote_ident(k)} IS NOT DISTINCT FROM s.{quote_ident(k)}" for k in table.key
    )
    if table.name == "concept":
        con.execute(
            f"DELETE FROM {target} AS b WHERE {_placeholder('b')} "
            f"AND b.concept_id IN (SELECT concept_id FROM _vocab_supplement)"
        )
    names = ", ".join(quote_ident(name) for name in table.column_names)
    con.execute(
        f"INSERT INTO {target} ({names}) SELECT {names} FROM _vocab_supplement AS s "
        f"WHERE NOT EXISTS (SELECT 1 FROM {target} AS b WHERE {same_key})"
    )
    con.execute("DROP TABLE _vocab_supplement")


def load_vocabulary(
    con: duckdb.DuckDBPyConnection,
    folder: Path,
    schema: str = "vocab",
    *,
    supplement: Path | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Replace the vocabulary tables of `schema` with an Athena download folder.

    File names match case-insensitively; CONCEPT_SYNONYM, DRUG_STRENGTH and
    SOURCE_TO_CONCEPT_MAP may be absent (empty tables). Rows of `supplement` (same file
    layout, any subset of the files) are added when their key is not in the download; a
    supplement concept also replaces a placeholder stub of the same id (see
    PLACEHOLDER_VOCABULARY). Everything happens in one transaction: when anything fails,
    the previous vocabulary stays. `progress` gets each table's name and row count once
    it is loaded. Returns the rows per table.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EtlError(f"vocabulary folder {folder} does not exist (or is not a folder)")
    files = _folder_files(folder)
    if "concept.csv" not in files:
        raise EtlError(
            f"vocabulary folder {folder} has no CONCEPT.csv; give the folder of an unzipped "
            "Athena download"
        )
    missing = [
        table.file_name
        for table in VOCABULARY_TABLES
        if not table.optional_file and table.file_name.lower() not in files
    ]
    if missing:
        raise EtlError(f"vocabulary folder {folder} lacks {', '.join(missing)}")
    extra: dict[str, Path] = {}
    if supplement is not None:
        supplement = Path(supplement)
        if not supplement.is_dir():
            raise EtlError(
                f"vocabulary supplement {supplement} does not exist (or is not a folder)"
            )
        extra = _folder_files(supplement)

    plan: list[tuple[VocabularyTable, _Source | None, _Source | None]] = []
    for table in VOCABULARY_TABLES:
        base = files.get(table.file_name.lower())
        added = extra.get(table.file_name.lower())
        plan.append(
            (
                table,
                (base, _athena_header(table, base)) if base else None,
                (added, _athena_header(table, added)) if added else None,
            )
        )

    counts: dict[str, int] = {}
    _begin(con)
    try:
        _create_tables(con, schema)
        for table, base, added in plan:
            target = f"{quote_ident(schema)}.{quote_ident(table.name)}"
            con.execute(f"DELETE FROM {target}")
            names = ", ".join(quote_ident(name) for name in table.column_names)
            for source, adding in ((base, False), (added, True)):
                if source is None:
                    continue
                path, header = source
                try:
                    if adding:
                        _add_supplement(con, schema, table, path, header)
                    else:
                        con.execute(
                            f"INSERT INTO {target} ({names}) {_athena_select(table, path, header)}"
                        )
                except duckdb.Error as exc:
                    _rollback(con)
                    raise _describe_failure(con, table, path, header, exc) from exc
            counts[table.name] = _count(con, schema, table.name)
            if progress is not None:
                progress(table.name, counts[table.name])
        con.execute("COMMIT")
    except EtlError:
        raise
    except duckdb.Error as exc:
        _rollback(con)
        raise EtlError(f"loading the vocabulary from {folder} failed: {exc}") from exc
    except BaseException:
        _rollback(con)
        raise
    return counts


def vocabulary_status(
    con: duckdb.DuckDBPyConnection, schema: str = "vocab"
) -> dict[str, int] | None:
    """Rows per vocabulary table, or None when no vocabulary is loaded in `schema`."""
    if not all(_table_exists(con, schema, table.name) for table in VOCABULARY_TABLES):
        return None
    counts = {table.name: _count(con, schema, table.name) for table in VOCABULARY_TABLES}
    return counts if counts["concept"] else None


# ---------------------------------------------------------------------------------------
# Local code maps


# The most bad rows of one code map an error lists; it counts the others.
MAX_LISTED_BAD_ROWS = 20


def _map_date(source: str, default: str) -> str:
    """SQL for a code-map date: YYYYMMDD, YYYY-MM-DD or empty (then `default`); NULL when
    it is none of these."""
    return (
        f"CASE WHEN {source} IS NULL THEN DATE {literal(default)} "
        f"WHEN regexp_full_match({source}, '[0-9]{{8}}') "
        f"THEN CAST(try_strptime({source}, '%Y%m%d') AS DATE) "
        f"WHEN regexp_full_match({source}, '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}') "
        f"THEN CAST(try_strptime({source}, '%Y-%m-%d') AS DATE) END"
    )


def _map_date_problem(source: str, parsed: str, column: str) -> str:
    return (
        f"CASE WHEN {source} IS NOT NULL AND {parsed} IS NULL THEN 'column {column}: \"' || "
        f"{source} || '\" is not a date (YYYY-MM-DD or YYYYMMDD)' END"
    )


def _int_problem(source: str, column: str, required: bool) -> str:
    missing = f"WHEN {source} IS NULL THEN 'column {column}: value is missing' " if required else ""
    return (
        f"CASE {missing}WHEN {source} IS NOT NULL AND TRY_CAST({source} AS INTEGER) IS NULL "
        f"THEN 'column {column}: \"' || {source} || '\" is not an integer' END"
    )


def _required_problem(source: str, column: str) -> str:
    return f"CASE WHEN {source} IS NULL THEN 'column {column}: value is missing' END"


@dataclass(frozen=True)
class _CodeMapFile:
    """A code map file, its header and layout: "stcm", "usagi" or "usagi-review"."""

    path: Path
    header: list[str]
    kind: str

    @property
    def columns(self) -> dict[str, str]:
        """The file's column names by their lower-case form."""
        return {name.strip().lower(): name for name in self.header}

    @property
    def target_column(self) -> str:
        return {"stcm": "target_concept_id", "usagi": "conceptId"}.get(self.kind, "targetConceptId")

    @property
    def vocabulary_column(self) -> str:
        return "target_vocabulary_id" if self.kind == "stcm" else "targetVocabularyId"

    @property
    def code_column(self) -> str:
        return "source_code" if self.kind == "stcm" else "sourceCode"


def _code_map_kind(path: Path, header: Sequence[str]) -> str:
    lowered = {name.strip().lower() for name in header}
    if {"source_code", "source_vocabulary_id", "target_concept_id"} <= lowered:
        return "stcm"
    if {name.lower() for name in USAGI_REQUIRED} <= lowered:
        return "usagi"
    if {"sourcecode", "sourcename", "targetconceptid"} <= lowered:
        return "usagi-review"
    raise EtlError(
        f"{path}: line 1: not a code map: expected the source_to_concept_map columns "
        f"({', '.join(STCM.column_names)}) or a Usagi export ({', '.join(USAGI_REQUIRED)}, ...)"
    )


def _stage_code_map(
    con: duckdb.DuckDBPyConnection, item: _CodeMapFile, vocabulary_id: str | None
) -> str:
    """Stage the file's rows as text with their line numbers.

    Returns the SQL of its source_to_concept_map rows, still as text.
    """
    columns = item.columns
    with _ordered_scans(con):
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _codemap_raw AS "
            "SELECT row_number() OVER () + 1 AS _line, * "
            f"FROM {_csv_reader(item.path, item.header)}"
        )

    def col(name: str) -> str:
        """The staged text column, trimmed, empty as NULL; NULL when the file lacks it."""
        if name.lower() not in columns:
            return "CAST(NULL AS VARCHAR)"
        return f"nullif(trim({quote_ident(columns[name.lower()])}), '')"

    if item.kind == "stcm":
        return (
            "SELECT _line AS line, "
            f"{col('source_code')} AS source_code, "
            f"coalesce({col('source_concept_id')}, '0') AS source_concept_id, "
            f"{col('source_vocabulary_id')} AS source_vocabulary_id, "
            f"{col('source_code_description')} AS source_code_description, "
            f"{col('target_concept_id')} AS target_concept_id, "
            f"{col('target_vocabulary_id')} AS target_vocabulary_id, "
            f"{col('valid_start_date')} AS valid_start_date, "
            f"{col('valid_end_date')} AS valid_end_date, "
            f"{col('invalid_reason')} AS invalid_reason "
            "FROM _codemap_raw"
        )
    fallback = vocabulary_id or item.path.name.split(".")[0]
    # The review export holds approved rows only unless it was asked to add the others,
    # and then it has a mappingStatus column; legacy mapping type EVENT means MAPS_TO.
    approved = (
        f"upper({col('mappingStatus')}) = 'APPROVED'" if "mappingstatus" in columns else "true"
    )
    return (
        "SELECT _line AS line, "
        f"{col('sourceCode')} AS source_code, '0' AS source_concept_id, "
        f"coalesce({col(USAGI_VOCABULARY_COLUMN)}, {literal(fallback)}) "
        "AS source_vocabulary_id, "
        f"{col('sourceName')} AS source_code_description, "
        f"{col(item.target_column)} AS target_concept_id, "
        f"{col('targetVocabularyId')} AS target_vocabulary_id, "
        "CAST(NULL AS VARCHAR) AS valid_start_date, CAST(NULL AS VARCHAR) AS valid_end_date, "
        "CAST(NULL AS VARCHAR) AS invalid_reason "
        f"FROM _codemap_raw WHERE {approved} "
        f"AND coalesce(upper({col('mappingType')}), 'MAPS_TO') IN ('MAPS_TO', 'EVENT')"
    )


def _checked_rows(rows_sql: str, concept: str) -> str:
    """The staged rows with their typed values and what the concept table knows of their
    source and target concepts (NULL where it has no such concept)."""
    return (
        "SELECT r.*, "
        "TRY_CAST(r.source_concept_id AS INTEGER) AS source_id, "
        "TRY_CAST(r.target_concept_id AS INTEGER) AS target_id, "
        f"{_map_date('r.valid_start_date', DEFAULT_VALID_START)} AS start_date, "
        f"{_map_date('r.valid_end_date', DEFAULT_VALID_END)} AS end_date, "
        "s.concept_id AS source_known, t.concept_id AS target_known, "
        "t.vocabulary_id AS target_vocabulary, t.standard_concept AS target_standard, "
        "t.invalid_reason AS target_invalid "
        f"FROM ({rows_sql}) AS r "
        f"LEFT JOIN {concept} AS s ON s.concept_id = TRY_CAST(r.source_concept_id AS INTEGER) "
        f"LEFT JOIN {concept} AS t ON t.concept_id = TRY_CAST(r.target_concept_id AS INTEGER)"
    )


def _code_map_problems(item: _CodeMapFile) -> list[str]:
    """SQL checks over the checked rows `r`, in order; each gives a problem text or NULL.

    Target concept 0 is an explicit "no matching concept". Any other target must be a
    valid standard concept, as only those count as mapped in the transforms; a map row
    that is itself retired (invalid_reason set) is not used, so it may keep an old target.
    """
    target = "'target concept ' || r.target_id"
    only_standard = "the transforms count only valid standard concepts as mapped"
    return [
        _required_problem("r.source_code", item.code_column),
        _required_problem("r.source_vocabulary_id", "source_vocabulary_id"),
        _int_problem("r.source_concept_id", "source_concept_id", required=True),
        _int_problem("r.target_concept_id", item.target_column, required=True),
        _map_date_problem("r.valid_start_date", "r.start_date", "valid_start_date"),
        _map_date_problem("r.valid_end_date", "r.end_date", "valid_end_date"),
        "CASE WHEN NOT regexp_full_match(r.invalid_reason, '[A-Za-z]') "
        "THEN 'column invalid_reason: \"' || r.invalid_reason || "
        "'\" is not a one-letter reason (D or U)' END",
        f"CASE WHEN r.target_id <> 0 AND r.target_known IS NULL "
        f"THEN {target} || ' is not in the vocabulary' END",
        f"CASE WHEN r.target_id <> 0 AND r.target_vocabulary_id <> r.target_vocabulary "
        f"THEN {target} || ' is in vocabulary ' || r.target_vocabulary || ', not in ' "
        f"|| r.target_vocabulary_id || ' as {item.vocabulary_column} says' END",
        f"CASE WHEN r.target_id <> 0 AND r.invalid_reason IS NULL "
        f"AND r.target_invalid IS NOT NULL THEN {target} || ' is invalid (invalid_reason ' "
        f"|| r.target_invalid || '); {only_standard}' END",
        f"CASE WHEN r.target_id <> 0 AND r.invalid_reason IS NULL "
        f"AND r.target_standard IS DISTINCT FROM 'S' THEN {target} || ' is not standard "
        f"(standard_concept ' || coalesce(r.target_standard, 'empty') || '); {only_standard}' END",
        "CASE WHEN r.source_id <> 0 AND r.source_known IS NULL "
        "THEN 'source concept ' || r.source_id || ' is not in the vocabulary' END",
        "CASE WHEN r.start_date > r.end_date THEN 'valid_end_date ' || r.end_date || "
        "' is before valid_start_date ' || r.start_date END",
    ]


def _bad_rows(con: duckdb.DuckDBPyConnection, item: _CodeMapFile, table: str) -> str | None:
    """What is wrong with the file's checked rows in `table`: one line per bad row (the
    first MAX_LISTED_BAD_ROWS, in file order), or None when every row is fine."""
    problems = ", ".join(_code_map_problems(item))
    rows = con.execute(
        "SELECT line, source_code, problem, count(*) OVER () AS bad FROM ("
        f"SELECT r.line, r.source_code, coalesce({problems}) AS problem FROM {table} AS r"
        f") WHERE problem IS NOT NULL ORDER BY line LIMIT {MAX_LISTED_BAD_ROWS}"
    ).fetchall()
    if not rows:
        return None
    bad = int(rows[0][3])
    lines = [f"code map {item.path}: {_rows(bad, 'bad row')}, nothing was loaded:"]
    for line, code, problem, _ in rows:
        lines.append(f"  line {line}, {'no code' if code is None else f'code {code}'}: {problem}")
    if bad > len(rows):
        lines.append(f"  … and {_rows(bad - len(rows), 'more bad row')}")
    return "\n".join(lines)


def _rows(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _csv_error(path: Path, error: duckdb.Error) -> EtlError:
    return EtlError(f"code map {path}: {_short(error)}; nothing was loaded")


def load_code_maps(
    con: duckdb.DuckDBPyConnection,
    paths: Iterable[Path],
    schema: str = "vocab",
    *,
    vocabulary_id: str | None = None,
) -> dict[str, int]:
    """Add local code maps to `<schema>.source_to_concept_map`; returns rows added per file.

    A file is either CSV with the source_to_concept_map columns (dates YYYY-MM-DD, YYYYMMDD
    or empty; Usagi's "Export source_to_concept_map" writes this) or a Usagi mapping file as
    Usagi saves it, or its "Export for review" (the APPROVED rows of mapping type MAPS_TO).
    A Usagi file's source_vocabulary_id is its ``ADD_INFO:sourceVocabularyId`` column, else
    `vocabulary_id`, else the file name up to its first dot. Rows of every
    source_vocabulary_id the files contain are replaced first, so loading the same maps
    again gives the same table. Codes of systems with a canonical form (KCD-7, EDI:
    see ``omop_etl.codes``) are stored in it. A missing target_vocabulary_id is taken from
    the loaded concept table.

    Every row of every file is checked against the loaded vocabulary first (the target is
    0 or a valid standard concept of the vocabulary the row names, a source concept
    exists, dates parse and start <= end, ...). When any row is bad, nothing is changed
    and one EtlError lists the bad rows of each file by line, source code and rule.
    """
    items = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise EtlError(f"code map {path} does not exist")
        header = _read_header(path, ",")
        items.append(_CodeMapFile(path, header, _code_map_kind(path, header)))
    if not items:
        return {}
    if not _table_exists(con, schema, STCM.name) or not _table_exists(con, schema, "concept"):
        _begin(con)
        try:
            _create_tables(con, schema)
            con.execute("COMMIT")
        except duckdb.Error as exc:
            _rollback(con)
            raise EtlError(f"cannot create the vocabulary tables in {schema}: {exc}") from exc

    concept = f"{quote_ident(schema)}.concept"
    target = f"{quote_ident(schema)}.{quote_ident(STCM.name)}"
    names = ", ".join(quote_ident(name) for name in STCM.column_names)
    staged: list[tuple[Path, str]] = []
    try:
        bad_files = []
        for number, item in enumerate(items):
            table = f"_codemap_{number}"
            try:
                rows_sql = _stage_code_map(con, item, vocabulary_id)
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE {table} AS {_checked_rows(rows_sql, concept)}"
                )
                staged.append((item.path, table))
                bad = _bad_rows(con, item, table)
            except duckdb.Error as exc:
                raise _csv_error(item.path, exc) from exc
            if bad:
                bad_files.append(bad)
        if bad_files:
            raise EtlError("\n".join(bad_files))

        union = " UNION ALL ".join(f"SELECT source_vocabulary_id FROM {t}" for _, t in staged)
        counts: dict[str, int] = {}
        _begin(con)
        try:
            con.execute(f"DELETE FROM {target} WHERE source_vocabulary_id IN ({union})")
            for path, table in staged:
                con.execute(
                    f"INSERT INTO {target} ({names}) SELECT "
                    f"{normalized_sql('r.source_code', 'r.source_vocabulary_id')} AS source_code, "
                    "r.source_id AS source_concept_id, "
                    "r.source_vocabulary_id, r.source_code_description, "
                    "r.target_id AS target_concept_id, "
                    "coalesce(r.target_vocabulary_id, r.target_vocabulary, 'None') "
                    "AS target_vocabulary_id, "
                    "r.start_date AS valid_start_date, r.end_date AS valid_end_date, "
                    f"r.invalid_reason FROM {table} AS r ORDER BY r.line"
                )
                counts[str(path)] = _count_temp(con, table)
            con.execute("COMMIT")
        except duckdb.Error as exc:
            _rollback(con)
            raise EtlError(f"adding code maps to {target} failed: {exc}") from exc
        return counts
    finally:
        for table in ["_codemap_raw", *(table for _, table in staged)]:
            con.execute(f"DROP TABLE IF EXISTS {table}")


def _count_temp(con: duckdb.DuckDBPyConnection, table: str) -> int:
    row = _first_row(con, f"SELECT count(*) FROM {table}")
    return int(row[0]) if row else 0


def load_demo_vocabulary(con: duckdb.DuckDBPyConnection, schema: str = "vocab") -> None:
    """The bundled demo vocabulary, its supplement, and every code map of mappings/codemaps."""
    load_vocabulary(
        con, settings.demo_vocabulary_dir(), schema, supplement=settings.vocabulary_supplement_dir()
    )
    load_local_code_maps(con, schema)


def load_local_code_maps(con: duckdb.DuckDBPyConnection, schema: str = "vocab") -> int:
    """Every code map under mappings/codemaps on top of the vocabulary; returns the files."""
    maps = sorted(settings.codemaps_dir().glob("**/*.csv"))
    if maps:
        load_code_maps(con, maps, schema)
    return len(maps)


def load_into_warehouse(
    target: Target, folder: Path | None, progress: Callable[[str], None] | None = None
) -> dict[str, int]:
    """Load an Athena folder (None: the bundled demo subset and its supplement) and the
    local code maps into the warehouse's vocabulary; rows per table.

    A PostgreSQL warehouse gets the tables checked and loaded here first (in memory),
    then copied over in one transaction.
    """
    from omop_etl.warehouse import connect, connect_engine

    demo = folder is None
    folder = folder or settings.demo_vocabulary_dir()
    con = connect_engine() if target.kind == "postgresql" else connect(target)
    try:
        counts = load_vocabulary(
            con,
            folder,
            settings.VOCAB_SCHEMA,
            supplement=settings.vocabulary_supplement_dir() if demo else None,
            progress=(lambda name, n: progress(f"{name} ({n:,} rows)")) if progress else None,
        )
        if progress:
            progress("local code maps")
        load_local_code_maps(con, settings.VOCAB_SCHEMA)
        counts["source_to_concept_map"] = con.execute(
            f'select count(*) from "{settings.VOCAB_SCHEMA}".source_to_concept_map'
        ).fetchall()[0][0]
        if target.kind == "postgresql":
            from omop_etl.pgwarehouse import publish_vocabulary

            if progress:
                progress("copying to the warehouse")
            publish_vocabulary(con, target)
    finally:
        con.close()
    return counts
