"""Check that scale_synthea.py writes a consistent N-fold export, and that the CDM scales with it.

    python benchmarks/check_scaling.py [--copies 3] [--keep]

Writes the sample scaled x1 and xN under benchmarks/work/, then checks the files
(row counts, ids, foreign keys) and runs the pipeline on both in fresh warehouses:
every clinical CDM table must have exactly N times the rows of x1, reference
tables (care sites, providers, deduplicated locations, metadata) the same rows.
Prints one line per check; the exit status is 1 if any check fails.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale_synthea import (
    DEFAULT_SOURCE,
    ID_COLUMNS,
    MARKER,
    REFERENCE_FILES,
    FileStats,
    csv_source,
    load_marker,
    read_header,
    scale_export,
    sql_ident,
)

WORK = Path(__file__).resolve().parent / "work"
UUID_RE = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# CDM tables built from reference data or per run: the same rows whatever the number of clones.
REFERENCE_TABLES = frozenset({"location", "care_site", "provider", "metadata", "cdm_source"})
# (file, column, file, column): every value of the first column exists in the second.
FOREIGN_KEYS = [
    ("encounters", "PATIENT", "patients", "Id"),
    ("claims_transactions", "APPOINTMENTID", "encounters", "Id"),
    ("claims_transactions", "CLAIMID", "claims", "Id"),
    ("claims_transactions", "PATIENTID", "patients", "Id"),
    ("claims", "APPOINTMENTID", "encounters", "Id"),
    ("claims", "PATIENTID", "patients", "Id"),
    ("payer_transitions", "PATIENT", "patients", "Id"),
] + [
    (name, col, "patients" if col == "PATIENT" else "encounters", "Id")
    for name in (
        "allergies",
        "careplans",
        "conditions",
        "devices",
        "imaging_studies",
        "immunizations",
        "medications",
        "observations",
        "procedures",
        "supplies",
    )
    for col in ("PATIENT", "ENCOUNTER")
]


class Checks:
    """Collects PASS/FAIL lines."""

    def __init__(self) -> None:
        self.failed = 0
        self.total = 0

    def check(self, ok: bool, what: str, detail: str = "") -> None:
        self.total += 1
        self.failed += not ok
        print(f"  {'PASS' if ok else 'FAIL'}  {what}" + (f"  ({detail})" if detail else ""))


def one(con: duckdb.DuckDBPyConnection, sql: str) -> object:
    """The single value of a query."""
    return con.execute(sql).fetchall()[0][0]


def register(con: duckdb.DuckDBPyConnection, schema: str, folder: Path) -> list[str]:
    """One view per CSV file of ``folder`` in ``schema``; returns the file stems."""
    con.execute(f"create schema {schema}").fetchall()
    names = []
    for path in sorted(folder.glob("*.csv")):
        src = csv_source(path, read_header(path))
        con.execute(f"create view {schema}.{path.stem} as select * from {src}").fetchall()
        names.append(path.stem)
    return names


def check_files(checks: Checks, source: Path, x1: Path, xn: Path, copies: int) -> None:
    """Row counts, byte identity, distinct ids, foreign keys of the scaled export."""
    con = duckdb.connect()
    con.execute("set enable_progress_bar = false").fetchall()
    names = register(con, "src", source)
    register(con, "xn", xn)

    identical = [
        p.name for p in sorted(source.glob("*.csv")) if p.read_bytes() == (x1 / p.name).read_bytes()
    ]
    checks.check(
        len(identical) == len(names),
        "x1 export is byte-identical to the source (copy 0 keeps ids, quoting, empty fields)",
        f"{len(identical)}/{len(names)} files identical",
    )
    same_header = all(
        read_header(source / f"{n}.csv") == read_header(xn / f"{n}.csv") for n in names
    )
    checks.check(same_header, f"x{copies} headers and column order equal the source")

    linked = ref = 0
    bad_counts = []
    for n in names:
        rows_src = one(con, f"select count(*) from src.{n}")
        rows_xn = one(con, f"select count(*) from xn.{n}")
        reference = f"{n}.csv" in REFERENCE_FILES
        expected = rows_src if reference else copies * rows_src
        if reference:
            ref += rows_xn
            if (source / f"{n}.csv").read_bytes() != (xn / f"{n}.csv").read_bytes():
                bad_counts.append(f"{n} differs from source")
        else:
            linked += rows_xn
        if rows_xn != expected:
            bad_counts.append(f"{n}: {rows_xn} rows, expected {expected}")
    src_linked = sum(
        one(con, f"select count(*) from src.{n}")
        for n in names
        if f"{n}.csv" not in REFERENCE_FILES
    )
    checks.check(
        not bad_counts and linked == copies * src_linked,
        f"patient-linked rows = {copies} x source, reference files copied unchanged",
        f"{linked:,} = {copies} x {src_linked:,}; reference rows {ref:,}"
        + (f"; {'; '.join(bad_counts)}" if bad_counts else ""),
    )

    patients = one(con, "select count(distinct Id) from xn.patients")
    src_patients = one(con, "select count(distinct Id) from src.patients")
    checks.check(
        patients == copies * src_patients,
        f"distinct patient ids = {copies} x {src_patients}",
        f"{patients:,}",
    )
    all_patient_ids = one(
        con,
        "select count(distinct p) from ("
        + " union all ".join(
            f"select {sql_ident(c)} as p from xn.{n}"
            for n in names
            for c in read_header(xn / f"{n}.csv")
            if c in ("PATIENT", "PATIENTID")
        )
        + ")",
    )
    checks.check(
        all_patient_ids == patients,
        "PATIENT/PATIENTID values over all files = the patients' ids",
        f"{all_patient_ids:,}",
    )

    for child, col, parent, key in FOREIGN_KEYS:
        orphans = one(
            con,
            f"select count(*) from xn.{child} c where c.{sql_ident(col)} is not null "
            f"and c.{sql_ident(col)} not in (select {sql_ident(key)} from xn.{parent})",
        )
        checks.check(
            orphans == 0, f"every {child}.{col} exists in {parent}.{key}", f"{orphans} orphans"
        )

    same = "select count(*) from {s}.claims_transactions where PATIENTINSURANCEID = PATIENTID"
    eq_src, eq_xn = one(con, same.format(s="src")), one(con, same.format(s="xn"))
    checks.check(
        eq_xn == copies * eq_src,
        "claims_transactions.PATIENTINSURANCEID = PATIENTID kept in every copy",
        f"{eq_xn:,} = {copies} x {eq_src:,}",
    )

    ref_ids = (
        "select Id from src.organizations union select Id from src.providers "
        "union select Id from src.payers"
    )
    collisions, missed = [], []
    for n in names:
        if f"{n}.csv" in REFERENCE_FILES:
            continue
        for c in read_header(source / f"{n}.csv"):
            q = sql_ident(c)
            if c in ID_COLUMNS:
                d_src = one(con, f"select count(distinct {q}) from src.{n}")
                d_xn = one(con, f"select count(distinct {q}) from xn.{n}")
                if d_xn != copies * d_src:
                    collisions.append(f"{n}.{c}: {d_xn} distinct, expected {copies * d_src}")
            else:
                linked_uuids = one(
                    con,
                    f"select count(*) from src.{n} where regexp_full_match({q}, '{UUID_RE}') "
                    f"and {q} not in ({ref_ids})",
                )
                if linked_uuids:
                    missed.append(f"{n}.{c}")
    checks.check(
        not collisions,
        f"every remapped id column has {copies} x its distinct values (no collisions)",
        "; ".join(collisions),
    )
    checks.check(
        not missed,
        "no column of a cloned file keeps a UUID that is not an organization/provider/payer id",
        ", ".join(missed),
    )
    con.close()


def load_vocabulary(warehouse: Path) -> None:
    """``omop-etl vocab load`` (the bundled demo vocabulary) into a fresh warehouse."""
    warehouse.unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, "-m", "omop_etl.cli", "vocab", "load", "--warehouse", str(warehouse)],
        check=True,
        capture_output=True,
    )


def check_pipeline(checks: Checks, x1: Path, xn: Path, copies: int) -> None:
    """Run the pipeline on x1 and xN; compare rows per CDM table."""
    from omop_etl.pipeline import run_site
    from omop_etl.warehouse import parse_target

    summaries = {}
    for label, folder in (("x1", x1), (f"x{copies}", xn)):
        warehouse = WORK / f"check_{label}.duckdb"
        load_vocabulary(warehouse)
        summaries[label] = run_site("synthea", folder, parse_target(str(warehouse)))
        warehouse.unlink(missing_ok=True)
        Path(str(warehouse) + ".wal").unlink(missing_ok=True)
    a, b = summaries["x1"], summaries[f"x{copies}"]
    print(f"\n  {'CDM table':<22}{'x1':>10}{f'x{copies}':>10}  expected")
    wrong = []
    for table, n1 in a.rows.items():
        nn = b.rows.get(table, 0)
        expected = n1 if table in REFERENCE_TABLES else copies * n1
        if n1 or nn:
            mark = "" if nn == expected else "   <-- WRONG"
            kind = "same" if table in REFERENCE_TABLES else f"{copies} x"
            print(f"  {table:<22}{n1:>10,}{nn:>10,}  {kind}{mark}")
        if nn != expected:
            wrong.append(table)
    print()
    checks.check(
        not wrong,
        f"every clinical CDM table has {copies} x the x1 rows, reference tables the same",
        ", ".join(wrong),
    )
    checks.check(
        b.rows_read == sum(f.rows for f in _marker_files(xn)),
        "pipeline read every row of the scaled export",
        f"{b.rows_read:,} rows read",
    )
    rejects_ok = all(
        b.rejects_by_rule.get(r, 0) == copies * n for r, n in a.rejects_by_rule.items()
    )
    checks.check(
        rejects_ok and set(b.rejects_by_rule) <= set(a.rejects_by_rule),
        f"rejects scale by {copies} too",
        f"x1 {dict(a.rejects_by_rule)}, x{copies} {dict(b.rejects_by_rule)}",
    )


def _marker_files(folder: Path) -> list[FileStats]:
    marker = load_marker(folder)
    assert marker is not None, f"{folder / MARKER} missing"
    return list(marker.files.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=3, help="clones to check (default 3)")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="Synthea export")
    parser.add_argument("--keep", action="store_true", help="keep the generated exports")
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    x1, xn = WORK / "check_x1", WORK / f"check_x{args.copies}"
    checks = Checks()
    try:
        scale_export(args.source, x1, 1)
        scale_export(args.source, xn, args.copies)
        print(f"Scaled export x{args.copies} of {args.source}: files")
        check_files(checks, args.source, x1, xn, args.copies)
        print(f"Pipeline on x1 and x{args.copies}")
        check_pipeline(checks, x1, xn, args.copies)
    finally:
        if not args.keep:
            shutil.rmtree(x1, ignore_errors=True)
            shutil.rmtree(xn, ignore_errors=True)
    print(f"\n{checks.total - checks.failed}/{checks.total} checks passed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
