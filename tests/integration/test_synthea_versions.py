"""The bundled synthea spec reads the CSV exports of Synthea 3.0 to 3.3 as they are.

The bundled sample is a 3.0.0 export. Each later release's export is written here from
it by exactly the header changes that release made (the header literals of Synthea's
CSVExporter.writeCSVHeaders() at the 3.1.0, 3.2.0 and 3.3.0 release commits), with
synthetic values in the added columns. Every release so holds the same patients and
must give the same CDM; only the encounters of the classes 3.1 added (home, virtual,
snf, hospice), planted in the 3.1 export, add rows.
"""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from omop_etl.pipeline import RunSummary, run_site
from omop_etl.warehouse import Target

from .test_synthea import SAMPLE, _checksums, _query

Rows = list[dict[str, str]]

# Synthea 3.3 writes SYSTEM in conditions.csv and procedures.csv as the module wrote it
# ("SNOMED-CT") when only the CSV exporter runs, but as the FHIR URI when the FHIR R4
# exporter (on by default) ran first; without the FHIR exporter, allergies.csv says
# SYSTEM "Unknown" (any 3.x release).
RELEASES = ("3.1.0", "3.2.0", "3.3.0", "3.3.0-csv-only")
PLANTED_IN = "3.1.0"

# Encounters of the classes 3.1 added, planted in the 3.1 export for a living patient
# inside an observation period of theirs (1989-2024: no period changes), with the
# codes Synthea's own modules give them (home_health_treatment, uti/telemed_path,
# snf/skilled_nursing_facility, hospice_treatment). Id -> (class, start, stop, code,
# description, visit concept).
PLANTED_PATIENT = "5f8d3e13-bc80-dd66-0f1b-d24f9692a697"
PLANTED = {
    "00000000-0000-4000-8000-000000000001": (
        "home", "2022-03-01T09:00:00Z", "2022-03-01T09:45:00Z",
        "439708006", "Home visit (procedure)", 581476,
    ),
    "00000000-0000-4000-8000-000000000002": (
        "virtual", "2022-04-05T14:00:00Z", "2022-04-05T14:15:00Z",
        "185316007", "Indirect encounter (procedure)", 5083,
    ),
    "00000000-0000-4000-8000-000000000003": (
        "snf", "2022-05-02T10:00:00Z", "2022-05-16T10:00:00Z",
        "449411000124106", "Admission to skilled nursing facility (procedure)", 8863,
    ),
    "00000000-0000-4000-8000-000000000004": (
        "hospice", "2022-09-01T10:00:00Z", "2022-09-20T10:00:00Z",
        "305336008", "Admission to hospice (procedure)", 8546,
    ),
}  # fmt: skip
# Massachusetts county FIPS codes (3.2 added patients.FIPS)
COUNTY_FIPS = {
    "Barnstable County": "25001", "Berkshire County": "25003", "Bristol County": "25005",
    "Dukes County": "25007", "Essex County": "25009", "Franklin County": "25011",
    "Hampden County": "25013", "Hampshire County": "25015", "Middlesex County": "25017",
    "Nantucket County": "25019", "Norfolk County": "25021", "Plymouth County": "25023",
    "Suffolk County": "25025", "Worcester County": "25027",
}  # fmt: skip
# event file: (code column, name column) of the codes the unmapped-code report lists
NAMED_CODES = {
    "conditions": ("CODE", "DESCRIPTION"),
    "careplans": ("CODE", "DESCRIPTION"),
    "medications": ("CODE", "DESCRIPTION"),
    "immunizations": ("CODE", "DESCRIPTION"),
    "procedures": ("CODE", "DESCRIPTION"),
    "observations": ("CODE", "DESCRIPTION"),
    "allergies": ("CODE", "DESCRIPTION"),
    "devices": ("CODE", "DESCRIPTION"),
    "supplies": ("CODE", "DESCRIPTION"),
}


# -- writing an export of each release's shape ----------------------------------------------


def _read(folder: Path, name: str) -> tuple[list[str], Rows]:
    with open(folder / f"{name}.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _write(folder: Path, name: str, header: list[str], rows: Rows) -> None:
    # Synthea never quotes: clean() has already replaced commas and line breaks
    with open(folder / f"{name}.csv", "w", newline="", encoding="utf-8") as fh:
        fh.write(",".join(header) + "\n")
        for row in rows:
            fh.write(",".join(row.get(c, "") for c in header) + "\n")


def _insert_after(header: list[str], after: str, *names: str) -> list[str]:
    at = header.index(after) + 1
    return header[:at] + list(names) + header[at:]


def _rename(header: list[str], rows: Rows, names: dict[str, str]) -> tuple[list[str], Rows]:
    return [names.get(c, c) for c in header], [
        {names.get(k, k): v for k, v in r.items()} for r in rows
    ]


def _to_3_1(folder: Path) -> None:
    header, rows = _read(folder, "patients")
    for i, row in enumerate(rows):  # yearly income in dollars
        row["INCOME"] = str(20_000 + (i * 7_919) % 130_000)
    _write(folder, "patients", [*header, "INCOME"], rows)


def _plant_new_encounter_classes(folder: Path) -> None:
    header, rows = _read(folder, "encounters")
    template = next(r for r in reversed(rows) if r["PATIENT"] == PLANTED_PATIENT)
    for uid, (cls, start, stop, code, description, _) in PLANTED.items():
        rows.append(
            {
                **template,
                "Id": uid,
                "START": start,
                "STOP": stop,
                "ENCOUNTERCLASS": cls,
                "CODE": code,
                "DESCRIPTION": description,
                "REASONCODE": "",
                "REASONDESCRIPTION": "",
            }
        )
    _write(folder, "encounters", header, rows)


def _to_3_2(folder: Path) -> None:
    header, rows = _read(folder, "patients")
    for row in rows:
        row["FIPS"] = COUNTY_FIPS.get(row["COUNTY"], "")
    _write(folder, "patients", _insert_after(header, "COUNTY", "FIPS"), rows)

    _, encounters = _read(folder, "encounters")
    _, procedures = _read(folder, "procedures")
    provider_of = {e["Id"]: e["PROVIDER"] for e in encounters}
    done = Counter(provider_of.get(p["ENCOUNTER"]) for p in procedures)
    header, rows = _read(folder, "providers")
    for row in rows:
        row["ENCOUNTERS"] = row.pop("UTILIZATION")
        row["PROCEDURES"] = str(done[row["Id"]])
    header = [c for c in header if c != "UTILIZATION"] + ["ENCOUNTERS", "PROCEDURES"]
    _write(folder, "providers", header, rows)

    header, rows = _read(folder, "payers")
    for row in rows:
        row["OWNERSHIP"] = {
            "Medicare": "GOVERNMENT",
            "Medicaid": "GOVERNMENT",
            "Dual Eligible": "GOVERNMENT",
            "NO_INSURANCE": "NO_INSURANCE",
        }.get(row["NAME"], "PRIVATE")
    _write(folder, "payers", _insert_after(header, "NAME", "OWNERSHIP"), rows)

    header, rows = _read(folder, "payer_transitions")
    renamed = {
        "START_YEAR": "START_DATE",
        "END_YEAR": "END_DATE",
        "OWNERSHIP": "PLAN_OWNERSHIP",
        "OWNERNAME": "OWNER_NAME",
    }
    _write(folder, "payer_transitions", *_rename(header, rows, renamed))


def _write_patient_expenses(folder: Path) -> int:
    """3.2's new file (off by default, so only some exports have it): a row per plan."""
    _, plans = _read(folder, "payer_transitions")
    rows = [
        {
            "PATIENT_ID": p["PATIENT"],
            "YEAR": p["START_DATE"],  # the plan's start, as an ISO timestamp
            "PAYER_ID": p["PAYER"],
            "HEALTHCARE_EXPENSES": "1250.00",
            "INSURANCE_COSTS": "3000.00",
            "COVERED_COSTS": "980.00",
        }
        for p in plans
    ]
    header = [
        "PATIENT_ID",
        "YEAR",
        "PAYER_ID",
        "HEALTHCARE_EXPENSES",
        "INSURANCE_COSTS",
        "COVERED_COSTS",
    ]
    _write(folder, "patient_expenses", header, rows)
    return len(rows)


def _to_3_3(folder: Path, *, fhir_export: bool) -> None:
    header, rows = _read(folder, "patients")
    for i, row in enumerate(rows):
        row["MIDDLE"] = f"Middle{i}" if i % 3 else ""
    _write(folder, "patients", _insert_after(header, "FIRST", "MIDDLE"), rows)
    system = "http://snomed.info/sct" if fhir_export else "SNOMED-CT"
    for name in ("conditions", "procedures"):
        header, rows = _read(folder, name)
        for row in rows:
            row["SYSTEM"] = system
        _write(folder, name, _insert_after(header, "ENCOUNTER", "SYSTEM"), rows)
    if not fhir_export:
        header, rows = _read(folder, "allergies")
        for row in rows:
            row["SYSTEM"] = "Unknown"
        _write(folder, "allergies", header, rows)


def write_export(release: str, root: Path) -> tuple[Path, int]:
    """The sample in the shape of ``release``, and how many patient_expenses rows it has.

    The folder is named like the sample's, so the batch id is the same.
    """
    version = tuple(int(n) for n in release.split("-")[0].split("."))
    folder = root / release / SAMPLE.name
    shutil.copytree(SAMPLE, folder)
    expenses = 0
    _to_3_1(folder)
    if release == PLANTED_IN:
        _plant_new_encounter_classes(folder)
    if version >= (3, 2, 0):
        _to_3_2(folder)
    if version >= (3, 3, 0):
        _to_3_3(folder, fhir_export=release == "3.3.0")
        # switched on in these exports; 3.2's default leaves the file out (as here)
        expenses = _write_patient_expenses(folder)
    return folder, expenses


# -- the runs ----------------------------------------------------------------------------------


@dataclass
class Run:
    target: Target
    summary: RunSummary
    folder: Path
    expenses: int  # rows of patient_expenses.csv (0: the export has none)


@pytest.fixture(scope="module")
def releases(
    tmp_path_factory: pytest.TempPathFactory, make_demo_warehouse: Callable[[Path], Target]
) -> dict[str, Run]:
    """Each release's export through the pipeline, in a warehouse of its own."""
    runs = {}
    for release in RELEASES:
        root = tmp_path_factory.mktemp(f"synthea-{release}")
        folder, expenses = write_export(release, root / "export")
        target = make_demo_warehouse(root)
        summary = run_site("synthea", folder, target, demo_key=True)
        runs[release] = Run(target, summary, folder, expenses)
    return runs


@pytest.fixture(scope="module")
def baseline(synthea_run) -> Run:
    """The bundled 3.0.0 sample's run (the session's, shared with test_synthea.py)."""
    target, summary = synthea_run
    return Run(target, summary, SAMPLE, 0)


def _run(release: str, releases: dict[str, Run], baseline: Run) -> Run:
    return baseline if release == "3.0.0" else releases[release]


def _header(folder: Path, name: str) -> str:
    with open(folder / f"{name}.csv", encoding="utf-8") as fh:
        return fh.readline().strip()


def test_the_exports_have_the_headers_of_their_release(releases):
    """The written exports are what each release writes (CSVExporter header literals)."""
    v31, v32, v33 = (releases[r].folder for r in ("3.1.0", "3.2.0", "3.3.0"))
    patients = (
        "Id,BIRTHDATE,DEATHDATE,SSN,DRIVERS,PASSPORT,PREFIX,FIRST,{middle}LAST,SUFFIX,MAIDEN,"
        "MARITAL,RACE,ETHNICITY,GENDER,BIRTHPLACE,ADDRESS,CITY,STATE,COUNTY,{fips}ZIP,LAT,LON,"
        "HEALTHCARE_EXPENSES,HEALTHCARE_COVERAGE,INCOME"
    )
    assert _header(v31, "patients") == patients.format(middle="", fips="")
    assert _header(v32, "patients") == patients.format(middle="", fips="FIPS,")
    assert _header(v33, "patients") == patients.format(middle="MIDDLE,", fips="FIPS,")
    assert _header(v31, "payer_transitions") == _header(SAMPLE, "payer_transitions")
    assert _header(v32, "payer_transitions") == (
        "PATIENT,MEMBERID,START_DATE,END_DATE,PAYER,SECONDARY_PAYER,PLAN_OWNERSHIP,OWNER_NAME"
    )
    assert _header(v32, "providers") == (
        "Id,ORGANIZATION,NAME,GENDER,SPECIALITY,ADDRESS,CITY,STATE,ZIP,LAT,LON,"
        "ENCOUNTERS,PROCEDURES"
    )
    assert _header(v32, "payers").startswith("Id,NAME,OWNERSHIP,ADDRESS,")
    assert _header(v33, "conditions") == "START,STOP,PATIENT,ENCOUNTER,SYSTEM,CODE,DESCRIPTION"
    assert _header(v33, "procedures") == (
        "START,STOP,PATIENT,ENCOUNTER,SYSTEM,CODE,DESCRIPTION,BASE_COST,REASONCODE,"
        "REASONDESCRIPTION"
    )
    assert _header(v33, "patient_expenses") == (
        "PATIENT_ID,YEAR,PAYER_ID,HEALTHCARE_EXPENSES,INSURANCE_COSTS,COVERED_COSTS"
    )
    for name in ("conditions", "procedures", "providers", "payers"):
        assert _header(v31, name) == _header(SAMPLE, name), name


@pytest.mark.parametrize("release", RELEASES)
def test_every_release_gives_the_cdm_of_the_3_0_export(release, releases, baseline):
    run, base = releases[release], baseline.summary
    summary = run.summary
    assert summary.status == "published"
    assert summary.rejects_by_rule == {}
    assert summary.flags_by_rule == base.flags_by_rule
    expected = dict(base.rows)
    if release == PLANTED_IN:
        expected["visit_occurrence"] += len(PLANTED)  # one visit each, nothing else
    assert summary.rows == expected
    # every source row is accounted for; patient_expenses.csv, where the export has it,
    # is counted as filtered by its skip rule
    files = {f.source_file: (f.rows_read, f.rows_loaded, f.rows_filtered) for f in summary.files}
    base_files = {f.source_file: (f.rows_read, f.rows_loaded, f.rows_filtered) for f in base.files}
    if release == PLANTED_IN:
        n = base_files["encounters"][0] + len(PLANTED)
        base_files["encounters"] = (n, n, 0)
    if run.expenses:
        base_files["patient_expenses"] = (run.expenses, 0, run.expenses)
    assert files == base_files
    if release != PLANTED_IN:  # the same patients and events: the same CDM, row for row
        assert _checksums(run.target) == _checksums(baseline.target)


def test_payer_plan_periods_are_the_same_in_every_release(releases, baseline):
    """3.2 renamed START_YEAR/END_YEAR to START_DATE/END_DATE: one spec reads both."""
    sql = "select * from cdm_synthea.payer_plan_period order by payer_plan_period_id"
    expected = _query(baseline.target, sql)
    assert len(expected) == 1_051
    for release, run in releases.items():
        assert _query(run.target, sql) == expected, release


def test_the_encounter_classes_of_3_1_get_their_visit_concepts(releases):
    target = releases[PLANTED_IN].target
    ids = ", ".join(f"'{uid}'" for uid in PLANTED)
    found = _query(
        target,
        "select visit_source_value, visit_concept_id, visit_start_datetime::varchar, "
        "visit_end_datetime::varchar from cdm_synthea.visit_occurrence "
        f"where visit_source_value in ({ids}) order by 1",
    )
    assert found == [
        (uid, concept, start.replace("T", " ")[:19], stop.replace("T", " ")[:19])
        for uid, (_, start, stop, _, _, concept) in sorted(PLANTED.items())
    ]
    # each concept is the standard Visit concept it names, in the vocabulary
    concepts = ", ".join(str(p[-1]) for p in PLANTED.values())
    assert _query(
        target,
        "select concept_id, domain_id, standard_concept from vocab.concept "
        f"where concept_id in ({concepts}) order by 1",
    ) == sorted((p[-1], "Visit", "S") for p in PLANTED.values())


@pytest.mark.parametrize("release", ("3.0.0", *RELEASES))
def test_no_encounter_class_falls_through_the_value_map(release, releases, baseline):
    run = _run(release, releases, baseline)
    assert not any(rule.startswith("unmapped_value:") for rule in run.summary.flags_by_rule)
    assert _query(
        run.target,
        "select count(*) from stage_synthea.flags where rule like 'unmapped_value:%'",
    ) == [(0,)]
    assert _query(
        run.target, "select count(*) from cdm_synthea.visit_occurrence where visit_concept_id = 0"
    ) == [(0,)]


def _names(folder: Path) -> dict[str, Counter]:
    """Each code's names (DESCRIPTION) in the export's event files, with their counts."""
    names: dict[str, Counter] = {}
    for name, (code, description) in NAMED_CODES.items():
        for row in _read(folder, name)[1]:
            names.setdefault(row[code], Counter())[row[description]] += 1
    return names


@pytest.mark.parametrize("release", ("3.0.0", *RELEASES))
def test_the_unmapped_code_report_names_each_code_as_the_export_does(release, releases, baseline):
    """The Usagi import gets DESCRIPTION as sourceName, not the code again."""
    run = _run(release, releases, baseline)
    names = _names(run.folder)
    report = _query(run.target, "select source_code, source_name from stage_synthea.unmapped_codes")
    assert len(report) == run.summary.unmapped_codes == 28
    for code, name in report:
        counts = names[code]
        top = max(counts.values())
        assert name in {n for n, c in counts.items() if c == top}, code
    assert ("140", "Influenza  seasonal  injectable  preservative free") in report  # CVX
