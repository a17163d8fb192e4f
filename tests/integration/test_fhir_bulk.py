"""The bundled FHIR R4 bulk spec (mappings/sites/fhir_r4_bulk.yaml) on a hand-written,
synthetic bulk export (tests/data/fhir_r4_bulk/): numbered and gzip'd files in
sub-folders, US Core race and ethnicity, conditional references, base64 notes, panel
components, performed periods. Every record is accounted for, every panel component
is a measurement of its own, and a hospital spec that only extends the bundled one
publishes the same export."""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest

from omop_etl import settings
from omop_etl.pipeline import RunSummary, run_site
from omop_etl.privacy import pseudonym, site_key
from omop_etl.warehouse import Target

EXPORT = settings.PROJECT_ROOT / "tests" / "data" / "fhir_r4_bulk" / "2024-01-31"
SITE = "fhir_r4_bulk"
HOSPITAL = "harbor_hospital"  # a hospital whose spec only extends the bundled one
PATIENTS = ("pat-1", "pat-2", "pat-3", "pat-4", "pat-5")


@dataclass
class Run:
    site: str
    target: Target
    summary: RunSummary

    def query(self, sql: str) -> list[tuple]:
        """Rows of ``sql`` ({cdm} is the site's CDM schema), patient pseudonyms shown as
        the export's patient ids, sorted."""
        names = {pseudonym(p, site_key(self.site)): p for p in PATIENTS}
        con = duckdb.connect(self.target.location, read_only=True)
        try:
            rows = con.execute(sql.format(cdm=f"cdm_{self.site}")).fetchall()
        finally:
            con.close()
        return _sorted(tuple(names.get(v, v) for v in row) for row in rows)


def _sorted(rows) -> list[tuple]:
    return sorted(rows, key=repr)


def _run(root: Path, site: str, make_warehouse, export: Path = EXPORT) -> Run:
    target = make_warehouse(root)
    batch = root / "export" / export.name
    shutil.copytree(export, batch)
    return Run(site, target, run_site(site, batch, target))


@pytest.fixture(scope="module")
def bulk(tmp_path_factory: pytest.TempPathFactory, make_demo_warehouse) -> Run:
    return _run(tmp_path_factory.mktemp("fhir_bulk"), SITE, make_demo_warehouse)


# joins that name a row's patient, encounter and provider as the export does
# (of the table queried, named t)
PERSON = "inner join {cdm}.person as p on p.person_id = t.person_id"
VISIT = "left join {cdm}.visit_occurrence as v on v.visit_occurrence_id = t.visit_occurrence_id"
PROVIDER = "left join {cdm}.provider as pr on pr.provider_id = t.provider_id"


def test_persons_keep_birth_death_race_ethnicity_and_their_city_only(bulk):
    assert bulk.query(
        "select p.person_source_value, p.gender_concept_id, p.birth_datetime, "
        "p.race_concept_id, p.race_source_value, p.ethnicity_concept_id, "
        "p.ethnicity_source_value, pr.npi, "
        "cs.care_site_source_value, l.city, l.state, l.zip, l.address_1 "
        "from {cdm}.person as p left join {cdm}.provider as pr on pr.provider_id = p.provider_id "
        "left join {cdm}.care_site as cs on cs.care_site_id = p.care_site_id "
        "left join {cdm}.location as l on l.location_id = p.location_id"
    ) == _sorted([
        # Practitioner?identifier=...us-npi|9999999999, Organization?identifier=...|org-1
        ("pat-1", 8532, datetime(1970, 3, 15), 8527, "2106-3", 38003564, "2186-5",
         "9999999999", "org-1", "Boston", "MA", "02118", None),
        # Practitioner/pract-2, Organization/org-2
        ("pat-2", 8507, datetime(1956, 7, 1), 8516, "2054-5", 38003563, "2135-2",
         "9999999998", "org-2", "Worcester", "MA", "01608", None),
        # birthDate 1990-11: the first of the month; no ethnicity extension
        ("pat-3", 8532, datetime(1990, 11, 1), 8515, "2028-9", 0, None,
         None, None, "Cambridge", "MA", "02139", None),
        # two race categories: the first
        ("pat-4", 8507, datetime(2001, 1, 20), 8657, "1002-5", 38003564, "2186-5",
         None, None, "Lowell", "MA", "01852", None),
        ("pat-5", 8532, datetime(1948, 5, 30), 8557, "2076-8", 0, "UNK",
         None, None, "Springfield", "MA", "01103", None),
    ])  # fmt: skip
    # deceasedDateTime 2024-01-10T08:30:00-05:00 in UTC; deceasedBoolean gives no date
    assert bulk.query(
        "select p.person_source_value, death_datetime from {cdm}.death as t " + PERSON
    ) == [("pat-2", datetime(2024, 1, 10, 13, 30))]


def test_visits_find_their_provider_and_care_site_by_every_reference_form(bulk):
    assert bulk.query(
        "select t.visit_source_value, p.person_source_value, t.visit_concept_id, "
        "t.visit_start_datetime, t.visit_end_datetime, pr.npi, cs.care_site_source_value, "
        "admitted_from_source_value, discharged_to_source_value "
        f"from {{cdm}}.visit_occurrence as t {PERSON} {PROVIDER} "
        "left join {cdm}.care_site as cs on cs.care_site_id = t.care_site_id"
    ) == _sorted([
        # conditional references to the practitioner (NPI) and the organization
        ("enc-1", "pat-1", 9202, datetime(2023, 3, 1, 14), datetime(2023, 3, 1, 14, 45),
         "9999999999", "org-1", None, None),
        # literal references
        ("enc-2", "pat-2", 9203, datetime(2023, 5, 10, 22), datetime(2023, 5, 11, 1, 30),
         "9999999998", "org-2", None, None),
        # us-npi%7C9999999998 and urn:uuid:org-2
        ("enc-3", "pat-2", 9201, datetime(2023, 8, 1, 10), datetime(2023, 8, 4, 12),
         "9999999998", "org-2", "emd", "home"),
        ("enc-4", "pat-3", 5083, datetime(2023, 6, 1, 15), datetime(2023, 6, 1, 15, 20),
         "9999999999", "org-1", None, None),
        ("enc-5", "pat-4", 581476, datetime(2023, 7, 1, 13), datetime(2023, 7, 1, 14),
         "9999999998", "org-2", None, None),
        # subject urn:uuid:pat-5; -04:00 in UTC
        ("enc-6", "pat-5", 9202, datetime(2023, 9, 12, 12), datetime(2023, 9, 12, 12, 50),
         "9999999999", "org-1", None, None),
    ])  # fmt: skip
    assert bulk.query(
        "select provider_source_value, provider_name, npi, gender_concept_id from {cdm}.provider"
    ) == _sorted(
        [
            ("pract-1", "Amara Okafor", "9999999999", 8532),
            ("pract-2", "Erik Lindqvist", "9999999998", 8507),
        ]
    )
    assert bulk.query(
        "select care_site_source_value, care_site_name, place_of_service_source_value "
        "from {cdm}.care_site"
    ) == _sorted(
        [
            ("org-1", "Harbor Community Clinic", "prov"),
            ("org-2", "Riverside General Hospital", "prov"),
        ]
    )


def test_conditions_are_dated_by_their_onset_its_period_or_the_recorded_date(bulk):
    assert bulk.query(
        "select p.person_source_value, condition_source_value, condition_concept_id, "
        "condition_start_datetime, condition_end_datetime, v.visit_source_value "
        f"from {{cdm}}.condition_occurrence as t {PERSON} {VISIT}"
    ) == _sorted([
        # onsetDateTime
        ("pat-1", "44054006", 201826, datetime(2023, 3, 1, 14, 15), None, "enc-1"),
        # onsetPeriod.start and abatementDateTime; SNOMED chosen over the first, ICD coding
        ("pat-2", "10509002", 260139, datetime(2023, 5, 10, 22, 30), datetime(2023, 5, 24),
         "enc-2"),
        # only recordedDate, only ICD-10-CM (not in the demo vocabulary: concept 0)
        ("pat-3", "J06.9", 0, datetime(2023, 6, 1), None, "enc-4"),
        ("pat-5", "59621000", 320128, datetime(2023, 9, 12, 12, 30), None, "enc-6"),
    ])  # fmt: skip


def test_every_panel_component_is_a_measurement_of_its_own(bulk):
    assert bulk.query(
        "select p.person_source_value, measurement_source_value, measurement_concept_id, "
        "measurement_datetime, value_as_number, unit_source_value, unit_concept_id, "
        "range_low, range_high, v.visit_source_value "
        f"from {{cdm}}.measurement as t {PERSON} {VISIT}"
    ) == _sorted([
        # the blood pressure panel of obs-1: the panel itself and both components
        ("pat-1", "4548-4", 3004410, datetime(2023, 3, 1, 14, 20), 7.2, "%", 8554, 4.0, 5.6,
         "enc-1"),
        ("pat-1", "8462-4", 3012888, datetime(2023, 3, 1, 14, 10), 80.0, "mm[Hg]", 8876,
         None, None, "enc-1"),
        ("pat-1", "8480-6", 3004249, datetime(2023, 3, 1, 14, 10), 120.0, "mm[Hg]", 8876,
         None, None, "enc-1"),
        ("pat-1", "85354-9", 36203185, datetime(2023, 3, 1, 14, 10), None, None, None,
         None, None, "enc-1"),
        ("pat-2", "8462-4", 3012888, datetime(2023, 8, 1, 11), 91.0, "mm[Hg]", 8876,
         None, None, "enc-3"),
        # the panel of obs-5, from the gzip'd file
        ("pat-2", "8480-6", 3004249, datetime(2023, 8, 1, 11), 142.0, "mm[Hg]", 8876,
         None, None, "enc-3"),
        ("pat-2", "85354-9", 36203185, datetime(2023, 8, 1, 11), None, None, None,
         None, None, "enc-3"),
        ("pat-2", "8867-4", 3027018, datetime(2023, 5, 10, 22, 5), 110.0, "/min", 8541,
         None, None, "enc-2"),
        # a panel-only record: no value, no components
        ("pat-3", "24360-0", 3001643, datetime(2023, 6, 1, 15, 10), None, None, None,
         None, None, "enc-4"),
        # a local code of a system the spec does not list: kept with concept 0
        ("pat-3", "GLU-POC", 0, datetime(2023, 6, 1, 15, 5), 98.0, "mg/dL", 8840,
         None, None, "enc-4"),
        # unmapped on purpose: 14647-2 is not in the demo vocabulary
        ("pat-5", "14647-2", 0, datetime(2023, 9, 12, 12, 40), 5.2, "mmol/L", 8753,
         None, None, "enc-6"),
    ])  # fmt: skip


def test_coded_results_allergies_and_documents_are_observations(bulk):
    assert bulk.query(
        "select p.person_source_value, observation_source_value, observation_concept_id, "
        "observation_datetime, value_as_string, value_source_value, qualifier_source_value, "
        f"v.visit_source_value from {{cdm}}.observation as t {PERSON} {VISIT}"
    ) == _sorted([
        # an RxNorm allergen stays an observation (concept 0), never a drug exposure
        ("pat-1", "7980", 0, datetime(2023, 3, 1, 14, 5), None, "medication", "high", None),
        # the progress note's document type (not in the demo vocabulary)
        ("pat-1", "11506-3", 0, datetime(2023, 3, 1, 15), None, None, None, "enc-1"),
        ("pat-2", "18842-5", 0, datetime(2023, 8, 4, 12), None, None, None, "enc-3"),
        # valueCodeableConcept: its code and its text
        ("pat-4", "300916003", 4102123, datetime(2023, 7, 1, 13, 15), None, "environment",
         "low", None),
        ("pat-4", "72166-2", 43054909, datetime(2023, 7, 1, 13, 10), "Smokes tobacco daily",
         "449868002", None, "enc-5"),
    ])  # fmt: skip


def test_drugs_come_from_requests_references_administrations_statements_and_vaccines(bulk):
    assert bulk.query(
        "select p.person_source_value, drug_source_value, drug_concept_id, "
        "drug_type_concept_id, drug_exposure_start_datetime, drug_exposure_end_date, "
        "quantity, days_supply, refills, route_source_value, lot_number, pr.npi, "
        f"v.visit_source_value from {{cdm}}.drug_exposure as t {PERSON} {VISIT} {PROVIDER}"
    ) == _sorted([
        # requester by conditional reference; 30 days' supply
        ("pat-1", "860975", 40163924, 32838, datetime(2023, 3, 1, 14, 40), date(2023, 3, 30),
         60.0, 30, 2, "26643006", None, "9999999999", "enc-1"),
        # the administration's effectivePeriod
        ("pat-2", "313782", 1127433, 32818, datetime(2023, 8, 2, 8), date(2023, 8, 2),
         2.0, None, None, "26643006", None, "9999999998", "enc-3"),
        # medicationReference: the RxNorm coding of Medication/med-1
        ("pat-2", "314076", 19080128, 32838, datetime(2023, 8, 4, 11), date(2023, 11, 1),
         90.0, 90, 0, "26643006", None, "9999999998", "enc-3"),
        # CVX is not in the demo vocabulary: concept 0, kept
        ("pat-3", "140", 0, 32818, datetime(2023, 6, 1, 15, 15), date(2023, 6, 1),
         1.0, None, None, None, "FLU2023A", None, "enc-4"),
        # a statement of what the patient takes
        ("pat-5", "197361", 1332419, 32865, datetime(2023, 9, 12), date(2023, 9, 12),
         None, None, None, None, None, None, "enc-6"),
    ])  # fmt: skip


def test_procedures_take_their_times_from_performed_datetime_or_period(bulk):
    assert bulk.query(
        "select p.person_source_value, procedure_source_value, procedure_concept_id, "
        "procedure_datetime, procedure_end_datetime, pr.npi, v.visit_source_value "
        f"from {{cdm}}.procedure_occurrence as t {PERSON} {VISIT} {PROVIDER}"
    ) == _sorted([
        # performedDateTime
        ("pat-1", "430193006", 4326177, datetime(2023, 3, 1, 14, 30), None, None, "enc-1"),
        # performedPeriod.start and .end
        ("pat-2", "73761001", 4249893, datetime(2023, 8, 2, 10), datetime(2023, 8, 2, 11, 30),
         "9999999998", "enc-3"),
    ])  # fmt: skip
    assert bulk.query(
        "select p.person_source_value, device_source_value, device_concept_id, "
        "device_exposure_start_datetime, unique_device_id from {cdm}.device_exposure as t " + PERSON
    ) == [("pat-2", "706004007", 45772840, datetime(2023, 8, 3, 9), "00844588003288")]
    assert bulk.query(
        "select p.person_source_value, payer_plan_period_start_date, "
        "payer_plan_period_end_date, payer_source_value, plan_source_value "
        "from {cdm}.payer_plan_period as t " + PERSON
    ) == [("pat-1", date(2022, 1, 1), date(2023, 12, 31), "Blue Harbor Health Plan", "Gold Plan")]


def test_a_base64_note_is_decoded_into_a_scrubbed_note(bulk):
    assert bulk.query(
        "select p.person_source_value, note_datetime, note_title, note_text, pr.npi, "
        f"v.visit_source_value from {{cdm}}.note as t {PERSON} {VISIT} {PROVIDER}"
    ) == _sorted([
        ("pat-1", datetime(2023, 3, 1, 15), "Progress note",
         "Follow-up for type 2 diabetes; HbA1c 7.2 %. Call the patient at [REDACTED] "
         "about the results.", "9999999999", "enc-1"),
        # the text attachment, not the PDF before it
        ("pat-2", datetime(2023, 8, 4, 12), "Discharge summary",
         "Discharged home in stable condition.", "9999999998", "enc-3"),
    ])  # fmt: skip


# (entry, file in the batch) -> records read, rows produced, loaded, rejected, filtered,
# records without elements
RECONCILIATION = {
    ("allergies", "AllergyIntolerance.ndjson"): (2, 2, 2, 0, 0, 0),
    ("claims", "Claim.ndjson"): (2, 2, 0, 0, 2, 0),
    ("conditions", "Condition.ndjson"): (5, 5, 4, 0, 1, 0),  # cond-5 refuted
    ("coverages", "Coverage.ndjson"): (1, 1, 1, 0, 0, 0),
    ("devices", "Device.ndjson"): (2, 2, 1, 0, 1, 0),  # dev-2 of no patient
    ("documents", "DocumentReference.ndjson"): (2, 2, 2, 0, 0, 0),
    ("encounters", "Encounter.000.ndjson"): (3, 3, 3, 0, 0, 0),
    ("encounters", "Encounter.001.ndjson"): (4, 4, 3, 0, 1, 0),  # enc-7 cancelled
    ("immunizations", "Immunization.ndjson"): (1, 1, 1, 0, 0, 0),
    ("manifest", "manifest.json"): (22, 22, 0, 0, 22, 0),  # its lines
    ("medication_administrations", "MedicationAdministration.ndjson"): (1, 1, 1, 0, 0, 0),
    ("medication_administrations_by_reference", "MedicationAdministration.ndjson"): (
        1, 1, 0, 0, 1, 0,
    ),
    # medrx-1 names its drug, medrx-2 refers to Medication/med-1
    ("medication_requests", "MedicationRequest.ndjson"): (2, 2, 1, 0, 1, 0),
    ("medication_requests_by_reference", "MedicationRequest.ndjson"): (2, 2, 1, 0, 1, 0),
    ("medication_statements", "MedicationStatement.ndjson"): (1, 1, 1, 0, 0, 0),
    ("medication_statements_by_reference", "MedicationStatement.ndjson"): (1, 1, 0, 0, 1, 0),
    ("medications", "Medication.ndjson"): (1, 1, 0, 0, 1, 0),
    # two components of obs-1; obs-2, -3, -4 and -9 have none
    ("observation_components", "Observation/Observation.000.ndjson"): (5, 2, 2, 0, 0, 4),
    # two components of obs-5; obs-6, -7 and -8 have none
    ("observation_components", "Observation/Observation.001.ndjson.gz"): (4, 2, 2, 0, 0, 3),
    ("observations", "Observation/Observation.000.ndjson"): (5, 5, 5, 0, 0, 0),
    ("observations", "Observation/Observation.001.ndjson.gz"): (4, 4, 3, 0, 1, 0),  # obs-8
    ("organizations", "Organization.ndjson"): (2, 2, 2, 0, 0, 0),
    ("patients", "Patient.000.ndjson"): (3, 3, 3, 0, 0, 0),
    ("patients", "Patient.001.ndjson"): (2, 2, 2, 0, 0, 0),
    ("practitioners", "Practitioner.ndjson"): (2, 2, 2, 0, 0, 0),
    ("procedures", "Procedure.ndjson"): (3, 3, 2, 0, 1, 0),  # proc-3 not done
}  # fmt: skip


def _reconciliation(run: Run) -> dict[tuple[str, str], tuple]:
    rows = run.query(
        "select source_file, file_path, rows_read, rows_produced, rows_loaded, rows_rejected, "
        f"rows_filtered, records_empty from stage_{run.site}.reconciliation"
    )
    return {(r[0], r[1].split(f"/{EXPORT.name}/")[-1]): tuple(r[2:]) for r in rows}


def test_every_record_of_every_file_is_accounted_for(bulk):
    assert _reconciliation(bulk) == RECONCILIATION
    assert bulk.query(f"select * from stage_{SITE}.rejects") == []
    assert bulk.query(f"select source_file, rule, rows from stage_{SITE}.flags") == _sorted(
        [
            ("documents", "scrubbed:note", 1),
            ("observations", "unmapped_value:code_system", 1),  # obs-9's local system
        ]
    )
    assert bulk.query(
        f"select source_vocabulary_id, source_code, frequency from stage_{SITE}.unmapped_codes"
    ) == _sorted(
        [
            ("CVX", "140", 1),
            ("ICD10CM", "J06.9", 1),
            ("LOINC", "11506-3", 1),
            ("LOINC", "14647-2", 1),
            ("LOINC", "18842-5", 1),
            ("RxNorm allergen", "7980", 1),
            ("unlisted", "GLU-POC", 1),
        ]
    )


def test_the_batch_is_published(bulk):
    summary = bulk.summary
    assert (summary.status, summary.batch_id) == ("published", EXPORT.name)
    assert summary.rejects_by_rule == {}
    assert bulk.query("select site, batch_id, status from results.run_log") == _sorted(
        [(SITE, EXPORT.name, "published")]
    )
    assert {t: n for t, n in summary.rows.items() if n} == {
        "person": 5,
        "death": 1,
        "observation_period": 5,
        "visit_occurrence": 6,
        "condition_occurrence": 4,
        "condition_era": 3,
        "drug_exposure": 5,
        "drug_era": 3,
        "procedure_occurrence": 2,
        "device_exposure": 1,
        "measurement": 11,
        "observation": 5,
        "note": 2,
        "location": 5,
        "care_site": 2,
        "provider": 2,
        "payer_plan_period": 1,
        "metadata": 2,
        "cdm_source": 1,
    }


def test_no_identifier_of_a_patient_reaches_the_warehouse(bulk):
    identifiers = ["MRN-PAT-", "999-00-000", "555-010-000", "Example Street", "pat-"]
    for resource in (EXPORT / "Patient.000.ndjson", EXPORT / "Patient.001.ndjson"):
        for line in resource.read_text().splitlines():
            patient = json.loads(line)
            identifiers += [patient["name"][0]["family"], *patient["name"][0]["given"]]
    con = duckdb.connect(bulk.target.location, read_only=True)
    try:
        values = []
        for schema, table, column in con.execute(
            "select schema_name, table_name, column_name from duckdb_columns() "
            "where data_type = 'VARCHAR' and not internal"
        ).fetchall():
            values += [
                v
                for (v,) in con.execute(
                    f'select distinct "{column}" from "{schema}"."{table}" '
                    f'where "{column}" is not null'
                ).fetchall()
            ]
    finally:
        con.close()
    text = "\x00".join(values)
    assert [i for i in identifiers if i in text] == []


def test_a_hospital_spec_that_only_extends_the_bundled_one_publishes_the_export(
    bulk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_demo_warehouse
):
    target = make_demo_warehouse(tmp_path)  # the demo vocabulary, from the bundled mappings
    sites = tmp_path / "mappings" / "sites"
    shutil.copytree(settings.sites_dir(), sites)
    (sites / f"{HOSPITAL}.yaml").write_text(
        f"site: {HOSPITAL}\nextends: {SITE}\nid_block: 12\n", encoding="utf-8"
    )
    monkeypatch.setenv("OMOP_ETL_MAPPINGS", str(tmp_path / "mappings"))
    batch = tmp_path / "export" / EXPORT.name
    shutil.copytree(EXPORT, batch)
    hospital = Run(HOSPITAL, target, run_site(HOSPITAL, batch, target))
    assert hospital.summary.status == "published"
    assert hospital.summary.rows == bulk.summary.rows
    assert _reconciliation(hospital) == RECONCILIATION
    # the hospital's own id block, and its own pseudonyms (its own secret)
    assert hospital.query("select distinct person_id >> 27 from {cdm}.person") == [(12,)]
    assert hospital.query("select person_source_value from {cdm}.person") == _sorted(
        [(p,) for p in PATIENTS]
    )
    assert {pseudonym(p, site_key(HOSPITAL)) for p in PATIENTS}.isdisjoint(
        pseudonym(p, site_key(SITE)) for p in PATIENTS
    )


# -- a broken note, a note with a US phone number ---------------------------------------


def _document(doc_id: str, patient: str, data: str) -> dict:
    return {
        "resourceType": "DocumentReference",
        "id": doc_id,
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "date": "2023-09-12T09:00:00-04:00",
        "content": [{"attachment": {"contentType": "text/plain", "data": data}}],
    }


@pytest.fixture(scope="module")
def notes(tmp_path_factory: pytest.TempPathFactory, make_demo_warehouse) -> Run:
    root = tmp_path_factory.mktemp("fhir_bulk_notes")
    export = root / "source" / EXPORT.name
    shutil.copytree(EXPORT, export)
    us_phone = base64.b64encode(b"Daughter can be reached at (617) 555-0123.").decode()
    with open(export / "DocumentReference.ndjson", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(_document("doc-3", "pat-5", "not base64!")) + "\n")
        fh.write(json.dumps(_document("doc-4", "pat-5", us_phone)) + "\n")
    return _run(root, SITE, make_demo_warehouse, export)


def test_a_note_that_is_not_base64_is_counted_under_its_rule_and_the_run_goes_on(notes):
    assert notes.summary.status == "published"
    assert _reconciliation(notes)[("documents", "DocumentReference.ndjson")] == (
        4, 4, 3, 0, 1, 0,
    )  # fmt: skip
    assert notes.query("select count(*) from {cdm}.note") == [(3,)]


def test_a_us_phone_number_in_a_note_is_scrubbed(notes):
    texts = [t for (t,) in notes.query("select note_text from {cdm}.note")]
    assert not [t for t in texts if "555-0123" in t]
