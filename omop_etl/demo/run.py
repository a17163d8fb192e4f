"""The five-site demo: generate the synthetic hospital exports, run every site.

Used by ``omop-etl demo`` (the README's main command) and by the tests that check
the pipeline against the generator's planted-defect manifest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omop_etl.pipeline import RunSummary, run_demo_site, run_export
from omop_etl.reports import write_unmapped_report
from omop_etl.warehouse import Target, read_results

DEMO_SEED = 42
DEMO_PATIENTS = 200


def demo_sites() -> list[str]:
    from omop_etl.demo.generate import SITES

    return list(SITES)


@dataclass
class DemoResult:
    export: Path
    manifest: dict
    synthea: RunSummary
    sites: dict[str, list[RunSummary]] = field(default_factory=dict)  # site: batch summaries
    reports: dict[str, Path] = field(default_factory=dict)  # site: unmapped-code report


def ensure_export(out: Path, patients: int, seed: int) -> dict:
    """The demo export in ``out``: generated unless the same one is there already."""
    from omop_etl.demo.generate import generate

    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("patients") == patients and manifest.get("seed") == seed:
            return manifest
    return generate(out, patients, seed)


def place_synthea_sample(export: Path) -> None:
    """The bundled Synthea sample as the export area of site ``synthea`` (one batch)."""
    import shutil

    from omop_etl import settings

    batch = export / "synthea" / "synthea_ma27"
    if not (batch / "patients.csv").exists():
        shutil.copytree(
            settings.mappings_dir() / "samples" / "synthea_ma27", batch, dirs_exist_ok=True
        )


def run_demo_through_dags(
    target: Target,
    export: Path,
    dashboard: Path,
    *,
    patients: int = DEMO_PATIENTS,
    seed: int = DEMO_SEED,
    progress: Callable[[str], None] | None = None,
) -> DemoResult:
    """The demo as production runs it: every batch of the Synthea sample and the five
    synthetic hospitals through the sites' Airflow DAGs (``dag.test()``, in this
    process), then the consortium DAG (views, dashboard, summary).

    Airflow must not have been imported in this process yet (see ``dag_runs``).
    """
    from omop_etl.demo.dag_runs import run_demo_dags
    from omop_etl.pipeline import batch_folders, default_batch_id, recorded_summary

    manifest = ensure_export(export, patients, seed)
    place_synthea_sample(export)
    sites = ["synthea", *demo_sites()]
    batches = {s: [default_batch_id(f) for f in batch_folders(export / s)] for s in sites}
    outcomes = run_demo_dags(target, export, dashboard, batches, progress=progress)
    runs = {}
    for site in sites:
        con = read_results(target, site)
        try:
            runs[site] = [recorded_summary(con, o.published["run_id"]) for o in outcomes[site]]
        finally:
            con.close()
    result = DemoResult(export, manifest, runs["synthea"][-1])
    result.sites = {site: runs[site] for site in demo_sites()}
    _write_reports(target, result)
    return result


def run_demo(
    target: Target,
    export: Path,
    *,
    patients: int = DEMO_PATIENTS,
    seed: int = DEMO_SEED,
    progress: Callable[[str], None] | None = None,
) -> DemoResult:
    """Synthea sample and the five synthetic hospitals, every batch, with the demo key."""
    manifest = ensure_export(export, patients, seed)
    synthea = run_demo_site(target, progress=progress)
    result = DemoResult(export, manifest, synthea)
    for site in demo_sites():

        def site_progress(message: str, site: str = site) -> None:
            if progress:
                progress(f"{site}: {message}")

        # rerun: the demo always shows every batch (processing one again changes nothing)
        summaries, _ = run_export(
            site, export / site, target, rerun=True, demo_key=True, progress=site_progress
        )
        result.sites[site] = summaries
    _write_reports(target, result)
    return result


def _write_reports(target: Target, result: DemoResult) -> None:
    """Each hospital's unmapped codes of its latest batch, as a Usagi import file."""
    for site, summaries in result.sites.items():
        con = read_results(target, site)
        try:
            path = result.export / "reports" / f"{site}_unmapped_codes.csv"
            write_unmapped_report(con, site, summaries[-1].batch_id, path)
            result.reports[site] = path
        finally:
            con.close()
