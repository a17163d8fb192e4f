"""Shared fixtures: a tiny Athena vocabulary and a tiny site, written per test."""

from __future__ import annotations

import csv
import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import duckdb
import pytest

from omop_etl import vocabulary
from omop_etl.pipeline import RunSummary, run_site
from omop_etl.privacy import pseudonym, secret_env_var, site_key
from omop_etl.warehouse import Target

# Test secrets for the sites tests run (one per site, as in production): never a real
# key, only set for the test process.
TEST_SECRET = "test-secret-of-{site}-not-for-real-data"
DEMO_SITES = ("seoul_general", "busan_university", "incheon_medical", "daegu_fhir", "gwangju_local")


@pytest.fixture(autouse=True, scope="session")
def site_secrets() -> Iterator[None]:
    """Every site the tests run has a secret (fixtures of any scope run sites)."""
    sites = ("tiny", "tiny_b", "synthea", "fhir_r4_bulk", "harbor_hospital", *DEMO_SITES)
    saved = {secret_env_var(site): os.environ.get(secret_env_var(site)) for site in sites}
    for site in sites:
        os.environ[secret_env_var(site)] = TEST_SECRET.format(site=site)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# concept_id, name, domain, vocabulary, class, standard, code
TINY_CONCEPTS = [
    (0, "No matching concept", "Metadata", "None", "Undefined", "", "No matching concept"),
    (756265, "OMOP CDM Version 5.4.0", "Metadata", "CDM", "CDM", "S", "CDM v5.4.0"),
    (32810, "Claim", "Type Concept", "Type Concept", "Type Concept", "S", "OMOP4976884"),
    (8507, "MALE", "Gender", "Gender", "Gender", "S", "M"),
    (8532, "FEMALE", "Gender", "Gender", "Gender", "S", "F"),
    (9201, "Inpatient Visit", "Visit", "Visit", "Visit", "S", "IP"),
    (9202, "Outpatient Visit", "Visit", "Visit", "Visit", "S", "OP"),
    (9203, "Emergency Room Visit", "Visit", "Visit", "Visit", "S", "ER"),
    (262, "Emergency Room and Inpatient Visit", "Visit", "Visit", "Visit", "S", "ERIP"),
    (32817, "EHR", "Type Concept", "Type Concept", "Type Concept", "S", "OMOP4976890"),
    (1001, "Condition one", "Condition", "SNOMED", "Disorder", "S", "C1"),
    (1002, "Condition two", "Condition", "SNOMED", "Disorder", "S", "C2"),
    (2001, "Lab one", "Measurement", "LOINC", "Lab Test", "S", "L1"),
    (3001, "ICD code to two conditions", "Condition", "ICD10CM", "5-char code", "", "I1"),
    (3002, "ICD code to observation + value", "Observation", "ICD10CM", "4-char code", "", "I2"),
    (4001, "Observation one", "Observation", "SNOMED", "Finding", "S", "O1"),
    (4501, "Value one", "Meas Value", "SNOMED", "Qualifier Value", "S", "V1"),
    (5001, "Drug one 10 MG Oral Tablet", "Drug", "RxNorm", "Clinical Drug", "S", "D1"),
    (5002, "Drug one 20 MG Oral Tablet", "Drug", "RxNorm", "Clinical Drug", "S", "D2"),
    (5101, "drug one", "Drug", "RxNorm", "Ingredient", "S", "I-D1"),
    (8840, "milligram per deciliter", "Unit", "UCUM", "Unit", "S", "mg/dL"),
    (8576, "milligram", "Unit", "UCUM", "Unit", "S", "mg"),
]
TINY_RELATIONSHIPS = [
    (1001, 1001, "Maps to"),
    (1002, 1002, "Maps to"),
    (2001, 2001, "Maps to"),
    (3001, 1001, "Maps to"),
    (3001, 1002, "Maps to"),
    (3002, 4001, "Maps to"),
    (3002, 4501, "Maps to value"),
    (5001, 5001, "Maps to"),
    (5002, 5002, "Maps to"),
]
TINY_ANCESTORS = [(5101, 5001), (5101, 5002), (5101, 5101)]
# drug, ingredient, amount, amount unit
TINY_DRUG_STRENGTH = [(5001, 5101, 10, 8576)]


def _write_tsv(path: Path, header: list[str], rows: list[tuple]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        fh.write("\t".join(header) + "\n")
        for row in rows:
            fh.write("\t".join("" if v is None else str(v) for v in row) + "\n")


def write_athena(folder: Path) -> Path:
    """The tiny vocabulary, in Athena's download format."""
    folder.mkdir(parents=True, exist_ok=True)
    _write_tsv(
        folder / "CONCEPT.csv",
        [
            "concept_id",
            "concept_name",
            "domain_id",
            "vocabulary_id",
            "concept_class_id",
            "standard_concept",
            "concept_code",
            "valid_start_date",
            "valid_end_date",
            "invalid_reason",
        ],
        [(*c, "19700101", "20991231", None) for c in TINY_CONCEPTS],
    )
    _write_tsv(
        folder / "CONCEPT_RELATIONSHIP.csv",
        [
            "concept_id_1",
            "concept_id_2",
            "relationship_id",
            "valid_start_date",
            "valid_end_date",
            "invalid_reason",
        ],
        [(*r, "19700101", "20991231", None) for r in TINY_RELATIONSHIPS],
    )
    _write_tsv(
        folder / "CONCEPT_ANCESTOR.csv",
        [
            "ancestor_concept_id",
            "descendant_concept_id",
            "min_levels_of_separation",
            "max_levels_of_separation",
        ],
        [(a, d, 0 if a == d else 1, 0 if a == d else 1) for a, d in TINY_ANCESTORS],
    )
    _write_tsv(
        folder / "DRUG_STRENGTH.csv",
        [
            "drug_concept_id",
            "ingredient_concept_id",
            "amount_value",
            "amount_unit_concept_id",
            "numerator_value",
            "numerator_unit_concept_id",
            "denominator_value",
            "denominator_unit_concept_id",
            "box_size",
            "valid_start_date",
            "valid_end_date",
            "invalid_reason",
        ],
        [
            (*d, None, None, None, None, None, "19700101", "20991231", None)
            for d in TINY_DRUG_STRENGTH
        ],
    )
    _write_tsv(
        folder / "VOCABULARY.csv",
        [
            "vocabulary_id",
            "vocabulary_name",
            "vocabulary_reference",
            "vocabulary_version",
            "vocabulary_concept_id",
        ],
        [("None", "OMOP Standardized Vocabularies", "tiny", "tiny-test-vocab", 44819096)]
        + [
            (v, v, "tiny", "tiny-test-vocab", 0)
            for v in sorted({c[3] for c in TINY_CONCEPTS} - {"None"})
        ],
    )
    domains = sorted({c[2] for c in TINY_CONCEPTS} | {"Visit", "Cost"})
    _write_tsv(
        folder / "DOMAIN.csv",
        ["domain_id", "domain_name", "domain_concept_id"],
        [(d, d, 0) for d in domains],
    )
    _write_tsv(
        folder / "CONCEPT_CLASS.csv",
        ["concept_class_id", "concept_class_name", "concept_class_concept_id"],
        [],
    )
    _write_tsv(
        folder / "RELATIONSHIP.csv",
        [
            "relationship_id",
            "relationship_name",
            "is_hierarchical",
            "defines_ancestry",
            "reverse_relationship_id",
            "relationship_concept_id",
        ],
        [],
    )
    return folder


TINY_SPEC = """
site: {site}
description: tiny test site
id_block: {id_block}
# the tests plant bad rows on purpose: never block a batch for its rejects
max_reject_rate: 1.0
# the tiny vocabulary's codes (C1, L1, D1 ...) have no real code system's form
code_forms: {{SNOMED: ".+", LOINC: ".+", RxNorm: ".+"}}
defaults:
  date_format: "%Y-%m-%d"
  datetime_format: "%Y-%m-%d %H:%M"
value_maps:
  sex: {{M: 8507, F: 8532}}
  visit: {{IP: 9201, OP: 9202, ER: 9203}}
files:
  - name: patients
    pattern: patients.csv
    target: person
    columns:
      person_source_value: id
      birth_datetime: {{column: birth, format: date}}
      death_datetime: {{column: death, format: date}}
      gender_concept_id: {{column: sex, map: sex, default: 0}}
      gender_source_value: sex
  - name: visits
    pattern: visits.csv
    target: visit
    type_concept_id: 32817
    columns:
      visit_source_value: id
      person_source_value: patient
      start_datetime: start
      end_datetime: stop
      visit_concept_id: {{column: class, map: visit, default: 0}}
      visit_class_source_value: class
      parent_visit_source_value: parent
  - name: diagnoses
    pattern: diagnoses.csv
    target: event
    domain: Condition
    type_concept_id: 32817
    columns:
      person_source_value: patient
      visit_source_value: visit
      code: code
      code_system: system
      start_datetime: {{column: start, format: date}}
      end_datetime: {{column: stop, format: date}}
      value_as_number: value
      unit_source_value: unit
  - name: drugs
    pattern: drugs.csv
    target: event
    domain: Drug
    type_concept_id: 32817
    columns:
      person_source_value: patient
      code: code
      code_system: {{const: RxNorm}}
      start_datetime: {{column: start, format: date}}
      end_datetime: {{column: stop, format: date}}
      days_supply: days
      quantity: qty
  - name: charges
    pattern: charges.csv
    target: cost
    type_concept_id: 32810
    columns:
      visit_source_value: visit
      total_charge: amount
"""


class TinySite:
    """A tiny site export on disk; ``run()`` puts it through the real pipeline."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, site: str = "tiny"):
        self.root = root
        self.site = site
        self.mappings = root / "mappings"
        (self.mappings / "sites").mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv("OMOP_ETL_MAPPINGS", str(self.mappings))
        self.add_spec(site, id_block=3)
        self.export = root / "export" / "batch1"
        self.export.mkdir(parents=True)
        self.warehouse = Target("duckdb", str(root / "warehouse.duckdb"))
        self.tables: dict[str, list[dict]] = {name: [] for name in self.COLUMNS}
        self._vocab_loaded = False

    def add_spec(self, site: str, id_block: int) -> None:
        text = TINY_SPEC.format(site=site, id_block=id_block)
        (self.mappings / "sites" / f"{site}.yaml").write_text(textwrap.dedent(text))

    COLUMNS: ClassVar[dict[str, list[str]]] = {
        "patients": ["id", "birth", "death", "sex"],
        "visits": ["id", "patient", "start", "stop", "class", "parent"],
        "diagnoses": ["patient", "visit", "code", "system", "start", "stop", "value", "unit"],
        "drugs": ["patient", "code", "start", "stop", "days", "qty"],
        "charges": ["visit", "amount"],
    }

    def patient(self, pid: str, birth: str = "1970-01-01", death: str = "", sex: str = "M"):
        self.tables["patients"].append({"id": pid, "birth": birth, "death": death, "sex": sex})

    def visit(
        self, vid: str, patient: str, start: str, stop: str, cls: str = "OP", parent: str = ""
    ):
        self.tables["visits"].append(
            {
                "id": vid,
                "patient": patient,
                "start": start,
                "stop": stop,
                "class": cls,
                "parent": parent,
            }
        )

    def diagnosis(
        self,
        patient: str,
        code: str,
        start: str,
        stop: str = "",
        system: str = "SNOMED",
        visit: str = "",
        value: str = "",
        unit: str = "",
    ):
        self.tables["diagnoses"].append(
            {
                "patient": patient,
                "visit": visit,
                "code": code,
                "system": system,
                "start": start,
                "stop": stop,
                "value": value,
                "unit": unit,
            }
        )

    def drug(
        self, patient: str, code: str, start: str, stop: str = "", days: str = "", qty: str = ""
    ):
        self.tables["drugs"].append(
            {
                "patient": patient,
                "code": code,
                "start": start,
                "stop": stop,
                "days": days,
                "qty": qty,
            }
        )

    def charge(self, visit: str, amount: str):
        self.tables["charges"].append({"visit": visit, "amount": amount})

    def write(self, folder: Path | None = None) -> Path:
        folder = folder or self.export
        folder.mkdir(parents=True, exist_ok=True)
        for name, rows in self.tables.items():
            with open(folder / f"{name}.csv", "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=self.COLUMNS[name])
                writer.writeheader()
                writer.writerows(rows)
        return folder

    def use_postgres(self, url: str) -> None:
        """Put the site's warehouse on a PostgreSQL database instead of a DuckDB file."""
        self.warehouse = Target("postgresql", url)

    def load_vocabulary(self) -> None:
        if self._vocab_loaded:
            return
        folder = write_athena(self.root / "athena")
        postgres = self.warehouse.kind == "postgresql"
        con = duckdb.connect(":memory:" if postgres else self.warehouse.location)
        try:
            vocabulary.load_vocabulary(con, folder, "vocab")
            if postgres:
                from omop_etl.pgwarehouse import publish_vocabulary

                publish_vocabulary(con, self.warehouse)
        finally:
            con.close()
        self._vocab_loaded = True

    def run(self, site: str | None = None, folder: Path | None = None, **kwargs) -> RunSummary:
        self.load_vocabulary()
        folder = self.write(folder)
        return run_site(site or self.site, folder, self.warehouse, **kwargs)

    def query(self, sql: str) -> list[tuple]:
        if self.warehouse.kind == "postgresql":
            from omop_etl.pgwarehouse import query

            return [tuple(row) for row in query(self.warehouse, sql)[1]]
        con = duckdb.connect(self.warehouse.location, read_only=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def pseudonym(self, patient: str) -> str:
        """What the warehouse holds for a patient id of this site's export."""
        return pseudonym(patient, site_key(self.site))

    def query_named(self, sql: str) -> list[tuple]:
        """``query`` with patient pseudonyms shown as the export's ids, rows sorted."""
        names = {self.pseudonym(p["id"]): p["id"] for p in self.tables["patients"]}
        return sorted(tuple(names.get(v, v) for v in row) for row in self.query(sql))


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TinySite:
    return TinySite(tmp_path, monkeypatch)


def demo_warehouse(root: Path) -> Target:
    """A fresh warehouse in ``root`` with the demo vocabulary and the code maps."""
    target = Target("duckdb", str(root / "warehouse.duckdb"))
    con = duckdb.connect(target.location)
    try:
        vocabulary.load_demo_vocabulary(con)
    finally:
        con.close()
    return target


@pytest.fixture(scope="session")
def make_demo_warehouse() -> Callable[[Path], Target]:
    """``demo_warehouse`` for test modules (they cannot import conftest)."""
    return demo_warehouse


@pytest.fixture(scope="session")
def synthea_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], Target]:
    """The bundled Synthea sample through the pipeline, once per session."""
    from omop_etl.pipeline import run_demo_site

    target = demo_warehouse(tmp_path_factory.mktemp("synthea"))
    summary = run_demo_site(target)
    return target, summary


PG_URL_VARIABLE = "OMOP_ETL_TEST_PG_URL"
PG_URL_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def pg_url() -> str:
    """A reachable PostgreSQL server; skipped when there is none, except under CI=true."""
    import os

    import psycopg2

    url = os.environ.get(PG_URL_VARIABLE, PG_URL_DEFAULT)
    try:
        psycopg2.connect(url, connect_timeout=3).close()
    except psycopg2.OperationalError as exc:
        reason = f"no PostgreSQL at {url} ({PG_URL_VARIABLE}): {str(exc).strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true needs a real server: {reason}")
        pytest.skip(reason)
    return url


@pytest.fixture
def new_pg_database(pg_url: str) -> Iterator[Callable[[], str]]:
    """A function that makes a fresh, empty database on the server: its URL. The
    databases are dropped afterwards."""
    import uuid

    import psycopg2

    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    made: list[str] = []

    def make() -> str:
        name = f"omop_test_{uuid.uuid4().hex[:10]}"
        with admin.cursor() as cur:
            cur.execute(f'create database "{name}"')
        made.append(name)
        return f"{pg_url.rpartition('/')[0]}/{name}"

    yield make
    with admin.cursor() as cur:
        for name in made:
            cur.execute(f'drop database if exists "{name}" with (force)')
    admin.close()
