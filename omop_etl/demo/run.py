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
from omop_etl.warehouse import Target, connect

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
    con = connect(target, read_only=True)
    try:
        for site, summaries in result.sites.items():
            path = export / "reports" / f"{site}_unmapped_codes.csv"
            write_unmapped_report(con, site, summaries[-1].batch_id, path)
            result.reports[site] = path
    finally:
        con.close()
    return result
