"""Measure the pipeline on scaled Synthea exports: time, throughput, peak RSS, read-once limit.

    python benchmarks/run_benchmark.py [--copies 1 100 1000 [10000]] [--threads T]

For each N: the sample export cloned N times (cached in benchmarks/work/synthea_xN,
complete when it has its marker file), its page cache warmed, then two child
processes, each timed around its work only and with its own peak RSS (wait4):

* read-once: every CSV of the export read once by DuckDB with the pipeline's reader
  (all columns VARCHAR, strict quoting), every column parsed (count + max of each
  column), one query per file, same threads and memory limit as the pipeline;
* pipeline: ``run_site("synthea", export, warehouse)`` into a fresh warehouse file
  whose vocabulary (``omop-etl vocab load``) was loaded before timing.

Prints the figures per N, the targets next to the measurements (never fails on
them) and a final plain-text table. An N runs only if ``df`` shows room for it
(about 2.5x its export size, less what a cached export already uses).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from omop_etl import settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale_synthea import DEFAULT_SOURCE, REFERENCE_FILES, load_marker, scale_export

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
CHILD = HERE / "bench_child.py"
MIB = 1 << 20
SPACE_FACTOR = 1.6  # export + warehouse (~0.1x) + DuckDB temp spill + headroom, in export sizes


@dataclass
class Child:
    """One child process: its result JSON, wall time, peak RSS and exit status."""

    result: dict[str, Any]
    wall: float
    peak_rss_mib: float
    status: int
    log: Path

    @property
    def error(self) -> str | None:
        if self.status == 0 and "seconds" in self.result:
            return None
        tail = self.log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return self.result.get("error") or f"exit status {self.status}: {tail[0]}"


@dataclass
class Measurement:
    """Everything measured for one number of copies."""

    copies: int
    patients: int = 0
    rows: int = 0
    bytes: int = 0
    generate_seconds: float | None = None  # None: the export came from the cache
    vocab_seconds: float = 0.0
    warehouse_bytes: int = 0
    read_once: Child | None = None
    pipeline: Child | None = None
    skipped: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def pipeline_seconds(self) -> float | None:
        p = self.pipeline
        return p.result["seconds"] if p and not p.error else None

    @property
    def read_once_seconds(self) -> float | None:
        r = self.read_once
        return r.result["seconds"] if r and not r.error else None

    @property
    def ratio(self) -> float | None:
        p, r = self.pipeline_seconds, self.read_once_seconds
        return p / r if p is not None and r else None

    @property
    def cdm_rows(self) -> int | None:
        if self.pipeline is None or self.pipeline_seconds is None:
            return None
        return sum(self.pipeline.result["rows"].values())


@dataclass(frozen=True)
class Target:
    """A figure the issue asks for at a given N."""

    copies: int
    what: str
    goal: str
    measured: Callable[[Measurement], float | None]
    unit: str
    limit: float


TARGETS = (
    Target(1000, "pipeline wall time", "<= 25 s", lambda m: m.pipeline_seconds, "s", 25.0),
    Target(1000, "pipeline / read-once", "<= 1.5x", lambda m: m.ratio, "x", 1.5),
    Target(
        10000,
        "pipeline peak RSS",
        "<= 3 GiB (3072 MiB)",
        lambda m: m.pipeline.peak_rss_mib if m.pipeline and m.pipeline_seconds else None,
        "MiB",
        3072.0,
    ),
)


def run_child(args: list[str], log: Path, env: dict[str, str] | None = None) -> Child:
    """Run bench_child.py with ``args`` (its last one is the result file); wait4 for RSS."""
    result_file = Path(args[-1])
    result_file.unlink(missing_ok=True)
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )
        _, wait_status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(wait_status)
    try:
        result = json.loads(result_file.read_text())
    except (OSError, ValueError):
        result = {}
    result_file.unlink(missing_ok=True)
    return Child(result, wall, usage.ru_maxrss / 1024, proc.returncode, log)


def estimated_bytes(source: Path, copies: int) -> int:
    """Size of the export scaled ``copies`` times (ids keep their length)."""
    return sum(
        p.stat().st_size * (1 if p.name in REFERENCE_FILES else copies)
        for p in source.glob("*.csv")
    )


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def warm_page_cache(folder: Path) -> None:
    """Read every CSV once in big blocks, so both timed readers start from the same cache."""
    for path in folder.glob("*.csv"):
        with path.open("rb", buffering=0) as fh:
            while fh.read(16 * MIB):
                pass


def remove_warehouse(path: Path) -> None:
    path.unlink(missing_ok=True)
    Path(str(path) + ".wal").unlink(missing_ok=True)


def measure(copies: int, source: Path, threads: int, keep_warehouse: bool) -> Measurement:
    """Export (cached), read-once child, vocabulary, pipeline child for one N."""
    m = Measurement(copies)
    export = WORK / f"synthea_x{copies}"
    cached = load_marker(export)
    if cached and (cached.copies != copies or cached.source != str(source.resolve())):
        cached = None
    size = cached.bytes if cached else estimated_bytes(source, copies)
    need = SPACE_FACTOR * size - (cached.bytes if cached else 0)
    free = shutil.disk_usage(WORK).free
    if free < need:
        m.skipped = (
            f"needs ~{need / 2**30:.1f} GiB free ({SPACE_FACTOR}x the {size / 2**30:.1f} GiB "
            f"export{', cached' if cached else ''}), df shows {free / 2**30:.1f} GiB"
        )
        return m
    if cached is None:
        print(f"  generating {export} ...", flush=True)
        cached = scale_export(source, export, copies)
        m.generate_seconds = cached.seconds
    m.patients, m.rows, m.bytes = cached.patients, cached.rows, cached.bytes
    if m.bytes < physical_memory() // 2:
        warm_page_cache(export)
    else:
        print("  export larger than half the RAM: both readers read it from disk")

    memory_limit = settings.duckdb_memory_limit()
    m.read_once = run_child(
        [
            "read-once",
            str(export),
            "--threads",
            str(threads),
            "--memory-limit",
            memory_limit,
            str(WORK / f"read_once_x{copies}.json"),
        ],
        WORK / f"read_once_x{copies}.log",
    )
    if m.read_once.error:
        m.errors.append(f"read-once: {m.read_once.error}")

    warehouse = WORK / f"bench_x{copies}.duckdb"
    remove_warehouse(warehouse)
    started = time.perf_counter()
    vocab = subprocess.run(
        [sys.executable, "-m", "omop_etl.cli", "vocab", "load", "--warehouse", str(warehouse)],
        capture_output=True,
        text=True,
    )
    m.vocab_seconds = time.perf_counter() - started
    if vocab.returncode:
        m.errors.append(f"vocab load: {(vocab.stderr or vocab.stdout).strip()}")
        remove_warehouse(warehouse)
        return m

    env = {**os.environ, "OMOP_ETL_THREADS": str(threads)}
    m.pipeline = run_child(
        ["pipeline", str(export), str(warehouse), str(WORK / f"pipeline_x{copies}.json")],
        WORK / f"pipeline_x{copies}.log",
        env,
    )
    if m.pipeline.error:
        m.errors.append(f"pipeline: {m.pipeline.error}")
    elif m.pipeline.result["rows_read"] != m.rows:
        m.errors.append(
            f"pipeline read {m.pipeline.result['rows_read']:,} rows, the export has {m.rows:,}"
        )
    m.warehouse_bytes = warehouse.stat().st_size if warehouse.exists() else 0
    if not keep_warehouse:
        remove_warehouse(warehouse)
    return m


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def phase(step: str) -> str:
    """The pipeline phase of a progress message of run_site."""
    if step == "start":
        return "open"
    if step.startswith("extract"):
        return "extract (+ referential checks)"
    if step in ("publish", "indexes"):
        return "publish (+ reconciliation, counts)"
    if step.startswith("contracts"):
        return "contracts (Great Expectations)"
    if step.startswith("checks"):
        return "CDM checks (DQD catalogue)"
    return "transforms"


def print_details(m: Measurement) -> None:
    """Figures of one N, as soon as they are measured."""
    if m.skipped:
        print(f"  skipped: {m.skipped}")
        return
    gen = "cached" if m.generate_seconds is None else f"generated in {m.generate_seconds:.1f} s"
    print(f"  export: {m.patients:,} patients, {m.rows:,} rows, {m.bytes / MIB:,.1f} MiB ({gen})")
    if m.read_once and not m.read_once.error:
        r = m.read_once
        print(
            f"  read-once: {r.result['seconds']:.2f} s ({m.rows / r.result['seconds']:,.0f} "
            f"rows/s, {m.bytes / MIB / r.result['seconds']:,.0f} MiB/s), "
            f"peak RSS {r.peak_rss_mib:,.0f} MiB"
        )
    print(f"  vocabulary load (untimed): {m.vocab_seconds:.1f} s")
    if m.pipeline_seconds is not None:
        p = m.pipeline
        print(
            f"  pipeline: {m.pipeline_seconds:.2f} s (child process {p.wall:.1f} s), "
            f"{m.cdm_rows:,} CDM rows, {m.rows / m.pipeline_seconds:,.0f} input rows/s, "
            f"peak RSS {p.peak_rss_mib:,.0f} MiB, warehouse {m.warehouse_bytes / MIB:,.0f} MiB"
        )
        phases: dict[str, float] = {}
        for step, seconds in p.result["steps"].items():
            phases[phase(step)] = phases.get(phase(step), 0.0) + seconds
        print("    " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()))
        checks = p.result.get("checks") or {}
        if checks:
            by_status = ", ".join(f"{n:,} {status}" for status, n in sorted(checks.items()))
            passed, run = p.result.get("contracts") or (0, 0)
            print(
                f"    CDM checks run: {sum(checks.values()):,} ({by_status}); "
                f"contract expectations passed: {passed} of {run}"
            )
        slow = sorted(
            ((s, k) for k, s in p.result["steps"].items() if phase(k) == "transforms"),
            reverse=True,
        )[:4]
        print("    slowest transform steps: " + ", ".join(f"{k} {s:.2f} s" for s, k in slow))
        if p.result["rejects"]:
            print(f"    rejects: {p.result['rejects']}")
    for error in m.errors:
        print(f"  ERROR {error}")
    sys.stdout.flush()


def table(results: list[Measurement]) -> str:
    """The final plain-text table."""
    head = (
        "copies",
        "patients",
        "input rows",
        "input MiB",
        "pipeline s",
        "CDM rows",
        "rows/s",
        "peak RSS MiB",
        "read-once s",
        "pipe/read",
    )
    rows: list[tuple[str, ...]] = []
    notes: dict[int, str] = {}  # row index -> why the row has no figures
    for m in results:
        if m.skipped or (m.pipeline_seconds is None and m.read_once_seconds is None):
            notes[len(rows)] = "skipped (disk space)" if m.skipped else "failed (see errors)"
            rows.append((f"x{m.copies}",))
            continue
        p = m.pipeline_seconds
        rows.append(
            (
                f"x{m.copies}",
                f"{m.patients:,}",
                f"{m.rows:,}",
                f"{m.bytes / MIB:,.1f}",
                fmt(p, ".2f") if p is not None else "FAILED",
                fmt(m.cdm_rows, ",d"),
                fmt(m.rows / p if p else None, ",.0f"),
                fmt(m.pipeline.peak_rss_mib if m.pipeline and p else None, ",.0f"),
                fmt(m.read_once_seconds, ".2f"),
                fmt(m.ratio, ".2f"),
            )
        )
    widths = [max(len(r[i]) for r in (head, *rows) if len(r) > i) for i in range(len(head))]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for i, r in enumerate(rows):
        if i in notes:
            lines.append(f"{r[0].rjust(widths[0])}  {notes[i]}")
        else:
            lines.append("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(lines)


def targets(results: list[Measurement]) -> str:
    """Target vs measured, for every target of the issue."""
    by_copies = {m.copies: m for m in results}
    lines = []
    for t in TARGETS:
        m = by_copies.get(t.copies)
        value = t.measured(m) if m else None
        if m is None:
            verdict, shown = "not run (not requested)", "-"
        elif value is None:
            verdict, shown = ("skipped: " + m.skipped) if m.skipped else "no measurement", "-"
        else:
            verdict = "met" if value <= t.limit else "NOT met"
            shown = f"{value:,.2f} {t.unit}" if t.unit != "MiB" else f"{value:,.0f} MiB"
        lines.append(
            f"  x{t.copies:<6} {t.what:<22} target {t.goal:<20} measured {shown:<12} {verdict}"
        )
    return "\n".join(lines)


def environment(threads: int) -> str:
    """One line on what the figures were measured on."""
    mem = physical_memory() / 2**30
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    return (
        f"{platform.machine()} {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python "
        f"{platform.python_version()}, DuckDB {duckdb.__version__}, threads {threads}, "
        f"memory_limit {settings.duckdb_memory_limit()}, "
        f"commit {commit or '?'} (+ working tree)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--copies",
        type=int,
        nargs="+",
        default=[1, 100, 1000],
        help="N values (default 1 100 1000)",
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="DuckDB threads (default: cores)"
    )
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="Synthea export")
    parser.add_argument(
        "--keep-warehouse", action="store_true", help="keep benchmarks/work/bench_xN.duckdb"
    )
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"Benchmark: {environment(args.threads)}")
    results = []
    for copies in args.copies:
        print(f"\nx{copies}:", flush=True)
        m = measure(copies, args.source, args.threads, args.keep_warehouse)
        print_details(m)
        results.append(m)
    print("\nTargets (printed, not enforced):")
    print(targets(results))
    print("\nResults (pipeline s = run_site wall time in a child process; rows/s = input rows/s;")
    print("read-once s = every export byte read once by DuckDB, all columns parsed):\n")
    print(table(results))
    for m in results:
        for error in m.errors:
            print(f"x{m.copies} error: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
