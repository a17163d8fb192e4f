"""A file of the export as one batch reads it: opened once, counted once, and read
again through the normalizing reader when DuckDB does not see every record."""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from pathlib import Path

from omop_etl.errors import EtlError
from omop_etl.extract import records
from omop_etl.extract.readers import Source, open_source
from omop_etl.spec import FileSpec


def read_options(fs: FileSpec) -> tuple:
    """The options that decide how a file is parsed: entries that agree share one read."""
    keys = ("format", "encoding", "delimiter", "quote", "escape", "header", "max_record_bytes")
    return tuple((k, str(fs.read[k])) for k in keys)


@dataclass
class ExportFile:
    """One file of the export, for the entries that read it with the same options."""

    path: Path
    name: str  # its path inside the export folder
    fs: FileSpec  # the first entry reading it (its read options are everyone's)
    temp_dir: Path
    site: str
    opened: Source | None = None
    count: int | None = None  # data records, counted from the file itself
    open_quote: bool = False
    normalized: bool = False
    damaged: list[records.Damaged] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _origin: Source | None = None  # the file as first opened (normalize reads it again)
    _dropped: dict[int, str] = field(default_factory=dict)  # refused by DuckDB in a copy
    _copies: list[Path] = field(default_factory=list)

    def open(self) -> Source:
        """The file opened (a CP949 file transcoded, a compressed Parquet file unpacked)."""
        with self.lock:
            if self.opened is None:
                self.opened = open_source(self.path, self.fs, self.temp_dir, self.name, self.site)
            return self.opened

    def records(self) -> int:
        """Its data records, counted once, independently of DuckDB."""
        opened = self.open()
        with self.lock:
            if self.count is None:
                self.count, self.open_quote = records.count_records(opened)
            return self.count

    def source(self, fs: FileSpec) -> Source:
        """The file as entry ``fs`` reads it (its column names chosen for the header)."""
        opened = self.open()
        bound = (
            fs
            if opened.fs.read["format"] == "ndjson"
            else fs.bind(opened.columns, self.site, self.name)
        )
        return Source(
            path=opened.path,
            read_path=opened.read_path,
            fs=bound,
            columns=opened.columns,
            first_line=opened.first_line,
            check_every_column=opened.check_every_column,
            compression=opened.compression,
            name=self.name,
            skipped=[d.record_no for d in self.damaged],
        )

    @property
    def expected(self) -> int:
        """The records DuckDB should see: all but the damaged ones."""
        return self.records() - len(self.damaged)

    def saw_every_record(self, seen: int, refused: dict[int, records.Damaged]) -> bool:
        """Whether a read of the file accounted for every record counted in it: the
        records it gave (``seen``) and the ones it refused, each one record. Then the
        reader's refusals are the file's damaged records (its record numbers are the
        export's: a refused record spans no other). A quote still open at the end, or a
        count that does not add up, means records ran together or were skipped."""
        count = self.records()
        if self.open_quote:
            return False
        if self.normalized:  # a repaired copy: nothing left to refuse
            return not refused and seen == count - len(self.damaged)
        if seen + len(refused) != count:
            return False
        with self.lock:
            known = {d.record_no for d in self.damaged}
            if self.damaged and known != set(refused):
                return False  # another entry's read of the file refused other records
            self.damaged = [refused[n] for n in sorted(refused)]
        return True

    def normalize(self, refused: dict[int, str] | None = None) -> None:
        """Read the file again record by record: its damaged records become rejects, and
        DuckDB reads a copy without them. ``refused``: export record numbers DuckDB
        refused in the last copy, with their rule."""
        opened = self.open()
        if opened.fs.read["format"] == "parquet":
            raise EtlError(f"site {self.site}, file {self.name}: a Parquet file cannot be repaired")
        with self.lock:
            origin = self._origin or opened
            self._origin = origin
            drop = {**self._dropped, **(refused or {})}
            self._dropped = drop
            target = self.temp_dir / f"normalized_{len(self._copies)}_{Path(self.name).name}"
            self._copies.append(target)
            count, damaged = records.normalize(origin, target, set(drop))
            self.damaged = [
                records.Damaged(d.record_no, drop[d.record_no], d.column, d.raw)
                if d.rule == "malformed_row:refused" and d.record_no in drop
                else d
                for d in damaged
            ]
            self.count = count
            self.open_quote = False
            self.normalized = True
            self.opened = Source(
                path=origin.path,
                read_path=target,
                fs=origin.fs,
                columns=origin.columns,
                first_line=origin.first_line,
                check_every_column=False,  # the copy holds no undecodable byte
                compression=None,
                name=self.name,
            )

    def export_number(self, ordinal: int) -> int:
        """The export's record number of the ``ordinal``-th record DuckDB read."""
        return export_number(ordinal, [d.record_no for d in self.damaged], self.open().first_line)


def export_number(ordinal: int, skipped: list[int], first_line: int) -> int:
    """The record number in the export of the ``ordinal``-th record a reader saw, when it
    did not see the records ``skipped`` (record numbers, ascending).

    >>> export_number(3, [4], 2)  # records 2, 3 seen; 4 skipped; the third seen is 5
    5
    """
    data = [s - first_line + 1 for s in skipped]  # data ordinals of the skipped records
    lows = [d - i for i, d in enumerate(data, start=1)]  # records seen before each one
    return ordinal + bisect.bisect_left(lows, ordinal) + first_line - 1
