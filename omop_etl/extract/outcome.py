"""What extraction records about a batch's files: its rejects, flags and reconciliation.

The reconciliation holds, per file entry and file: the records in the file, counted
from the file itself independently of the reader (``rows_read``); the staging rows
they gave (``rows_produced``: one per record, or one per element for an entry with
``each``); and what became of those rows: loaded + rejected + filtered = produced.
An entry with ``each`` also counts the records that gave no row (``records_empty``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

REJECTS_DDL = """
create table if not exists {schema}.rejects (
    batch_id varchar, source_file varchar, file_path varchar, record_no bigint,
    "column" varchar, rule varchar, raw_value varchar
)"""

# The site's lasting rejects: the run's, with the site named.
STORED_REJECTS_DDL = """
create table if not exists {schema}.rejects (
    site varchar, batch_id varchar, source_file varchar, file_path varchar,
    record_no bigint, "column" varchar, rule varchar, raw_value varchar
)"""

FLAGS_DDL = """
create table if not exists {schema}.flags (
    batch_id varchar, source_file varchar, file_path varchar, rule varchar, rows bigint,
    example_record bigint
)"""

RECONCILIATION_DDL = """
create table if not exists {schema}.reconciliation (
    batch_id varchar, source_file varchar, file_path varchar, target varchar,
    rows_read bigint, rows_loaded bigint, rows_rejected bigint, rows_filtered bigint,
    note varchar, rows_produced bigint, records_empty bigint
)"""

NOT_IN_SPEC = "(not in spec)"  # the source_file of export files no spec file describes
SUPERSEDED = "superseded"  # a record a later batch holds a newer version of


@dataclass
class FileResult:
    """What became of one source file (of one file entry of the spec)."""

    source_file: str
    path: str
    target: str | None
    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    rows_filtered: int = 0
    note: str | None = None
    rows_produced: int | None = None  # None: one row per record (= rows_read)
    records_empty: int = 0
    flags: dict[str, int] = field(default_factory=dict)  # kept rows something was fixed in
    # the first record number of each flag that points at a value (out_of_window:...)
    flag_examples: dict[str, int] = field(default_factory=dict)

    @property
    def produced(self) -> int:
        return self.rows_read if self.rows_produced is None else self.rows_produced
