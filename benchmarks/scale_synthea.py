"""Write a scaled Synthea CSV export: every patient cloned N times with fresh ids.

    python benchmarks/scale_synthea.py --copies N --out DIR [--source DIR] [--threads T]

Reference files (organizations, providers, payers) are copied as they are. Every
other file is cloned N times by one streaming DuckDB ``COPY`` statement per file,
copy after copy (copy 0 = the source rows in their order, then copy 1, ...).

New ids: in copy ``k >= 1`` every column holding a patient-linked id
(``ID_COLUMNS``) becomes ``uuid(md5_number(original) XOR k * MIX)``, a function of
(original id, k) only: the same original id maps to the same new id in every file
of a copy (so foreign keys stay consistent, and PATIENTINSURANCEID stays equal to
PATIENTID where it was), and for a given id the k copies differ (``k -> k * MIX``
is injective); collisions between different ids need a 128-bit md5 coincidence.
Copy 0 keeps the original ids. Columns naming organizations, providers or payers
keep their values. Header, column order and empty fields are kept, and a field is
quoted only when it must be (delimiter, quote or newline inside), as in the
source: copy 0 of the bundled sample is byte-identical to it.

A marker file (``MARKER``) with the row and byte counts is written last: a folder
without it is an incomplete export.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = PROJECT_ROOT / "mappings" / "samples" / "synthea_ma27"
MARKER = ".scaled_export.json"  # hidden: not an export file the pipeline should read
# 2^64 / golden ratio: clone k XORs an id's 128-bit md5 with k * MIX (distinct for every k).
MIX = 0x9E3779B97F4A7C15

# Reference data shared by all patients: copied unchanged, never cloned.
REFERENCE_FILES = frozenset({"organizations.csv", "providers.csv", "payers.csv"})

# Columns that hold patient-linked UUIDs, in any cloned file (inspected on Synthea v3.0.0):
#   patients.Id; PATIENT (encounters, conditions, ... payer_transitions); PATIENTID (claims,
#   claims_transactions); encounters.Id, ENCOUNTER (clinical files), APPOINTMENTID (claims,
#   claims_transactions); claims.Id, CLAIMID; claims_transactions.ID; careplans.Id;
#   imaging_studies.Id; payer_transitions.MEMBERID; claims_transactions.PATIENTINSURANCEID
#   (the PATIENTID when the patient pays, else empty: mapped by the same function, so the
#   equality holds in every copy).
# Kept as they are: ORGANIZATION, PLACEOFSERVICE (organizations); PROVIDER, PROVIDERID,
#   SUPERVISINGPROVIDERID (providers); PAYER, SECONDARY_PAYER and claims.PRIMARY/
#   SECONDARYPATIENTINSURANCEID (payers, despite the name); non-UUID ids (CHARGEID,
#   DEPARTMENTID, TRANSFEROUTID, DICOM SERIES_UID/INSTANCE_UID) that no other file references.
ID_COLUMNS = frozenset(
    {
        "Id",
        "ID",
        "PATIENT",
        "PATIENTID",
        "ENCOUNTER",
        "APPOINTMENTID",
        "CLAIMID",
        "MEMBERID",
        "PATIENTINSURANCEID",
    }
)


@dataclass
class FileStats:
    """One output file: data rows (header excluded), bytes, and whether it was cloned."""

    rows: int
    bytes: int
    cloned: bool
    id_columns: list[str]


@dataclass
class ScaledExport:
    """What ``scale_export`` wrote (also the content of the marker file)."""

    source: str
    copies: int
    files: dict[str, FileStats]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files.values())

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files.values())

    @property
    def patients(self) -> int:
        return self.files["patients.csv"].rows


def sql_string(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def sql_ident(name: str) -> str:
    """A double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def read_header(path: Path) -> list[str]:
    """Column names from the first line of a CSV file."""
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return next(csv.reader(fh))


def csv_source(path: Path, header: list[str]) -> str:
    """``read_csv`` as the pipeline reads a Synthea file: every column VARCHAR, no sniffing."""
    columns = ", ".join(f"{sql_string(h)}: 'VARCHAR'" for h in header)
    return (
        f"read_csv({sql_string(str(path))}, header = true, auto_detect = false, "
        f"columns = {{{columns}}}, delim = ',', quote = '\"', escape = '\"', "
        "strict_mode = true)"
    )


def new_id_sql(column: str) -> str:
    """SQL for the clone-``k`` value of an id column: the original for k = 0, else a UUID.

    ``src._h_<column>`` is ``md5_number(original)``, hashed once per source row;
    clone k XORs it with ``k * MIX`` and formats the 128 bits as a UUID.
    """
    hashed = f"src.{sql_ident('_h_' + column)}"
    return (
        f"case when copies.k = 0 then src.{sql_ident(column)} "
        f"else cast(cast(xor({hashed}, cast(copies.k as uhugeint) * {MIX}::uhugeint) as uuid) "
        "as varchar) end"
    )


def clone_file(
    con: duckdb.DuckDBPyConnection, path: Path, out: Path, copies: int
) -> tuple[int, list[str]]:
    """Write ``copies`` clones of ``path`` to ``out``, copy after copy; (rows, remapped columns).

    The source file is read once into a temporary table (row i at rowid i, with
    its ids hashed); the output streams from ``range(copies * rows)``, row j being
    source row ``j % rows`` of copy ``j // rows``.
    """
    header = read_header(path)
    remapped = [h for h in header if h in ID_COLUMNS]
    hashes = "".join(f", md5_number({sql_ident(h)}) as {sql_ident('_h_' + h)}" for h in remapped)
    con.execute(
        f"create or replace temp table src as select *{hashes} from {csv_source(path, header)}"
    ).fetchall()
    rows = max(con.execute("select count(*) from src").fetchall()[0][0], 1)
    select = ", ".join(
        f"{new_id_sql(h) if h in ID_COLUMNS else 'src.' + sql_ident(h)} as {sql_ident(h)}"
        for h in header
    )
    written = con.execute(
        f"copy (select {select} from (select j // {rows} as k, j % {rows} as i "
        f"from range({int(copies) * rows}) as r(j)) as copies "
        "join src on src.rowid = copies.i) "
        f"to {sql_string(str(out))} "
        "(format csv, header true, delimiter ',', quote '\"', comment '')"
    ).fetchall()[0][0]
    con.execute("drop table src").fetchall()
    return written, remapped


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with insertion order kept (clones come out copy by copy)."""
    config: dict[str, str | int | bool] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }
    if threads:
        config["threads"] = threads
    con = duckdb.connect(":memory:", config=config)
    con.execute("set enable_progress_bar = false").fetchall()
    con.execute("set preserve_insertion_order = true").fetchall()
    return con


def count_rows(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """Data rows of a CSV file (header excluded)."""
    source = csv_source(path, read_header(path))
    return con.execute(f"select count(*) from {source}").fetchall()[0][0]


def scale_export(
    source: Path, out: Path, copies: int, threads: int | None = None, verbose: bool = False
) -> ScaledExport:
    """Write the export ``source`` with every patient cloned ``copies`` times into ``out``.

    The files are written to ``<out>.partial`` and renamed at the end. An existing
    ``out`` is replaced only if it is a scaled export (it has the marker file).
    """
    if copies < 1:
        raise ValueError("copies must be >= 1")
    sources = sorted(source.glob("*.csv"))
    if not sources:
        raise FileNotFoundError(f"no CSV files in {source}")
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise FileExistsError(f"{out} exists and is not a scaled export: not overwriting it")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    started = time.perf_counter()
    con = connect(threads)
    files: dict[str, FileStats] = {}
    try:
        for path in sources:
            target = partial / path.name
            if path.name in REFERENCE_FILES:
                shutil.copyfile(path, target)
                rows, remapped, cloned = count_rows(con, target), [], False
            else:
                rows, remapped = clone_file(con, path, target, copies)
                cloned = True
            files[path.name] = FileStats(rows, target.stat().st_size, cloned, remapped)
            if verbose:
                what = f"x{copies}, new ids in {', '.join(remapped)}" if cloned else "copied"
                print(f"  {path.name:<26} {rows:>12,} rows  {what}", flush=True)
    finally:
        con.close()
    result = ScaledExport(str(source.resolve()), copies, files, time.perf_counter() - started)
    (partial / MARKER).write_text(
        json.dumps({**asdict(result), "rows": result.rows, "bytes": result.bytes}, indent=2),
        encoding="utf-8",
    )
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    return result


def load_marker(out: Path) -> ScaledExport | None:
    """The description of a complete scaled export in ``out``, or None if incomplete."""
    try:
        data = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = {name: FileStats(**stats) for name, stats in data["files"].items()}
    if not all(
        (out / name).is_file() and (out / name).stat().st_size == f.bytes
        for name, f in files.items()
    ):
        return None
    return ScaledExport(data["source"], data["copies"], files, data["seconds"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, required=True, help="clones of every patient")
    parser.add_argument("--out", type=Path, required=True, help="folder of the scaled export")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="Synthea export")
    parser.add_argument("--threads", type=int, help="DuckDB threads (default: all cores)")
    args = parser.parse_args(argv)
    print(f"Scaling {args.source} x{args.copies} -> {args.out}")
    result = scale_export(args.source, args.out, args.copies, args.threads, verbose=True)
    print(
        f"{result.patients:,} patients, {result.rows:,} rows, {result.bytes / 1e6:,.1f} MB "
        f"in {result.seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
