"""Two versions of the pipeline on the same export, in turns: wall, CPU seconds, peak RSS.

    python benchmarks/side_by_side.py --base DIR [--copies 1000] [--rounds 3]
    python benchmarks/side_by_side.py --base DIR --five-sites [--patients 10000] [--rounds 2]

DIR is another checkout of the project (e.g. ``git worktree add /tmp/base <rev>``); this
checkout is the head. The machine is shared and noisy, so the two run alternately,
each round in fresh child processes (the other version's code on PYTHONPATH, the same
virtual environment), and the figures are compared as medians and ratios
(head / base). Synthea: the export scaled ``--copies`` times (run_benchmark.py's
cache), a fresh warehouse with the demo vocabulary per run (untimed), then
``bench_child.py pipeline`` of that version, timed around run_site. Five sites:
that version's ``five_sites.py``, whole process timed (its own figures printed too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEAD = HERE.parent
sys.path.insert(0, str(HERE))

from scale_synthea import DEFAULT_SOURCE, load_marker, scale_export  # noqa: E402

WORK = HERE / "work"


def _child(tree: Path, args: list[str], log: Path) -> dict:
    """Run ``args`` with ``tree`` first on PYTHONPATH; wall, CPU and peak RSS by wait4."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMOP_ETL_MAPPINGS": str(tree / "mappings")}
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(args, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(args)} failed in {tree}; see {log}")
    return {
        "wall": time.perf_counter() - started,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mib": usage.ru_maxrss / 1024,
    }


_VOCAB = (
    "import sys; from omop_etl.vocabulary import load_into_warehouse; "
    "from omop_etl.warehouse import parse_target; "
    "load_into_warehouse(parse_target(sys.argv[1]), None)"
)


def synthea_round(tree: Path, export: Path, name: str) -> dict:
    warehouse = WORK / f"side_{name}.duckdb"
    for path in (warehouse, Path(f"{warehouse}.wal")):
        path.unlink(missing_ok=True)
    log = WORK / f"side_{name}.log"
    _child(tree, [sys.executable, "-c", _VOCAB, str(warehouse)], log)
    result = WORK / f"side_{name}.json"
    child = tree / "benchmarks" / "bench_child.py"
    measured = _child(
        tree,
        [sys.executable, str(child), "pipeline", str(export), str(warehouse), str(result)],
        log,
    )
    inside = json.loads(result.read_text())
    measured["pipeline"] = inside["seconds"]
    measured["cdm_rows"] = sum(inside["rows"].values())
    return measured


def five_sites_round(tree: Path, patients: int, name: str) -> dict:
    log = WORK / f"side_five_{name}.log"
    measured = _child(
        tree,
        [sys.executable, str(tree / "benchmarks" / "five_sites.py"), "--patients", str(patients)],
        log,
    )
    measured["output"] = log.read_text().strip().splitlines()[-12:]
    return measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout")
    parser.add_argument("--copies", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--five-sites", action="store_true")
    parser.add_argument("--patients", type=int, default=10_000)
    args = parser.parse_args(argv)
    WORK.mkdir(exist_ok=True)
    trees = {"base": args.base.resolve(), "head": HEAD}
    runs: dict[str, list[dict]] = {"base": [], "head": []}
    if args.five_sites:
        what = f"five sites, {args.patients:,} patients each (whole process)"
        for name, tree in trees.items():  # each version writes its own export cache first
            five_sites_round(tree, args.patients, name)
    else:
        export = WORK / f"synthea_x{args.copies}"
        if load_marker(export) is None:
            print(f"generating {export} ...", flush=True)
            scale_export(DEFAULT_SOURCE, export, args.copies)
        what = f"Synthea x{args.copies} (run_site)"
    for round_no in range(args.rounds):
        for name, tree in trees.items() if round_no % 2 == 0 else reversed(trees.items()):
            if args.five_sites:
                run = five_sites_round(tree, args.patients, name)
            else:
                run = synthea_round(tree, export, name)
            runs[name].append(run)
            figures = ", ".join(f"{k} {v:.1f}" for k, v in run.items() if isinstance(v, float))
            print(f"round {round_no + 1} {name}: {figures}", flush=True)
    print(f"\n{what}: medians of {args.rounds} rounds, run in turns")
    keys = [k for k, v in runs["head"][0].items() if isinstance(v, float)]
    print(f"{'':8}" + "".join(f"{k:>12}" for k in keys))
    medians = {n: {k: statistics.median(r[k] for r in rs) for k in keys} for n, rs in runs.items()}
    for name in ("base", "head"):
        print(f"{name:8}" + "".join(f"{medians[name][k]:>12.1f}" for k in keys))
    print(
        f"{'ratio':8}" + "".join(f"{medians['head'][k] / medians['base'][k]:>12.2f}" for k in keys)
    )
    if args.five_sites:
        for name in ("base", "head"):
            print(f"\n{name} ({trees[name]}), last round's own figures:")
            print("\n".join(runs[name][-1]["output"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
