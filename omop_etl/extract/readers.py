"""Readers: one export file -> a SQL relation the file's staging SELECT reads from.

Every reader streams (DuckDB scans the file in chunks; a re-encoded file is
transcoded chunk by chunk), so memory stays bounded on multi-GB files. Files may be
compressed with gzip or zstd, whatever their format and encoding (recognised by their
first bytes, not their name).

* ``csv`` (also TSV: set the delimiter) in UTF-8 (a BOM is skipped) is read by
  DuckDB directly. Other encodings (CP949, EUC-KR, ...) are decoded strictly by
  Python's codec, 8 MiB at a time, into a UTF-8 copy in the run's temporary
  folder; an undecodable byte is carried over *as the raw byte*, so the record is
  refused and goes to the rejects with the raw bytes of its field as hex (never
  replaced, never guessed). Quoted fields may hold newlines; CRLF and LF endings are
  both records.
* ``parquet``: the file's own columns and types.
* ``ndjson`` (FHIR bulk export): one JSON resource per line, exposed as the column
  ``record`` (JSON), NULL when the line is not valid JSON. Rules read it with
  ``json:`` paths. Blank lines are not records.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pyarrow.parquet as pq

from omop_etl.errors import EtlError
from omop_etl.spec import FileSpec
from omop_etl.sql import literal

_UTF8 = {"utf-8", "utf8", "utf-8-sig", "utf_8", "utf_8_sig"}
_CHUNK = 8 << 20
RECORD = "record"  # the JSON column of an ndjson file
_LINE = "_line"
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # how surrogateescape carries a raw byte
_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}


def encoding_name(fs: FileSpec) -> str:
    """The spec's encoding as the rejects name it: utf-8, cp949, euc-kr ..."""
    name = str(fs.read["encoding"]).lower().replace("_", "-")
    return "utf-8" if name in {"utf8", "utf-8-sig"} else name


def compression_of(path: Path) -> str | None:
    """``gzip``, ``zstd`` or None, from the file's first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return next((name for magic, name in _MAGIC.items() if head.startswith(magic)), None)


@contextmanager
def open_bytes(path: Path, compression: str | None) -> Iterator[BinaryIO]:
    """The file's bytes, decompressed, as a stream."""
    if compression == "gzip":
        with gzip.open(path, "rb") as fh:
            yield fh  # type: ignore[misc]
    elif compression == "zstd":
        import zstandard

        with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as fh:
            yield io.BufferedReader(fh, _CHUNK)  # type: ignore[arg-type]
    else:
        with open(path, "rb") as fh:
            yield fh


@dataclass
class Source:
    """A file opened for staging: each read of it is one ``relation(tag)``."""

    path: Path  # the file as exported
    read_path: Path  # the file DuckDB reads (a UTF-8 copy of a re-encoded file)
    fs: FileSpec  # the file entry, its column names chosen for this file's header
    columns: list[str]  # what column rules may name
    first_line: int  # record number of the first data record (the header is 1)
    # whether a record's every column must be parsed to find undecodable bytes (DuckDB
    # checks only the columns a query reads; a transcoded file without errors is clean)
    check_every_column: bool = False
    compression: str | None = None  # of read_path
    name: str = ""  # the file's path inside the export folder, for messages
    # records of the export DuckDB does not see (refused by the normalizing reader:
    # see omop_etl.extract.records); their numbers, ascending
    skipped: list[int] = field(default_factory=list)

    @property
    def transcoded(self) -> bool:
        return self.read_path != self.path

    @property
    def parsed_by_csv_reader(self) -> bool:
        """Whether DuckDB's CSV reader (and so its rejects tables) reads this file."""
        return self.fs.read["format"] != "parquet"

    def relation(self, tag: str) -> str:
        """SQL relation of the file's records; ``tag`` names DuckDB's rejects tables."""
        fmt = self.fs.read["format"]
        if fmt == "parquet":
            return f"read_parquet({literal(str(self.read_path))})"
        if fmt == "ndjson":
            # JSON escapes every control character, so the RS byte never occurs in a
            # valid line: each line is one field
            opts = {**self.fs.read, "delimiter": chr(30), "quote": "", "escape": ""}
            lines = self._csv_call(opts, [_LINE], False, tag)
            return (
                f"(select case when json_valid({_LINE}) then {_LINE}::json end as {RECORD} "
                f"from {lines} where {_LINE} is not null)"
            )
        return self._csv_call(self.fs.read, self.columns, self.fs.read["header"], tag)

    def _csv_call(self, opts: dict, columns: list[str], header: bool, tag: str) -> str:
        types = ", ".join(f"{literal(c)}: 'VARCHAR'" for c in columns)
        nulls = ", ".join(literal(str(v)) for v in opts.get("null_values", [""]))
        if opts is not self.fs.read:  # ndjson lines: an empty line is no record
            nulls = literal("")
        line_size = int(opts["max_record_bytes"]) + 2
        return (
            f"read_csv({literal(str(self.read_path))}, header = {str(header).lower()}, "
            f"auto_detect = false, columns = {{{types}}}, delim = {literal(opts['delimiter'])}, "
            f"quote = {literal(opts['quote'])}, escape = {literal(opts['escape'])}, "
            f"nullstr = [{nulls}], strict_mode = true, store_rejects = true, "
            f"compression = {literal(self.compression or 'none')}, "
            f"max_line_size = {line_size}, buffer_size = {max(2 * line_size, 32 << 20)}, "
            f"rejects_table = {literal(tag + '_errors')}, rejects_scan = {literal(tag + '_scans')})"
        )


def open_source(path: Path, fs: FileSpec, temp_dir: Path, name: str, site: str) -> Source:
    """Open one file; a re-encoded CSV is transcoded into ``temp_dir`` once, a compressed
    Parquet file decompressed. The entry's column names are chosen for the header."""
    fmt = fs.read["format"]
    compression = compression_of(path)
    if fmt == "parquet":
        read_path = path
        if compression:
            read_path = temp_dir / f"{_flat(name)}.parquet"
            with open_bytes(path, compression) as src, open(read_path, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
        try:
            columns = pq.read_schema(read_path).names
        except Exception as exc:
            raise EtlError(f"site {site}, file {name}: not a readable Parquet file: {exc}") from exc
        return Source(path, read_path, fs.bind(columns, site, name), columns, 1, name=name)
    if fmt == "ndjson":
        return Source(path, path, fs, [RECORD], 1, compression=compression, name=name)
    read_path = path
    undecodable = True  # not known for a file DuckDB decodes itself
    if encoding_name(fs) != "utf-8":
        read_path = temp_dir / f"{_flat(name)}.utf8"
        undecodable = transcode(path, compression, read_path, encoding_name(fs), name)
        compression = None
    header = read_header(read_path, compression, fs, name, site)
    return Source(
        path,
        read_path,
        fs.bind(header, site, name),
        header,
        2 if fs.read["header"] else 1,
        undecodable,
        compression,
        name,
    )


def _flat(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def transcode(
    source: Path, compression: str | None, target: Path, encoding: str, name: str
) -> bool:
    """Decode ``source`` strictly and write it as UTF-8; undecodable bytes stay raw.

    Returns whether any byte was undecodable.
    """
    try:
        decoder = codecs.getincrementaldecoder(encoding)("surrogateescape")
    except LookupError as exc:
        raise EtlError(f"{name}: unknown encoding {encoding!r}") from exc
    found = False
    with open_bytes(source, compression) as src, open(target, "wb") as out:
        while True:
            chunk = src.read(_CHUNK)
            text = decoder.decode(chunk, final=not chunk)
            found = found or _ESCAPED_BYTE.search(text) is not None
            out.write(text.encode("utf-8", "surrogateescape"))
            if not chunk:
                return found


def read_header(
    path: Path, compression: str | None, fs: FileSpec, name: str, site: str
) -> list[str]:
    """The column names in the first record of a delimited (UTF-8) file."""
    with open_bytes(path, compression) as fh:
        first = fh.readline(1 << 20)
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EtlError(
            f"site {site}, file {name}: line 1: header is not valid {fs.read['encoding']}"
        ) from exc
    header = next(_records(text, fs), [])
    if not header or not any(h.strip() for h in header):
        raise EtlError(f"site {site}, file {name}: line 1: empty header")
    if not fs.read["header"]:
        return [f"column{i}" for i in range(len(header))]
    return [h.strip() for h in header]


def _records(text: str, fs: FileSpec):
    quote = fs.read["quote"] or None
    return csv.reader(
        io.StringIO(text),
        delimiter=fs.read["delimiter"],
        quotechar=quote or '"',
        quoting=csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE,
    )


def undecodable_field_hex(source: Source, byte_position: int) -> str:
    """The raw bytes (hex) of the field DuckDB found undecodable at ``byte_position``
    (the field's first byte, counted from 1, in the file as DuckDB reads it), as the
    export holds them."""
    with open_bytes(source.read_path, source.compression) as fh:
        if source.compression:
            fh.read(max(byte_position - 1, 0))  # a compressed stream is skipped through
        else:
            fh.seek(max(byte_position - 1, 0))
        chunk = fh.read(1 << 16)
    fs = source.fs
    fields = next(_records(chunk.decode("latin-1"), fs), [""])
    raw = fields[0].encode("latin-1")
    if source.transcoded:  # back to the bytes of the export itself
        raw = raw.decode("utf-8", "surrogateescape").encode(encoding_name(fs), "surrogateescape")
    return raw.hex()
