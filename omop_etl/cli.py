"""The ``omop-etl`` command line.

    omop-etl vocab load [FOLDER] [--warehouse TARGET]
    omop-etl run --site NAME --input DIR [--warehouse TARGET] [--batch-id ID] [--batch-date D]
                 [--rerun] [--demo-key]
    omop-etl spec check NAME
    omop-etl report unmapped --site NAME --out FILE [--batch-id ID] [--warehouse TARGET]
    omop-etl dashboard [--warehouse TARGET] [--out DIR]
    omop-etl query SQL [--warehouse TARGET]
    omop-etl demo [--warehouse TARGET]
    omop-etl dags sync [--check]

TARGET is a DuckDB file or a postgresql:// URL (default: $OMOP_ETL_WAREHOUSE, else
./warehouse.duckdb).
Every failure is one message on stderr and exit status 2; set OMOP_ETL_DEBUG=1
to see the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.table import Table

from omop_etl import settings
from omop_etl.errors import EtlError
from omop_etl.extract import NOT_IN_SPEC

console = Console()
err_console = Console(stderr=True)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        args.handler(args)
    except (EtlError, ConnectionError) as exc:  # bad input; a warehouse out of reach
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        return 130
    except Exception as exc:  # a bug, not bad input: still one clear line by default
        if os.environ.get("OMOP_ETL_DEBUG"):
            raise
        err_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc}\n"
            "(set OMOP_ETL_DEBUG=1 to see the traceback)",
            highlight=False,
        )
        return 2
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omop-etl", description="Hospital EHR exports -> OHDSI OMOP CDM v5.4."
    )
    sub = parser.add_subparsers(metavar="COMMAND")

    warehouse_help = (
        "DuckDB file or postgresql:// URL "
        f"(default: $OMOP_ETL_WAREHOUSE, else ./{settings.DEFAULT_WAREHOUSE_FILE})"
    )

    vocab = sub.add_parser("vocab", help="vocabulary commands").add_subparsers(metavar="ACTION")
    load = vocab.add_parser("load", help="load an Athena vocabulary download folder")
    load.add_argument(
        "folder", nargs="?", type=Path, help="Athena folder (default: the bundled demo vocabulary)"
    )
    load.add_argument("--warehouse", help=warehouse_help)
    load.set_defaults(handler=cmd_vocab_load)

    run = sub.add_parser("run", help="run one site's export batch end to end")
    run.add_argument("--site", required=True, help="a spec name under mappings/sites/")
    run.add_argument(
        "--input",
        required=True,
        type=Path,
        help="a batch folder, or a folder of dated batch folders (each run once, oldest first)",
    )
    run.add_argument("--warehouse", help=warehouse_help)
    run.add_argument("--batch-id", help="batch id (default: the export folder's name)")
    run.add_argument(
        "--batch-date",
        type=date.fromisoformat,
        help="logical date of the batch, YYYY-MM-DD (default: newest date in the data)",
    )
    run.add_argument(
        "--rerun",
        action="store_true",
        help="process batches that were published before again (changes nothing)",
    )
    run.add_argument(
        "--demo-key",
        action="store_true",
        help="pseudonymize with the public demo key when the site has no secret "
        "(synthetic data only)",
    )
    run.set_defaults(handler=cmd_run)

    spec = sub.add_parser("spec", help="site spec commands").add_subparsers(metavar="ACTION")
    check = spec.add_parser("check", help="validate a site spec")
    check.add_argument("name", help="a spec name under mappings/sites/, or a path to a YAML file")
    check.add_argument(
        "--input",
        type=Path,
        help="also check an export (a batch folder, or a folder of them) against the spec: "
        "files, headers, column names, spec SQL — everything a run checks before reading",
    )
    check.set_defaults(handler=cmd_spec_check)

    report = sub.add_parser("report", help="reports").add_subparsers(metavar="ACTION")
    unmapped = report.add_parser(
        "unmapped", help="a site batch's unmapped source codes as a Usagi import CSV"
    )
    unmapped.add_argument("--site", required=True, help="the site")
    unmapped.add_argument("--batch-id", help="the batch (default: the newest)")
    unmapped.add_argument("--out", required=True, type=Path, help="the CSV file to write")
    unmapped.add_argument("--warehouse", help=warehouse_help)
    unmapped.set_defaults(handler=cmd_report_unmapped)

    dashboard = sub.add_parser(
        "dashboard", help="write the QA dashboard (offline HTML: an index and a page per run)"
    )
    dashboard.add_argument("--warehouse", help=warehouse_help)
    dashboard.add_argument(
        "--out", type=Path, default=Path("out/dashboard"), help="folder (default out/dashboard)"
    )
    dashboard.set_defaults(handler=cmd_dashboard)

    query = sub.add_parser("query", help="run one read-only SQL query on the warehouse")
    query.add_argument("sql", help='the query, e.g. "select count(*) from cdm_synthea.person"')
    query.add_argument("--warehouse", help=warehouse_help)
    query.add_argument("--limit", type=int, default=50, help="rows to show (default 50)")
    query.set_defaults(handler=cmd_query)

    demo = sub.add_parser(
        "demo",
        help="the demo: synthetic exports of five hospitals and the Synthea sample -> warehouse",
    )
    demo.add_argument("--warehouse", help=warehouse_help)
    demo.add_argument(
        "--export", type=Path, default=Path("demo_export"), help="where the demo exports go"
    )
    demo.add_argument("--patients", type=int, default=200, help="patients per hospital (200)")
    demo.add_argument(
        "--dashboard",
        type=Path,
        default=Path("out/dashboard"),
        help="where the QA dashboard goes (default out/dashboard)",
    )
    demo.set_defaults(handler=cmd_demo)
    demo_actions = demo.add_subparsers(metavar="ACTION")
    generate = demo_actions.add_parser(
        "generate", help="only write the synthetic five-hospital export (with its manifest)"
    )
    generate.add_argument("--patients", type=int, default=200, help="patients per hospital")
    generate.add_argument(
        "--seed", type=int, default=42, help="random seed (same seed, same bytes)"
    )
    generate.add_argument("--out", type=Path, required=True, help="output folder")
    generate.set_defaults(handler=cmd_demo_generate)
    _add_dags_parser(sub)
    _add_warehouse_parser(sub, warehouse_help)
    return parser


def _add_warehouse_parser(sub: argparse._SubParsersAction, warehouse_help: str) -> None:
    actions = sub.add_parser("warehouse", help="shared warehouse commands").add_subparsers(
        metavar="ACTION"
    )
    roles = actions.add_parser(
        "roles",
        help="create the PostgreSQL roles and schemas: a loader per site, the analysts "
        "(run as the warehouse's owner; idempotent)",
    )
    roles.add_argument(
        "--sites", nargs="*", help="sites (default: every spec under mappings/sites/)"
    )
    roles.add_argument(
        "--login",
        help="also make this login user a member of every site's loader role and the "
        "vocabulary owner (its password: $OMOP_ETL_LOGIN_PASSWORD)",
    )
    roles.add_argument("--warehouse", help=warehouse_help)
    roles.set_defaults(handler=cmd_warehouse_roles)
    views = actions.add_parser(
        "views", help="recreate the consortium views (schema cdm) over the published sites"
    )
    views.add_argument("--warehouse", help=warehouse_help)
    views.set_defaults(handler=cmd_warehouse_views)


def cmd_warehouse_roles(args: argparse.Namespace) -> None:
    from omop_etl import pgwarehouse
    from omop_etl.spec import available_sites
    from omop_etl.warehouse import parse_target

    target = parse_target(args.warehouse)
    if target.kind != "postgresql":
        raise EtlError("roles are for a PostgreSQL warehouse: give --warehouse postgresql://...")
    sites = args.sites if args.sites is not None else available_sites()
    password = os.environ.get("OMOP_ETL_LOGIN_PASSWORD")
    for line in pgwarehouse.create_roles(target, sites, args.login, password):
        console.print(line)
    console.print(
        "The roles cannot log in: grant them to users, e.g. "
        f"[cyan]create user alice login password '...' in role {pgwarehouse.ANALYST}[/]"
    )


def cmd_warehouse_views(args: argparse.Namespace) -> None:
    from omop_etl.pipeline import refresh_views
    from omop_etl.warehouse import parse_target

    sites = refresh_views(parse_target(args.warehouse))
    console.print(f"Consortium views in schema cdm over {len(sites)} site(s): {', '.join(sites)}")


def _add_dags_parser(sub: argparse._SubParsersAction) -> None:
    dags = sub.add_parser("dags", help="Airflow DAG commands").add_subparsers(metavar="ACTION")
    sync = dags.add_parser(
        "sync",
        help="write the registry of site DAGs (omop_etl/dag_sites.py) from the site specs",
    )
    sync.add_argument(
        "--check",
        action="store_true",
        help="only check that the registry is up to date (exit status 2 when it is not)",
    )
    sync.set_defaults(handler=cmd_dags_sync)


def cmd_dags_sync(args: argparse.Namespace) -> None:
    """A site becomes a DAG by its spec: the DAG files read the registry, never the specs."""
    from omop_etl.orchestration import (
        REGISTRY_PATH,
        registry_entries,
        registry_is_current,
        write_registry,
    )

    entries = registry_entries()
    if args.check:
        if not registry_is_current(entries):
            raise EtlError(
                f"{REGISTRY_PATH} is out of date with the site specs: run omop-etl dags sync"
            )
        console.print(f"{REGISTRY_PATH} is up to date ({len(entries)} site DAGs)")
        return
    changed = write_registry(entries)
    console.print(
        f"{'Wrote' if changed else 'Up to date:'} {REGISTRY_PATH} ({len(entries)} site DAGs)"
    )


@contextmanager
def _status(title: str) -> Iterator[callable]:
    with console.status(title) as status:

        def update(message: str) -> None:
            status.update(f"{title}: {message}")

        yield update


def cmd_vocab_load(args: argparse.Namespace) -> None:
    from omop_etl.warehouse import parse_target

    target = parse_target(args.warehouse)
    counts = _load_vocabulary(target, args.folder)
    table = Table(title=f"Vocabulary loaded into {target} (schema {settings.VOCAB_SCHEMA})")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in counts.items():
        table.add_row(name, f"{n:,}")
    console.print(table)


def _load_vocabulary(target, folder: Path | None) -> dict[str, int]:
    from omop_etl.vocabulary import load_into_warehouse

    with _status(f"Loading vocabulary from {folder or 'the bundled demo subset'}") as update:
        return load_into_warehouse(target, folder, progress=update)


def cmd_run(args: argparse.Namespace) -> None:
    from omop_etl.pipeline import batch_folders, run_export, run_site
    from omop_etl.spec import load_spec
    from omop_etl.warehouse import parse_target

    target = parse_target(args.warehouse)
    if args.batch_id or batch_folders(args.input, load_spec(args.site)) == [args.input]:
        with _status(f"Site {args.site}") as update:
            summary = run_site(
                args.site,
                args.input,
                target,
                batch_id=args.batch_id,
                batch_date=args.batch_date,
                demo_key=args.demo_key,
                progress=update,
            )
        print_summary(summary)
        return
    with _status(f"Site {args.site}") as update:
        summaries, skipped = run_export(
            args.site, args.input, target, rerun=args.rerun, demo_key=args.demo_key, progress=update
        )
    for summary in summaries:
        print_summary(summary)
    if skipped:
        console.print(
            f"Already published, not run again: batch(es) {', '.join(skipped)} "
            "(--rerun processes them again; that changes nothing)"
        )
    if not summaries and not skipped:
        console.print(f"No batch folders in {args.input}")


def cmd_spec_check(args: argparse.Namespace) -> None:
    from omop_etl.spec import check_id_block, load_spec

    spec = load_spec(args.name)
    check_id_block(spec)
    if args.input is not None:
        from omop_etl.extract.batch import check_export
        from omop_etl.pipeline import batch_folders

        problems = [
            p for folder in batch_folders(args.input, spec) for p in check_export(spec, folder)
        ]
        if problems:
            listed = "\n".join(f"  {p}" for p in problems)
            raise EtlError(
                f"site {spec.site}: the export has {len(problems)} problem(s):\n{listed}"
            )
    used = [f for f in spec.files if not f.skip]
    console.print(
        f"[green]ok[/] spec {spec.site} ({spec.path}): {len(used)} file(s) mapped, "
        f"{len(spec.files) - len(used)} skipped, id block {spec.id_block}"
    )


def write_dashboard(target, out: Path) -> Path:
    """The QA dashboard of the warehouse's runs, from its results schema only."""
    from omop_etl.warehouse import read_results
    from quality.dashboard import build_dashboard

    con = read_results(target)
    try:
        return build_dashboard(con, out)
    finally:
        con.close()


def cmd_dashboard(args: argparse.Namespace) -> None:
    from omop_etl.warehouse import parse_target

    index = write_dashboard(parse_target(args.warehouse), args.out)
    console.print(
        f"QA dashboard: [cyan]{index.resolve()}[/] (open it in a browser; it works offline)"
    )


def cmd_report_unmapped(args: argparse.Namespace) -> None:
    from omop_etl.reports import latest_batch, write_unmapped_report
    from omop_etl.warehouse import parse_target, read_results

    target = parse_target(args.warehouse)
    con = read_results(target, site=args.site)
    try:
        batch = args.batch_id or latest_batch(con, args.site)
        codes = write_unmapped_report(con, args.site, batch, args.out)
    finally:
        con.close()
    console.print(
        f"{codes:,} unmapped code(s) of site {args.site}, batch {batch} -> {args.out} "
        "(import it in Usagi: sourceCode, sourceName, sourceFrequency; sourceVocabularyId "
        "as additional info)"
    )


def cmd_query(args: argparse.Namespace) -> None:
    import duckdb

    from omop_etl.warehouse import connect, parse_target

    target = parse_target(args.warehouse)
    if target.kind == "postgresql":
        from omop_etl.pgwarehouse import query

        names, rows = query(target, args.sql)
    else:
        if not Path(target.location).exists():
            raise EtlError(f"warehouse {target} does not exist yet")
        con = connect(target, read_only=True)
        try:
            cursor = con.execute(args.sql)
            names = [d[0] for d in cursor.description or []]
            rows = cursor.fetchall()
        except duckdb.Error as exc:
            raise EtlError(f"query failed: {exc}") from exc
        finally:
            con.close()
    table = Table()
    for name in names:
        table.add_column(name)
    for row in rows[: args.limit]:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
    if len(rows) > args.limit:
        console.print(f"[dim]{args.limit} of {len(rows):,} rows shown (--limit)[/]")


def cmd_demo_generate(args: argparse.Namespace) -> None:
    from omop_etl.demo.generate import generate

    if args.patients < 1:
        raise EtlError("--patients must be at least 1")
    manifest = generate(args.out, args.patients, args.seed)
    planted = sum(d["count"] for d in manifest["defects"])
    console.print(
        f"SYNTHETIC export of {len(manifest['sites'])} hospitals x {args.patients:,} patients "
        f"(seed {args.seed}) in [cyan]{args.out}[/], {planted:,} planted defect rows; "
        f"ground truth in {args.out / 'manifest.json'}"
    )


def cmd_demo(args: argparse.Namespace) -> None:
    from omop_etl.demo.run import DEMO_SEED, run_demo_through_dags
    from omop_etl.privacy import DEMO_WARNING
    from omop_etl.warehouse import parse_target

    target = parse_target(args.warehouse)
    console.rule("[bold]omop-etl demo: five synthetic hospitals + Synthea -> OMOP CDM v5.4")
    console.print(f"[bold yellow]{DEMO_WARNING}[/]")
    counts = _load_vocabulary(target, None)
    console.print(
        f"Vocabulary: {counts.get('concept', 0):,} concepts (bundled demo subset) and "
        f"{counts.get('source_to_concept_map', 0):,} local code map rows in schema "
        f"{settings.VOCAB_SCHEMA}"
    )
    with _status("Demo") as update:
        update(f"writing the synthetic exports to {args.export}")
        result = run_demo_through_dags(
            target,
            args.export,
            args.dashboard,
            patients=args.patients,
            seed=DEMO_SEED,
            progress=update,
        )
    summaries = {"synthea": result.synthea} | {s: runs[-1] for s, runs in result.sites.items()}
    _print_consortium(summaries, result)
    index = args.dashboard / "index.html"  # written by the consortium DAG
    site_list = ", ".join(f"cdm_{s}" for s in summaries)
    where = Path(target.location).resolve() if target.kind == "duckdb" else target
    console.print(
        f"\n[bold]Built:[/] OMOP CDM v5.4 of six sites (five SYNTHETIC hospitals from "
        f"[cyan]{args.export}[/], two monthly batches each, and the Synthea sample), every "
        "batch run by its site's Airflow DAG (omop_site_<site>, in-process dag.test()) and "
        f"then the omop_consortium DAG, in [cyan]{where}[/]:\n"
        f"  schemas {site_list}; all sites together in the views of [cyan]cdm[/]; "
        "vocabulary in [cyan]vocab[/]; run log in [cyan]results.run_log[/]; rejects, "
        "flags, reconciliation and unmapped codes in [cyan]stage_<site>[/].\n"
        f"  Unmapped-code reports (Usagi import files): [cyan]{args.export / 'reports'}[/]\n"
        f"  Planted defects (ground truth): [cyan]{args.export / 'manifest.json'}[/]\n"
        f"  QA dashboard (offline HTML): [cyan]{index.resolve()}[/]\n"
        "Look at it, e.g.:\n"
        f"  .venv/bin/omop-etl query --warehouse {target} "
        '"select gender_concept_id, count(*) from cdm_busan_university.person group by 1"\n'
        "or open the file with any DuckDB client (DuckDB CLI, DBeaver, Python's duckdb)."
    )


def _print_consortium(summaries: dict, result) -> None:
    """One table per question, sites side by side: rows, rejects, mapping coverage."""
    sites = list(summaries)
    short = {site: site.split("_")[0] for site in sites}  # columns fit 80 characters
    rows = Table(title="Rows per CDM table (latest batch of each site)")
    rows.add_column("CDM table", overflow="fold")
    for site in sites:
        rows.add_column(short[site], justify="right")
    tables = [
        t
        for t in next(iter(summaries.values())).rows
        if any(s.rows.get(t) for s in summaries.values())
    ]
    for table in tables:
        rows.add_row(table, *(f"{summaries[s].rows.get(table, 0):,}" for s in sites))
    console.print(rows)

    all_runs = {"synthea": [result.synthea], **result.sites}
    rejects = Table(title="Rejected rows by rule, and rows kept but fixed (all batches)")
    rejects.add_column("rule", overflow="fold")
    for site in sites:
        rejects.add_column(short[site], justify="right")
    by_rule: dict[str, dict[str, int]] = {}
    for site, runs in all_runs.items():
        for run in runs:
            counted = [*run.rejects_by_rule.items()]
            counted += [(f"{rule} (kept)", n) for rule, n in run.flags_by_rule.items()]
            for rule, n in counted:
                by_rule.setdefault(rule, {}).setdefault(site, 0)
                by_rule[rule][site] += n
    for rule in sorted(by_rule):
        rejects.add_row(rule, *(f"{by_rule[rule].get(s, 0):,}" for s in sites))
    console.print(rejects)

    checks = max((sum(s.checks.values()) for s in summaries.values()), default=0)
    coverage = Table(
        title=f"Mapping coverage; CDM checks of the latest batch failed (of {checks:,}; none fatal)"
    )
    coverage.add_column("site", no_wrap=True)
    coverage.columns[0].min_width = 16
    for col in ("mapped", "events", "coverage", "unmapped", "rows read", "failed checks", "s"):
        coverage.add_column(col, justify="right")
    for site in sites:
        s = summaries[site]
        mapped = sum(m for m, _ in s.mapping.values())
        events = sum(n for _, n in s.mapping.values())
        runs = all_runs[site]
        coverage.add_row(
            site,
            f"{mapped:,}",
            f"{events:,}",
            f"{mapped / events:.1%}" if events else "-",
            f"{s.unmapped_codes:,}",
            f"{sum(r.rows_read for r in runs):,}",
            f"{s.checks.get('Failed', 0)}",
            f"{sum(r.seconds for r in runs):.1f}",
        )
    console.print(coverage)


def print_summary(summary) -> None:
    """Rows per CDM table, what became of each source file, rejects by rule."""
    console.print(
        f"\n[bold]Site {summary.site}[/], batch [bold]{summary.batch_id}[/] -> "
        f"schema [cyan]{summary.cdm_schema}[/]"
    )
    rows = Table(title="Rows per CDM table")
    rows.add_column("CDM table")
    rows.add_column("rows", justify="right")
    for name, n in summary.rows.items():
        if n:
            rows.add_row(name, f"{n:,}")
    empty = [name for name, n in summary.rows.items() if not n]
    console.print(rows)
    if empty:
        console.print(f"[dim]empty: {', '.join(empty)}[/]")
    several = any(f.produced != f.rows_read for f in summary.files)
    title = (
        "Source files: records read; rows they gave = loaded + rejected + filtered"
        if several
        else "Source files: records read = loaded + rejected + filtered"
    )
    files = Table(title=title)
    columns = ["file", "entry", "target", "read", *(["rows"] if several else [])]
    for col in [*columns, "loaded", "rejected", "filtered", *(["empty"] if several else [])]:
        files.add_column(col, justify="left" if col in ("file", "entry", "target") else "right")
    for f in summary.files:
        extra = [f"{f.produced:,}"] if several else []
        files.add_row(
            Path(f.path).name,
            f.source_file,
            f.target
            or ("[yellow]not read[/]" if f.source_file == NOT_IN_SPEC else "[dim]skipped[/]"),
            f"{f.rows_read:,}",
            *extra,
            f"{f.rows_loaded:,}",
            f"{f.rows_rejected:,}",
            f"{f.rows_filtered:,}",
            *([f"{f.records_empty:,}"] if several else []),
        )
    if summary.remap:
        console.print(f"[yellow]{summary.remap}[/]: the batch was mapped again")
    console.print(files)
    for f in summary.files:
        if f.source_file == NOT_IN_SPEC:
            console.print(f"[yellow]warning:[/] {Path(f.path).name}: {f.note}")
        elif f.note:
            console.print(f"[dim]{Path(f.path).name}: {f.note}[/]")
    if summary.rejects_by_rule:
        rejects = Table(title="Rejects by rule")
        rejects.add_column("rule")
        rejects.add_column("rows", justify="right")
        for rule, n in summary.rejects_by_rule.items():
            rejects.add_row(rule, f"{n:,}")
        console.print(rejects)
    if summary.flags_by_rule:
        flagged = ", ".join(f"{rule} {n:,}" for rule, n in summary.flags_by_rule.items())
        console.print(f"Kept but fixed (flags): {flagged}")
    mapped = sum(m for m, _ in summary.mapping.values())
    events = sum(n for _, n in summary.mapping.values())
    if events:
        console.print(
            f"Mapping coverage: {mapped:,} of {events:,} clinical events ({mapped / events:.1%}) "
            f"have a standard concept; {summary.unmapped_codes:,} source code(s) unmapped "
            f"(omop-etl report unmapped --site {summary.site})"
        )
    console.print(
        f"Site [bold]{summary.site}[/]: {summary.rows_read:,} source rows -> "
        f"{sum(summary.rows.values()):,} CDM rows in {summary.seconds:.1f} s, "
        f"warehouse {summary.warehouse}"
    )


if __name__ == "__main__":
    sys.exit(main())
