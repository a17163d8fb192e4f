"""OMOP CDM v5.4 schema: the OHDSI spec CSVs as a typed model, and DDL generated from it.

Tables are created without keys; primary keys, indexes and (PostgreSQL only) foreign
keys are applied after the bulk load, as the OHDSI DDL scripts do.

DuckDB 2.0.1 facts the design relies on (checked against the pinned version):

* ``ALTER TABLE ... ADD PRIMARY KEY`` works on a populated table, but has no
  ``IF NOT EXISTS`` and the constraint can never be dropped again (no
  ``ALTER TABLE ... DROP CONSTRAINT``). A ``CREATE UNIQUE INDEX IF NOT EXISTS`` on
  the key column enforces the same uniqueness (the key columns are NOT NULL anyway),
  is idempotent and can be dropped before a reload, so the primary key is a unique
  index in DuckDB.
* ``ALTER TABLE ... ADD FOREIGN KEY`` is not implemented, so DuckDB gets no foreign keys.
* Index names are scoped to the table's schema.
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import duckdb

from omop_etl import settings
from omop_etl.errors import EtlError

FIELD_SPEC_FILE = "OMOP_CDMv5.4_Field_Level.csv"
TABLE_SPEC_FILE = "OMOP_CDMv5.4_Table_Level.csv"
VOCAB_SPEC_SCHEMA = "VOCAB"
DIALECTS = ("duckdb", "postgresql")

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_MAX_IDENTIFIER_LENGTH = 63  # PostgreSQL silently truncates longer names
_VARCHAR = re.compile(r"^varchar\((\d+|max)\)$")
_SCALAR_TYPES = {
    "duckdb": {
        "integer": "INTEGER",
        "bigint": "BIGINT",
        "float": "DOUBLE",
        "date": "DATE",
        "datetime": "TIMESTAMP",
    },
    "postgresql": {
        "integer": "INTEGER",
        "bigint": "BIGINT",
        "float": "NUMERIC",
        "date": "DATE",
        "datetime": "TIMESTAMP",
    },
}
_UNBOUNDED_TEXT = {"duckdb": "VARCHAR", "postgresql": "TEXT"}

# Secondary indexes of the OHDSI v5.4 index DDL besides the generic rules (every
# non-key person_id and visit_occurrence_id): each table's main concept and lookup columns.
_INDEXED_COLUMNS: dict[str, tuple[str, ...]] = {
    "person": ("gender_concept_id",),
    "visit_occurrence": ("visit_concept_id",),
    "visit_detail": ("visit_detail_concept_id",),
    "condition_occurrence": ("condition_concept_id",),
    "drug_exposure": ("drug_concept_id",),
    "procedure_occurrence": ("procedure_concept_id",),
    "device_exposure": ("device_concept_id",),
    "measurement": ("measurement_concept_id",),
    "observation": ("observation_concept_id",),
    "note": ("note_type_concept_id",),
    "note_nlp": ("note_id", "note_nlp_concept_id"),
    "specimen": ("specimen_concept_id",),
    "fact_relationship": ("domain_concept_id_1", "domain_concept_id_2", "relationship_concept_id"),
    "cost": ("cost_event_id",),
    "drug_era": ("drug_concept_id",),
    "dose_era": ("drug_concept_id",),
    "condition_era": ("condition_concept_id",),
    "episode": ("episode_concept_id",),
    "episode_event": ("episode_id", "episode_event_field_concept_id"),
    "metadata": ("metadata_concept_id",),
    "concept": ("concept_code", "vocabulary_id", "domain_id", "concept_class_id"),
    "concept_relationship": ("concept_id_1", "concept_id_2", "relationship_id"),
    "concept_synonym": ("concept_id",),
    "concept_ancestor": ("ancestor_concept_id", "descendant_concept_id"),
    "source_to_concept_map": (
        "target_concept_id",
        "source_vocabulary_id",
        "target_vocabulary_id",
        "source_code",
    ),
    "drug_strength": ("drug_concept_id", "ingredient_concept_id"),
}
# PostgreSQL clustering column where a table has no person_id; otherwise the primary key.
_CLUSTER_COLUMNS = {
    "note_nlp": "note_id",
    "episode_event": "episode_id",
    "metadata": "metadata_concept_id",
    "concept_relationship": "concept_id_1",
    "concept_synonym": "concept_id",
    "concept_ancestor": "ancestor_concept_id",
    "source_to_concept_map": "target_concept_id",
    "drug_strength": "drug_concept_id",
}


@dataclass(frozen=True)
class Field:
    """One column of the spec; ``datatype`` is the spec's spelling (e.g. ``varchar(50)``)."""

    table: str
    name: str
    datatype: str
    required: bool
    primary_key: bool
    fk_table: str | None
    fk_field: str | None


@dataclass(frozen=True)
class Table:
    """One spec table; ``schema_name`` is the spec's label: ``CDM``, ``VOCAB`` or ``RESULTS``."""

    name: str
    fields: tuple[Field, ...]
    schema_name: str

    @property
    def primary_key(self) -> Field | None:
        return next((f for f in self.fields if f.primary_key), None)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


def _quote_ident(name: str) -> str:
    """A validated, double-quoted SQL identifier; EtlError for anything else."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise EtlError(
            f"invalid SQL identifier {name!r}: use lowercase letters, digits and '_', "
            "not starting with a digit"
        )
    if len(name) > _MAX_IDENTIFIER_LENGTH:
        raise EtlError(
            f"SQL identifier {name!r} is longer than {_MAX_IDENTIFIER_LENGTH} characters"
        )
    return f'"{name}"'


def _check_dialect(dialect: str) -> str:
    if dialect not in DIALECTS:
        raise EtlError(f"unknown SQL dialect {dialect!r}; expected one of {', '.join(DIALECTS)}")
    return dialect


def sql_type(datatype: str, dialect: str) -> str:
    """The column type for a spec datatype (case-insensitive) in the given dialect."""
    _check_dialect(dialect)
    spelled = datatype.strip().lower()
    if spelled in _SCALAR_TYPES[dialect]:
        return _SCALAR_TYPES[dialect][spelled]
    varchar = _VARCHAR.match(spelled)
    if varchar is None:
        raise EtlError(f"unknown CDM spec datatype {datatype!r}")
    if varchar.group(1) == "max":
        return _UNBOUNDED_TEXT[dialect]
    return f"VARCHAR({int(varchar.group(1))})"


def _yes_no(value: str, where: str) -> bool:
    if value == "Yes":
        return True
    if value == "No":
        return False
    raise EtlError(f"{where}: expected 'Yes' or 'No', got {value!r}")


def _read_rows(file_name: str, columns: set[str]) -> list[tuple[int, dict[str, str]]]:
    path = settings.CDM_SPEC_DIR / file_name
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = columns - set(reader.fieldnames or ())
            if missing:
                raise EtlError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
            return [(reader.line_num, row) for row in reader]
    except OSError as exc:
        raise EtlError(f"cannot read CDM spec {path}: {exc}") from exc


def _spec_name(raw: str, where: str) -> str:
    """A spec table or field name; the spec quotes reserved words (``"offset"``)."""
    name = raw.strip().strip('"').lower()
    if not _IDENTIFIER.match(name):
        raise EtlError(f"{where}: {raw!r} is not a valid table or field name")
    return name


@functools.cache
def load_spec() -> Mapping[str, Table]:
    """The CDM v5.4 tables by name, in spec order (read-only, read once)."""
    table_rows = _read_rows(TABLE_SPEC_FILE, {"cdmTableName", "schema"})
    field_rows = _read_rows(
        FIELD_SPEC_FILE,
        {
            "cdmTableName",
            "cdmFieldName",
            "isRequired",
            "cdmDatatype",
            "isPrimaryKey",
            "isForeignKey",
            "fkTableName",
            "fkFieldName",
        },
    )
    fields: dict[str, list[Field]] = {}
    for line, row in table_rows:
        name = _spec_name(row["cdmTableName"], f"{TABLE_SPEC_FILE} line {line}")
        if name in fields:
            raise EtlError(f"{TABLE_SPEC_FILE} line {line}: table {name!r} listed twice")
        fields[name] = []
    for line, row in field_rows:
        where = f"{FIELD_SPEC_FILE} line {line}"
        table = _spec_name(row["cdmTableName"], where)
        if table not in fields:
            raise EtlError(f"{where}: table {table!r} is not in {TABLE_SPEC_FILE}")
        sql_type(row["cdmDatatype"], "duckdb")  # reject unknown datatypes at load
        is_fk = _yes_no(row["isForeignKey"], where)
        fields[table].append(
            Field(
                table=table,
                name=_spec_name(row["cdmFieldName"], where),
                datatype=row["cdmDatatype"].strip(),
                required=_yes_no(row["isRequired"], where),
                primary_key=_yes_no(row["isPrimaryKey"], where),
                fk_table=_spec_name(row["fkTableName"], where) if is_fk else None,
                fk_field=_spec_name(row["fkFieldName"], where) if is_fk else None,
            )
        )
    tables = {
        name: Table(name=name, fields=tuple(fields[name]), schema_name=row["schema"].strip())
        for name, (_, row) in zip(fields, table_rows, strict=True)
    }
    for table in tables.values():
        if not table.fields:
            raise EtlError(f"{FIELD_SPEC_FILE}: table {table.name!r} has no fields")
        for f in table.fields:
            if f.fk_table is not None and (
                f.fk_table not in tables or f.fk_field not in tables[f.fk_table].field_names
            ):
                raise EtlError(
                    f"{FIELD_SPEC_FILE}: {table.name}.{f.name} references unknown "
                    f"{f.fk_table}.{f.fk_field}"
                )
    return MappingProxyType(tables)


def vocabulary_tables() -> list[str]:
    """The standardized vocabulary tables (spec schema VOCAB), in spec order."""
    return [t.name for t in load_spec().values() if t.schema_name == VOCAB_SPEC_SCHEMA]


def cdm_tables() -> list[str]:
    """Clinical, health-system, derived, metadata and cohort tables: all but the vocabulary."""
    return [t.name for t in load_spec().values() if t.schema_name != VOCAB_SPEC_SCHEMA]


def _table(table: Table | str) -> Table:
    if isinstance(table, Table):
        return table
    spec = load_spec()
    if table not in spec:
        raise EtlError(f"{table!r} is not a CDM v5.4 table")
    return spec[table]


def _qualified(schema: str, table: str) -> str:
    return f"{_quote_ident(schema)}.{_quote_ident(table)}"


def create_table_sql(table: Table | str, schema: str, dialect: str = "duckdb") -> str:
    """CREATE TABLE IF NOT EXISTS with spec types and NOT NULL; no keys."""
    spec = _table(table)
    _check_dialect(dialect)
    columns = ",\n".join(
        f"    {_quote_ident(f.name)} {sql_type(f.datatype, dialect)}"
        + (" NOT NULL" if f.required else "")
        for f in spec.fields
    )
    return f"CREATE TABLE IF NOT EXISTS {_qualified(schema, spec.name)} (\n{columns}\n)"


def primary_key_name(table: Table | str) -> str:
    """Name of the primary-key constraint (PostgreSQL) or unique index (DuckDB)."""
    return f"xpk_{_table(table).name}"


def primary_key_sql(table: Table | str, schema: str, dialect: str = "duckdb") -> list[str]:
    """The primary key: a constraint in PostgreSQL, an idempotent unique index in DuckDB."""
    spec = _table(table)
    _check_dialect(dialect)
    key = spec.primary_key
    if key is None:
        return []
    name = _quote_ident(primary_key_name(spec))
    target = _qualified(schema, spec.name)
    if dialect == "duckdb":
        return [f"CREATE UNIQUE INDEX IF NOT EXISTS {name} ON {target} ({_quote_ident(key.name)})"]
    return [f"ALTER TABLE {target} ADD CONSTRAINT {name} PRIMARY KEY ({_quote_ident(key.name)})"]


def foreign_key_sql(table: Table | str, schema: str, vocab_schema: str, dialect: str) -> list[str]:
    """Foreign keys of the table; references to vocabulary tables go to ``vocab_schema``.

    Empty for DuckDB: it cannot add foreign keys to an existing table.
    """
    spec = _table(table)
    if _check_dialect(dialect) == "duckdb":
        return []
    vocabulary = set(vocabulary_tables())
    statements = []
    for f in spec.fields:
        if f.fk_table is None or f.fk_field is None:
            continue
        target_schema = vocab_schema if f.fk_table in vocabulary else schema
        statements.append(
            f"ALTER TABLE {_qualified(schema, spec.name)} "
            f"ADD CONSTRAINT {_quote_ident(f'fpk_{spec.name}_{f.name}')} "
            f"FOREIGN KEY ({_quote_ident(f.name)}) "
            f"REFERENCES {_qualified(target_schema, f.fk_table)} ({_quote_ident(f.fk_field)})"
        )
    return statements


def indexed_columns(table: Table | str) -> list[str]:
    """Columns with a secondary index: every non-key person_id and visit_occurrence_id,
    plus the concept and lookup columns the OHDSI v5.4 index DDL indexes."""
    spec = _table(table)
    key = spec.primary_key.name if spec.primary_key else None
    extra = _INDEXED_COLUMNS.get(spec.name, ())
    for name in extra:
        if name not in spec.field_names:
            raise EtlError(f"index column {spec.name}.{name} is not in the CDM spec")
    columns = ["person_id", *extra, "visit_occurrence_id"]
    return [c for c in dict.fromkeys(columns) if c in spec.field_names and c != key]


def index_name(table: Table | str, column: str) -> str:
    """Secondary index name, unique per schema because it starts with the table name."""
    return f"idx_{_table(table).name}_{column}"


def _cluster_index(spec: Table) -> str | None:
    if "person_id" in indexed_columns(spec):
        return index_name(spec, "person_id")
    if spec.name in _CLUSTER_COLUMNS:
        return index_name(spec, _CLUSTER_COLUMNS[spec.name])
    if spec.primary_key is not None:
        return primary_key_name(spec)
    return None


def index_sql(table: Table | str, schema: str, dialect: str = "duckdb") -> list[str]:
    """Secondary indexes (IF NOT EXISTS); PostgreSQL also marks the clustering index."""
    spec = _table(table)
    _check_dialect(dialect)
    target = _qualified(schema, spec.name)
    statements = [
        f"CREATE INDEX IF NOT EXISTS {_quote_ident(index_name(spec, column))} "
        f"ON {target} ({_quote_ident(column)})"
        for column in indexed_columns(spec)
    ]
    cluster = _cluster_index(spec)
    if dialect == "postgresql" and cluster is not None:
        statements.append(f"ALTER TABLE {target} CLUSTER ON {_quote_ident(cluster)}")
    return statements


def create_schema(
    con: duckdb.DuckDBPyConnection,
    schema: str,
    tables: Iterable[str] | None = None,
    dialect: str = "duckdb",
) -> None:
    """Create the schema and the given CDM tables (default: all 39) if they do not exist."""
    names = list(load_spec()) if tables is None else list(tables)
    statements = [f"CREATE SCHEMA IF NOT EXISTS {_quote_ident(schema)}"]
    statements += [create_table_sql(name, schema, dialect) for name in names]
    for statement in statements:
        con.execute(statement)


def apply_constraints(
    con: duckdb.DuckDBPyConnection,
    schema: str,
    dialect: str = "duckdb",
    *,
    secondary_indexes: bool = True,
) -> None:
    """Add primary-key unique indexes (and secondary indexes) to the CDM tables in ``schema``.

    Idempotent. DuckDB only; PostgreSQL constraints come from ``postgres_ddl``.
    DuckDB scans columns with zone maps, so secondary (ART) indexes only pay off
    for point lookups; ``secondary_indexes=False`` keeps just the primary keys.
    """
    if _check_dialect(dialect) != "duckdb":
        raise EtlError("apply_constraints supports DuckDB only; use postgres_ddl() for PostgreSQL")
    _quote_ident(schema)  # rejects an invalid schema name
    present = {
        row[0]
        for row in con.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_catalog = current_database() AND table_schema = ?",
            [schema],
        ).fetchall()
    }
    tables = [t for t in load_spec().values() if t.name in present]
    if not tables:
        raise EtlError(f"schema {schema!r} has no CDM tables to constrain")
    for table in tables:
        statements = primary_key_sql(table, schema, dialect)
        if secondary_indexes:
            statements += index_sql(table, schema, dialect)
        for statement in statements:
            try:
                con.execute(statement)
            except duckdb.Error as exc:
                raise EtlError(f"{schema}.{table.name}: cannot apply {statement!r}: {exc}") from exc


def postgres_ddl(schema: str, vocab_schema: str) -> str:
    """The full PostgreSQL DDL script: schemas, tables, primary keys, foreign keys, indexes."""
    spec = load_spec()
    vocabulary = set(vocabulary_tables())
    placed = [(t, vocab_schema if t.name in vocabulary else schema) for t in spec.values()]
    statements = [
        f"CREATE SCHEMA IF NOT EXISTS {_quote_ident(s)}"
        for s in dict.fromkeys((schema, vocab_schema))
    ]
    statements += [create_table_sql(t, s, "postgresql") for t, s in placed]
    statements += [sql for t, s in placed for sql in primary_key_sql(t, s, "postgresql")]
    statements += [
        sql for t, s in placed for sql in foreign_key_sql(t, s, vocab_schema, "postgresql")
    ]
    statements += [sql for t, s in placed for sql in index_sql(t, s, "postgresql")]
    return "".join(f"{statement};\n" for statement in statements)
