"""What run_benchmark.py measures, each in its own process (so its peak RSS is its own).

    python benchmarks/bench_child.py pipeline EXPORT_DIR WAREHOUSE RESULT_JSON
    python benchmarks/bench_child.py read-once EXPORT_DIR RESULT_JSON --threads T

Writes its figures (or the error) to RESULT_JSON; the exit status is 1 on error.
Only the measured work is timed, not the interpreter start or the imports.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale_synthea import csv_source, read_header, sql_ident


def run_pipeline(export: Path, warehouse: Path) -> dict[str, Any]:
    """``run_site("synthea", export, warehouse)``, timed, with the time of each progress step.

    A step lasts from its progress message to the next one (the last to the end of
    ``run_site``); repeated messages add up.
    """
    from omop_etl.pipeline import run_site
    from omop_etl.warehouse import parse_target

    marks: list[tuple[str, float]] = []
    started = time.perf_counter()
    summary = run_site(
        "synthea",
        export,
        parse_target(str(warehouse)),
        demo_key=True,  # synthetic data; a secret from the environment wins
        progress=lambda message: marks.append((message, time.perf_counter())),
    )
    ended = time.perf_counter()
    steps: dict[str, float] = {"start": marks[0][1] - started if marks else ended - started}
    for (message, t0), (_, t1) in itertools.pairwise([*marks, ("end", ended)]):
        steps[message] = steps.get(message, 0.0) + t1 - t0
    return {
        "seconds": ended - started,
        "rows": summary.rows,
        "rows_read": summary.rows_read,
        "checks": summary.checks,
        "contracts": summary.contracts,
        "rejects": summary.rejects_by_rule,
        "steps": steps,
    }


def read_once(export: Path, threads: int, memory_limit: str) -> dict[str, Any]:
    """Every CSV of the export read once, every column parsed, one query per file.

    The reader is the pipeline's (every column VARCHAR, no sniffing, strict
    quoting); ``max`` of every column makes DuckDB materialize every field.
    """
    import duckdb

    con = duckdb.connect(
        ":memory:",
        config={
            "threads": threads,
            "memory_limit": memory_limit,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        },
    )
    con.execute("set enable_progress_bar = false").fetchall()
    files: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    for path in sorted(export.glob("*.csv")):
        header = read_header(path)
        maxes = ", ".join(f"max({sql_ident(h)})" for h in header)
        t0 = time.perf_counter()
        rows = con.execute(f"select count(*), {maxes} from {csv_source(path, header)}").fetchall()[
            0
        ][0]
        files[path.name] = {"rows": rows, "seconds": time.perf_counter() - t0}
    seconds = time.perf_counter() - started
    con.close()
    return {"seconds": seconds, "rows": sum(f["rows"] for f in files.values()), "files": files}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("pipeline")
    p.add_argument("export", type=Path)
    p.add_argument("warehouse", type=Path)
    p.add_argument("result", type=Path)
    r = sub.add_parser("read-once")
    r.add_argument("export", type=Path)
    r.add_argument("result", type=Path)
    r.add_argument("--threads", type=int, required=True)
    r.add_argument("--memory-limit", default="2GB")
    args = parser.parse_args(argv)
    try:
        if args.what == "pipeline":
            result = run_pipeline(args.export, args.warehouse)
        else:
            result = read_once(args.export, args.threads, args.memory_limit)
    except Exception as exc:
        traceback.print_exc()
        args.result.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    args.result.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
