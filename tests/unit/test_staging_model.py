"""The staging model covers what sources carry (issue 10, requirement 6).

Every column of every CDM v5.4 table the pipeline builds (the OHDSI field-level spec)
is filled from a staging field, derived by the pipeline, or a deliberate exception with
its reason; every staging field fills a column or says why it does not. The CDM SELECT
of a table must really read the fields named for it. Then, on the tiny site, a source
value of each field wired for this requirement reaches its CDM column exactly.
"""

from __future__ import annotations

import csv
import re
import textwrap
from datetime import date
from pathlib import Path

import duckdb

from omop_etl.staging import TARGETS
from transforms.runner import CDM_TABLES_WRITTEN, SQL_DIR

ROOT = Path(__file__).resolve().parents[2]
CDM_SPEC = ROOT / "transforms" / "cdm" / "OMOP_CDMv5.4_Field_Level.csv"

# --------------------------------------------------------------------------------------
# The coverage declaration
# --------------------------------------------------------------------------------------

# CDM table.column -> the staging field(s) ("target.field") its SELECT reads.
FILLED: dict[str, str | tuple[str, ...]] = {
    "person.gender_concept_id": "person.gender_concept_id",
    "person.birth_datetime": "person.birth_datetime",
    "person.race_concept_id": "person.race_concept_id",
    "person.ethnicity_concept_id": "person.ethnicity_concept_id",
    "person.person_source_value": "person.person_source_value",
    "person.gender_source_value": "person.gender_source_value",
    "person.race_source_value": "person.race_source_value",
    "person.ethnicity_source_value": "person.ethnicity_source_value",
    "death.death_datetime": "person.death_datetime",
    "death.death_type_concept_id": "person.death_type_concept_id",
    "death.cause_source_value": "person.death_cause_source_value",
    "visit_occurrence.visit_concept_id": "visit.visit_concept_id",
    "visit_occurrence.visit_type_concept_id": "visit.type_concept_id",
    "visit_occurrence.visit_source_value": "visit.visit_source_value",
    "visit_occurrence.admitted_from_concept_id": "visit.admitted_from_concept_id",
    "visit_occurrence.admitted_from_source_value": "visit.admitted_from_source_value",
    "visit_occurrence.discharged_to_concept_id": "visit.discharged_to_concept_id",
    "visit_occurrence.discharged_to_source_value": "visit.discharged_to_source_value",
    "visit_detail.visit_detail_concept_id": "visit.visit_concept_id",
    "visit_detail.visit_detail_start_datetime": "visit.start_datetime",
    "visit_detail.visit_detail_type_concept_id": "visit.type_concept_id",
    "visit_detail.visit_detail_source_value": "visit.visit_source_value",
    "visit_detail.admitted_from_concept_id": "visit.admitted_from_concept_id",
    "visit_detail.admitted_from_source_value": "visit.admitted_from_source_value",
    "visit_detail.discharged_to_concept_id": "visit.discharged_to_concept_id",
    "visit_detail.discharged_to_source_value": "visit.discharged_to_source_value",
    "condition_occurrence.condition_start_datetime": "event.start_datetime",
    "condition_occurrence.condition_end_datetime": "event.end_datetime",
    "condition_occurrence.condition_type_concept_id": "event.type_concept_id",
    "condition_occurrence.condition_status_concept_id": "event.status_concept_id",
    "condition_occurrence.stop_reason": "event.stop_reason",
    "condition_occurrence.condition_source_value": "event.code",
    "condition_occurrence.condition_status_source_value": "event.status_source_value",
    "drug_exposure.drug_exposure_start_datetime": "event.start_datetime",
    "drug_exposure.drug_exposure_end_datetime": "event.end_datetime",
    "drug_exposure.drug_type_concept_id": "event.type_concept_id",
    "drug_exposure.stop_reason": "event.stop_reason",
    "drug_exposure.refills": "event.refills",
    "drug_exposure.quantity": "event.quantity",
    "drug_exposure.days_supply": "event.days_supply",
    "drug_exposure.sig": "event.sig",
    "drug_exposure.route_concept_id": "event.route_concept_id",
    "drug_exposure.lot_number": "event.lot_number",
    "drug_exposure.drug_source_value": "event.code",
    "drug_exposure.route_source_value": "event.route_source_value",
    "drug_exposure.dose_unit_source_value": "event.unit_source_value",
    "procedure_occurrence.procedure_datetime": "event.start_datetime",
    "procedure_occurrence.procedure_end_datetime": "event.end_datetime",
    "procedure_occurrence.procedure_type_concept_id": "event.type_concept_id",
    # an event's qualifier is a procedure's modifier, an observation's qualifier
    "procedure_occurrence.modifier_concept_id": "event.qualifier_concept_id",
    "procedure_occurrence.quantity": "event.quantity",
    "procedure_occurrence.procedure_source_value": "event.code",
    "procedure_occurrence.modifier_source_value": "event.qualifier_source_value",
    "device_exposure.device_exposure_start_datetime": "event.start_datetime",
    "device_exposure.device_exposure_end_datetime": "event.end_datetime",
    "device_exposure.device_type_concept_id": "event.type_concept_id",
    "device_exposure.unique_device_id": "event.unique_device_id",
    "device_exposure.quantity": "event.quantity",
    "device_exposure.device_source_value": "event.code",
    "device_exposure.unit_source_value": "event.unit_source_value",
    "measurement.measurement_datetime": "event.start_datetime",
    "measurement.measurement_type_concept_id": "event.type_concept_id",
    "measurement.operator_concept_id": "event.operator_concept_id",
    "measurement.value_as_number": "event.value_as_number",
    # the code's 'Maps to value' (work/04_event.sql), else the spec's value map
    "measurement.value_as_concept_id": "event.value_as_concept_id",
    "measurement.range_low": "event.range_low",
    "measurement.range_high": "event.range_high",
    "measurement.measurement_source_value": "event.code",
    "measurement.unit_source_value": "event.unit_source_value",
    "measurement.value_source_value": "event.value_source_value",
    "observation.observation_datetime": "event.start_datetime",
    "observation.observation_type_concept_id": "event.type_concept_id",
    "observation.value_as_number": "event.value_as_number",
    "observation.value_as_string": "event.value_as_string",
    "observation.value_as_concept_id": "event.value_as_concept_id",
    "observation.qualifier_concept_id": "event.qualifier_concept_id",
    "observation.observation_source_value": "event.code",
    "observation.unit_source_value": "event.unit_source_value",
    "observation.qualifier_source_value": "event.qualifier_source_value",
    "observation.value_source_value": "event.value_source_value",
    "note.note_datetime": "event.start_datetime",
    "note.note_type_concept_id": "event.type_concept_id",
    "note.note_class_concept_id": "event.note_class_concept_id",
    "note.note_title": ("event.note_title", "event.code_name"),  # else the code's name
    "note.note_text": "event.note",
    "note.language_concept_id": "event.note_language_concept_id",
    "note.note_source_value": "event.code",
    "location.city": ("person.city", "care_site.city"),
    "location.state": ("person.state", "care_site.state"),
    "location.zip": ("person.zip", "care_site.zip"),
    "location.county": ("person.county", "care_site.county"),
    "location.country_source_value": ("person.country", "care_site.country"),
    "care_site.care_site_name": "care_site.care_site_name",
    "care_site.place_of_service_concept_id": "care_site.place_of_service_concept_id",
    "care_site.care_site_source_value": "care_site.care_site_source_value",
    "care_site.place_of_service_source_value": "care_site.place_of_service_source_value",
    "provider.provider_name": "provider.provider_name",
    "provider.npi": "provider.npi",
    "provider.specialty_concept_id": "provider.specialty_concept_id",
    "provider.year_of_birth": "provider.year_of_birth",
    "provider.gender_concept_id": "provider.gender_concept_id",
    "provider.provider_source_value": "provider.provider_source_value",
    "provider.specialty_source_value": "provider.specialty_source_value",
    "provider.gender_source_value": "provider.gender_source_value",
    "payer_plan_period.payer_concept_id": "payer_plan.payer_concept_id",
    "payer_plan_period.payer_source_value": "payer_plan.payer_source_value",
    "payer_plan_period.plan_concept_id": "payer_plan.plan_concept_id",
    "payer_plan_period.plan_source_value": "payer_plan.plan_source_value",
    "payer_plan_period.sponsor_concept_id": "payer_plan.sponsor_concept_id",
    "payer_plan_period.sponsor_source_value": "payer_plan.sponsor_source_value",
    "payer_plan_period.family_source_value": "payer_plan.family_source_value",
    "payer_plan_period.stop_reason_concept_id": "payer_plan.stop_reason_concept_id",
    "payer_plan_period.stop_reason_source_value": "payer_plan.stop_reason_source_value",
    "cost.cost_type_concept_id": "cost.type_concept_id",
    "cost.currency_concept_id": "cost.currency_concept_id",
    "cost.total_charge": "cost.total_charge",
    "cost.total_cost": "cost.total_cost",
    "cost.total_paid": "cost.total_paid",
    "cost.paid_by_payer": "cost.paid_by_payer",
    "cost.paid_by_patient": "cost.paid_by_patient",
    "cost.paid_patient_copay": "cost.paid_patient_copay",
    "cost.paid_patient_coinsurance": "cost.paid_patient_coinsurance",
    "cost.paid_patient_deductible": "cost.paid_patient_deductible",
    "cost.paid_by_primary": "cost.paid_by_primary",
    "cost.paid_ingredient_cost": "cost.paid_ingredient_cost",
    "cost.paid_dispensing_fee": "cost.paid_dispensing_fee",
    "cost.amount_allowed": "cost.amount_allowed",
    "cost.drg_concept_id": "cost.drg_concept_id",
    "cost.drg_source_value": "cost.drg_source_value",
}

_ID = "the row's CDM id, from the site's key map (stable natural key)"
_PERSON = "the id of the row's person_source_value"
_VISIT = "the visit_occurrence id of the row's visit_source_value"
_DETAIL = "the visit_detail id of the row's visit_source_value"
_PROVIDER = "the id of the row's provider_source_value"
_CARE_SITE = "the id of the row's care_site_source_value"
_CONCEPT = "the standard concept of event.code in event.code_system (work/02_concept_lookup)"
_SOURCE_CONCEPT = "the source concept of event.code in event.code_system (code lookup)"
_UNIT = "the UCUM concept of event.unit_source_value (work/03_unit_lookup)"
_START = "the date of event.start_datetime"
_END = "the date of event.end_datetime"
_EVENT_IDS = {
    "person_id": _PERSON,
    "provider_id": _PROVIDER,
    "visit_occurrence_id": _VISIT,
    "visit_detail_id": _DETAIL,
}


def _event_table(table: str, prefix: str, *, end: bool = True, unit: bool = False) -> dict:
    derived = {
        f"{table}_id": _ID + " (event row and target concept)",
        f"{prefix}_concept_id": _CONCEPT,
        f"{prefix}_source_concept_id": _SOURCE_CONCEPT,
        **_EVENT_IDS,
    }
    if unit:
        derived["unit_concept_id"] = _UNIT
    return {f"{table}.{c}": why for c, why in derived.items()}


# CDM table.column -> what the pipeline derives it from.
DERIVED: dict[str, str] = {
    "person.person_id": _ID,
    "person.year_of_birth": "the year of person.birth_datetime",
    "person.month_of_birth": "the month of person.birth_datetime",
    "person.day_of_birth": "the day of person.birth_datetime",
    "person.location_id": "the location of the person's city / state / zip / county / country",
    "person.provider_id": _PROVIDER,
    "person.care_site_id": _CARE_SITE,
    "death.person_id": _PERSON,
    "death.death_date": "the date of person.death_datetime",
    "visit_occurrence.visit_occurrence_id": _ID + " (the visit's first encounter)",
    "visit_occurrence.person_id": _PERSON,
    "visit_occurrence.visit_start_date": "the date of the visit's start",
    "visit_occurrence.visit_start_datetime": "the first visit.start_datetime of its encounters",
    "visit_occurrence.visit_end_date": "the date of the visit's end",
    "visit_occurrence.visit_end_datetime": "the last end of its encounters (end, else start)",
    "visit_occurrence.provider_id": _PROVIDER,
    "visit_occurrence.care_site_id": _CARE_SITE,
    "visit_occurrence.preceding_visit_occurrence_id": "the person's previous visit by start",
    "visit_detail.visit_detail_id": _ID,
    "visit_detail.person_id": _PERSON,
    "visit_detail.visit_detail_start_date": "the date of visit.start_datetime",
    "visit_detail.visit_detail_end_date": "the date of visit_detail_end_datetime",
    "visit_detail.visit_detail_end_datetime": "visit.end_datetime, else its start",
    "visit_detail.provider_id": _PROVIDER,
    "visit_detail.care_site_id": _CARE_SITE,
    "visit_detail.preceding_visit_detail_id": "the previous encounter of the same visit",
    "visit_detail.parent_visit_detail_id": "the detail id of visit.parent_visit_source_value",
    "visit_detail.visit_occurrence_id": "the visit the encounter belongs to",
    **_event_table("condition_occurrence", "condition"),
    "condition_occurrence.condition_start_date": _START,
    "condition_occurrence.condition_end_date": _END,
    **_event_table("drug_exposure", "drug"),
    "drug_exposure.drug_exposure_start_date": _START,
    "drug_exposure.drug_exposure_end_date": "the source end, else start + days_supply - 1, "
    "else the start (OHDSI convention)",
    "drug_exposure.verbatim_end_date": _END + ", the end as the source gives it",
    **_event_table("procedure_occurrence", "procedure"),
    "procedure_occurrence.procedure_date": _START,
    "procedure_occurrence.procedure_end_date": _END,
    **_event_table("device_exposure", "device", unit=True),
    "device_exposure.device_exposure_start_date": _START,
    "device_exposure.device_exposure_end_date": _END,
    **_event_table("measurement", "measurement", unit=True),
    "measurement.measurement_date": _START,
    "measurement.measurement_time": "the time of day of event.start_datetime",
    **_event_table("observation", "observation", unit=True),
    "observation.observation_date": _START,
    "note.note_id": _ID + " (the event row that holds the note)",
    **{f"note.{c}": why for c, why in _EVENT_IDS.items()},
    "note.note_date": _START,
    "location.location_id": _ID + " (the distinct address)",
    "location.location_source_value": "the address as exported: city, state, zip, county",
    "care_site.care_site_id": _ID,
    "care_site.location_id": "the location of the care site's address",
    "provider.provider_id": _ID,
    "provider.care_site_id": _CARE_SITE,
    "payer_plan_period.payer_plan_period_id": _ID + " (the coverage row's content)",
    "payer_plan_period.person_id": _PERSON,
    "payer_plan_period.payer_plan_period_start_date": "the date of payer_plan.start_datetime",
    "payer_plan_period.payer_plan_period_end_date": "the date of payer_plan.end_datetime, "
    "else the start",
    "cost.cost_id": _ID + " (the encounter)",
    "cost.cost_event_id": "the visit_occurrence id of cost.visit_source_value",
    "cost.cost_domain_id": "'Visit': cost lines are summed per encounter",
    "cost.payer_plan_period_id": "the patient's coverage on the visit's start date",
}

# Tables the pipeline derives whole from the CDM it built (and the run's metadata).
DERIVED_TABLES: dict[str, str] = {
    "observation_period": "OHDSI EHR rule over the person's dated records (type 32817 EHR)",
    "condition_era": "OHDSI condition eras over condition_occurrence",
    "drug_era": "OHDSI drug eras over drug_exposure, by RxNorm ingredient",
    "dose_era": "OHDSI dose eras over drug_exposure, where drug_strength allows",
    "cdm_source": "the run: site description, spec digest, batch dates, versions",
    "metadata": "the run's provenance: batch id, spec digest",
}

_NO_SOURCE_CONCEPT = (
    "0: a value-mapped source value is a site-local code, not a concept of an OMOP "
    "vocabulary (event codes get their source concept from the code lookup)"
)
_EVENT_LINK = (
    "NULL: events are keyed by their content and have no source id another record could "
    "name; the export formats in scope link results to no other event"
)
# CDM table.column -> why no staging field fills it (written as a constant: 0 or NULL).
EXCEPTIONS: dict[str, str] = {
    "person.gender_source_concept_id": _NO_SOURCE_CONCEPT,
    "person.race_source_concept_id": _NO_SOURCE_CONCEPT,
    "person.ethnicity_source_concept_id": _NO_SOURCE_CONCEPT,
    "death.cause_concept_id": "0: the cause is kept as its source value; the code lookup "
    "(work/02_concept_lookup.sql) maps the event stream's codes only",
    "death.cause_source_concept_id": "0: as cause_concept_id, the cause code is not looked up",
    "visit_occurrence.visit_source_concept_id": _NO_SOURCE_CONCEPT,
    "visit_detail.visit_detail_source_concept_id": _NO_SOURCE_CONCEPT,
    "device_exposure.production_id": "NULL: the UDI production identifier is the device's "
    "serial or lot number; a serial number identifies the person who carries the device "
    "(HIPAA Safe Harbor lists device serial numbers): deliberately never staged",
    "device_exposure.unit_source_concept_id": "0: unit strings are matched to standard UCUM "
    "concepts (unit_concept_id); no unit source vocabulary",
    "measurement.unit_source_concept_id": "0: as device_exposure.unit_source_concept_id",
    "measurement.measurement_event_id": _EVENT_LINK,
    "measurement.meas_event_field_concept_id": _EVENT_LINK,
    "observation.observation_event_id": _EVENT_LINK,
    "observation.obs_event_field_concept_id": _EVENT_LINK,
    "note.encoding_concept_id": "0: not a source fact (the CDM holds the text decoded, "
    "whatever the export's encoding): 32678 UTF-8 would be right, but the demo "
    "vocabulary lacks it",
    "note.note_event_id": "NULL: the note's own event would be it, but one event can give "
    "two CDM rows, and the field concepts (1147127 ...) are not in the demo vocabulary",
    "note.note_event_field_concept_id": "NULL: as note_event_id",
    "location.address_1": "NULL: a street address is a direct identifier; it never leaves "
    "the export (DESIGN: privacy)",
    "location.address_2": "NULL: as address_1",
    "location.country_concept_id": "0: the location rows are keyed in work/06_location.sql "
    "on the staged address; a country concept needs a field there (not yet staged)",
    "location.latitude": "NULL: a patient's geocode pinpoints the home (finer than the "
    "address level the design allows); no export in scope geocodes care sites",
    "location.longitude": "NULL: as latitude",
    "provider.dea": "NULL: the US DEA registration of a prescriber, a credential of the "
    "person (unlike the public NPI) that no export in scope carries",
    "provider.specialty_source_concept_id": _NO_SOURCE_CONCEPT,
    "provider.gender_source_concept_id": _NO_SOURCE_CONCEPT,
    "payer_plan_period.payer_source_concept_id": _NO_SOURCE_CONCEPT,
    "payer_plan_period.plan_source_concept_id": _NO_SOURCE_CONCEPT,
    "payer_plan_period.sponsor_source_concept_id": _NO_SOURCE_CONCEPT,
    "payer_plan_period.stop_reason_source_concept_id": _NO_SOURCE_CONCEPT,
    "cost.revenue_code_concept_id": "0: a revenue code belongs to one cost line, and cost "
    "lines are summed per encounter",
    "cost.revenue_code_source_value": "NULL: as revenue_code_concept_id",
}

# Staging fields that fill no CDM column themselves, and what they are for.
STAGING_ONLY: dict[str, str] = {
    "person.provider_source_value": "person.provider_id",
    "person.care_site_source_value": "person.care_site_id",
    "visit.person_source_value": "person_id of the visit",
    "visit.end_datetime": "the visits' ends (the last of a stay's encounters, else the start)",
    "visit.visit_class_source_value": "the encounter class as exported, for contracts and QA "
    "(visit_concept_id is its mapped form)",
    "visit.parent_visit_source_value": "makes the encounter a visit_detail of its parent",
    "visit.provider_source_value": "provider_id of the visit",
    "visit.care_site_source_value": "care_site_id of the visit",
    "event.person_source_value": "person_id of the event",
    "event.visit_source_value": "visit ids of the event",
    "event.provider_source_value": "provider_id of the event",
    "event.default_domain": "the CDM table of a code that maps to nothing",
    "event.code_system": "where the code is looked up",
    "event.operator_source_value": "the CDM keeps a result's operator as a concept only "
    "(operator_concept_id, from the spec's value map of it)",
    "provider.care_site_source_value": "provider.care_site_id",
    "payer_plan.person_source_value": "person_id of the coverage",
    "payer_plan.start_datetime": "payer_plan_period_start_date",
    "payer_plan.end_datetime": "payer_plan_period_end_date",
    "cost.visit_source_value": "cost_event_id (the encounter's visit)",
}

# Fields that may carry identifiers a clinician typed: mapped only with `free_text: scrub`.
FREE_TEXT = {"event.value_as_string", "event.note", "event.sig", "event.note_title"}


# --------------------------------------------------------------------------------------
# The coverage tests
# --------------------------------------------------------------------------------------


def _cdm_columns() -> dict[str, list[str]]:
    """Table -> its columns, per the OHDSI field-level spec, for the tables built."""
    columns: dict[str, list[str]] = {}
    with open(CDM_SPEC, encoding="utf-8-sig", newline="") as fh:
        for row in csv.DictReader(fh):
            table = row["cdmTableName"].lower()
            if table in CDM_TABLES_WRITTEN:
                columns.setdefault(table, []).append(row["cdmFieldName"].lower())
    return columns


def _fields(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else value


def select_list(sql: str) -> dict[str, str]:
    """Output column -> its expression, of a CDM file's final SELECT (of a union: its
    first part), comments and string literals blanked."""
    text = re.sub(r"--[^\n]*", "", sql)
    text = re.sub(r"'(?:[^']|'')*'", "''", text)
    depth, start, end, items = 0, None, None, []
    for m in re.finditer(r"\(|\)|,|\bselect\b|\bfrom\b|\bunion\b", text, re.IGNORECASE):
        token = m.group().lower()
        if token in ("(", ")"):
            depth += 1 if token == "(" else -1
        elif depth:
            continue
        elif start is None:
            start = m.end() if token == "select" else None
        elif token == ",":
            items.append(text[start : m.start()])
            start = m.end()
        else:  # the select list ends at its FROM (or the union's next part)
            end = m.start()
            break
    items.append(text[start:end])
    out = {}
    for item in (" ".join(i.split()) for i in items):
        aliased = re.fullmatch(r"(.+) as (\w+)", item, re.IGNORECASE)
        name = aliased.group(2) if aliased else item.rsplit(".", 1)[-1]
        out[name.lower()] = aliased.group(1) if aliased else item
    return out


def _reads(expression: str, field: str) -> bool:
    """Whether a SELECT expression reads a column named ``field`` (of any relation)."""
    return re.search(rf"(?<![\w.])(?:\w+\.)?{re.escape(field)}\b", expression) is not None


def _selects() -> dict[str, dict[str, str]]:
    return {
        t: select_list((SQL_DIR / "cdm" / f"{t}.sql").read_text(encoding="utf-8"))
        for t in CDM_TABLES_WRITTEN
    }


def test_the_built_tables_are_those_of_the_cdm_sql_files():
    files = {p.stem for p in (SQL_DIR / "cdm").glob("*.sql")}
    assert set(CDM_TABLES_WRITTEN) == files
    assert set(_cdm_columns()) == files  # every built table is in the OHDSI spec


def test_each_cdm_select_writes_exactly_the_spec_columns():
    """The parse the coverage tests rely on: one output per spec column, none else."""
    columns = _cdm_columns()
    for table, select in _selects().items():
        assert sorted(select) == sorted(columns[table]), table


def test_every_cdm_column_is_filled_derived_or_a_declared_exception():
    declared = [
        *FILLED,
        *DERIVED,
        *EXCEPTIONS,
        *(f"{t}.{c}" for t, cs in _cdm_columns().items() if t in DERIVED_TABLES for c in cs),
    ]
    twice = sorted({c for c in declared if declared.count(c) > 1})
    assert twice == [], "columns classified more than once"
    wanted = {f"{t}.{c}" for t, cs in _cdm_columns().items() for c in cs}
    assert sorted(wanted - set(declared)) == [], (
        "CDM columns with no staging field, no derivation and no declared exception: "
        "add a staging field (omop_etl/staging.py) and wire it, or declare why not"
    )
    assert sorted(set(declared) - wanted) == [], "declared columns not in the CDM spec"
    assert all(DERIVED.values()) and all(EXCEPTIONS.values())  # every reason given


def test_every_filled_column_reads_existing_staging_fields_in_its_select():
    selects = _selects()
    missing, unread = [], []
    for column, value in FILLED.items():
        table, name = column.split(".")
        for qualified in _fields(value):
            target, field = qualified.split(".")
            if field not in TARGETS.get(target, {}):
                missing.append(qualified)
            elif not _reads(selects[table][name], field):
                unread.append(f"{column} <- {qualified}: {selects[table][name]}")
    assert missing == [], "staging fields the coverage names but omop_etl.staging lacks"
    assert unread == [], "CDM columns whose SELECT does not read their staging field"


def test_every_exception_is_written_as_a_constant():
    selects = _selects()
    constant = re.compile(r"0|null|cast\(null as \w+\)", re.IGNORECASE)
    filled = []
    for column in EXCEPTIONS:
        table, name = column.split(".")
        if not constant.fullmatch(selects[table][name].strip()):
            filled.append(f"{column}: {selects[table][name]}")
    assert filled == [], "exceptions that are filled after all: move them to FILLED"


def test_every_staging_field_fills_a_cdm_column_or_says_why_not():
    fields = {f"{t}.{f}" for t, fs in TARGETS.items() for f in fs}
    used = {f for value in FILLED.values() for f in _fields(value)}
    assert sorted(fields - used - set(STAGING_ONLY)) == [], (
        "staging fields that reach no CDM column: wire them, or say why in STAGING_ONLY"
    )
    assert sorted(set(STAGING_ONLY) - fields) == []
    assert sorted(set(STAGING_ONLY) & used) == []


def test_the_free_text_fields_are_the_declared_ones():
    marked = {f"{t}.{f}" for t, fs in TARGETS.items() for f, spec in fs.items() if spec.free_text}
    assert marked == FREE_TEXT


# --------------------------------------------------------------------------------------
# End to end on the tiny site: each newly wired field reaches its CDM column
# --------------------------------------------------------------------------------------

# Concepts the tiny vocabulary lacks (the CDM's foreign keys must find them). Real OMOP
# ids where the concept is well known; 70xx ids are test stand-ins like the tiny ones.
EXTRA_CONCEPTS = [
    (32902, "Primary diagnosis", "Condition Status", "Condition Status", "Condition Status"),
    (32908, "Secondary diagnosis", "Condition Status", "Condition Status", "Condition Status"),
    (8536, "Home", "Visit", "CMS Place of Service", "Visit"),
    (8863, "Skilled Nursing Facility", "Visit", "CMS Place of Service", "Visit"),
    (32815, "Death Certificate", "Type Concept", "Type Concept", "Type Concept"),
    (4132161, "Oral", "Route", "SNOMED", "Qualifier Value"),
    (4171756, "<", "Meas Value Operator", "SNOMED", "Qualifier Value"),
    (4172704, ">", "Meas Value Operator", "SNOMED", "Qualifier Value"),
    (9191, "Positive", "Meas Value", "SNOMED", "Qualifier Value"),
    (4180186, "English language", "Language", "SNOMED", "Qualifier Value"),
    (7001, "Note kind one", "Meas Value", "LOINC", "Doc Kind"),
    (7101, "Modifier one", "Procedure", "HCPCS", "HCPCS Modifier"),
    (7102, "Qualifier one", "Observation", "SNOMED", "Qualifier Value"),
    (7201, "Payer one", "Payer", "SOPT", "Payer"),
    (7202, "Plan one", "Plan", "Plan", "Plan"),
    (7203, "Sponsor one", "Sponsor", "Sponsor", "Sponsor"),
    (7204, "Stop reason one", "Plan Stop Reason", "Plan Stop Reason", "Plan Stop Reason"),
    (7301, "DRG one", "Observation", "DRG", "MS-DRG"),
]

SPEC = """
site: tiny
description: tiny test site, with every field a CDM column needs
id_block: 3
max_reject_rate: 1.0
code_forms: {SNOMED: ".+", LOINC: ".+", RxNorm: ".+"}
defaults:
  date_format: "%Y-%m-%d"
  datetime_format: "%Y-%m-%d %H:%M"
value_maps:
  visit: {IP: 9201, OP: 9202, ER: 9203}
  place: {home: 8536, snf: 8863}
  dx_status: {main: 32902, sub: 32908}
  route: {PO: 4132161}
  operator: {"<": 4171756, ">": 4172704}
  result: {pos: 9191}
  modifier: {"50": 7101, severe: 7102}
  note_kind: {discharge: 7001}
  language: {en: 4180186}
  payer: {NHI: 7201}
  plan: {basic: 7202}
  sponsor: {employer: 7203}
  stop_reason: {moved: 7204}
  drg: {"470": 7301}
files:
  - name: patients
    pattern: patients.csv
    target: person
    columns:
      person_source_value: id
      birth_datetime: {column: birth, format: date}
      death_datetime: {column: death, format: date}
      death_type_concept_id: death_type
      death_cause_source_value: death_cause
  - name: visits
    pattern: visits.csv
    target: visit
    type_concept_id: 32817
    columns:
      visit_source_value: id
      person_source_value: patient
      start_datetime: start
      end_datetime: stop
      visit_concept_id: {column: class, map: visit, default: 0}
      admitted_from_concept_id: {column: came_from, map: place, default: 0}
      admitted_from_source_value: came_from
      discharged_to_concept_id: {column: went_to, map: place, default: 0}
      discharged_to_source_value: went_to
  - name: events
    pattern: events.csv
    target: event
    domain: Condition
    type_concept_id: 32817
    columns: &event
      person_source_value: patient
      code: code
      code_system: system
      code_name: name
      start_datetime: {column: start, format: date}
      end_datetime: {column: stop, format: date}
      value_as_number: value
      value_as_concept_id: {column: result, map: result}
      value_source_value: result
      operator_concept_id: {column: op, map: operator}
      operator_source_value: op
      days_supply: days
      sig: {column: sig, free_text: scrub}
      route_concept_id: {column: route, map: route, default: 0}
      route_source_value: route
      status_concept_id: {column: status, map: dx_status, default: 0}
      status_source_value: status
      qualifier_concept_id: {column: qualifier, map: modifier, default: 0}
      qualifier_source_value: qualifier
      note: {column: note, free_text: scrub}
      note_title: {column: title, free_text: scrub}
      note_class_concept_id: {column: note_kind, map: note_kind, default: 0}
      note_language_concept_id: {column: lang, map: language, default: 0}
  - name: drugs
    pattern: drugs.csv
    target: event
    domain: Drug
    type_concept_id: 32817
    columns: *event
  - name: procedures
    pattern: procedures.csv
    target: event
    domain: Procedure
    type_concept_id: 32817
    columns: *event
  - name: coverage
    pattern: coverage.csv
    target: payer_plan
    columns:
      person_source_value: patient
      start_datetime: {column: start, format: date}
      end_datetime: {column: stop, format: date}
      payer_concept_id: {column: payer, map: payer, default: 0}
      payer_source_value: payer
      plan_concept_id: {column: plan, map: plan, default: 0}
      plan_source_value: plan
      sponsor_concept_id: {column: sponsor, map: sponsor, default: 0}
      sponsor_source_value: sponsor
      stop_reason_concept_id: {column: stop_reason, map: stop_reason, default: 0}
      stop_reason_source_value: stop_reason
  - name: charges
    pattern: charges.csv
    target: cost
    type_concept_id: 32810
    columns:
      visit_source_value: visit
      total_charge: amount
      paid_patient_coinsurance: coinsurance
      paid_patient_deductible: deductible
      paid_by_primary: primary
      paid_ingredient_cost: ingredient
      paid_dispensing_fee: dispensing
      drg_concept_id: {column: drg, map: drg}
      drg_source_value: drg
"""

_EVENT_COLUMNS = [
    "patient",
    "code",
    "system",
    "name",
    "start",
    "stop",
    "value",
    "result",
    "op",
    "days",
    "sig",
    "route",
    "status",
    "qualifier",
    "note",
    "title",
    "note_kind",
    "lang",
]
FILES = {
    "patients": ["id", "birth", "death", "death_type", "death_cause"],
    "visits": ["id", "patient", "start", "stop", "class", "came_from", "went_to"],
    "events": _EVENT_COLUMNS,
    "drugs": _EVENT_COLUMNS,
    "procedures": _EVENT_COLUMNS,
    "coverage": ["patient", "start", "stop", "payer", "plan", "sponsor", "stop_reason"],
    "charges": [
        *("visit", "amount", "coinsurance", "deductible"),
        *("primary", "ingredient", "dispensing", "drg"),
    ],
}


def _site(tiny):
    """The tiny site with the spec above, its files empty, its vocabulary extended."""
    (tiny.mappings / "sites" / "tiny.yaml").write_text(textwrap.dedent(SPEC))
    tiny.COLUMNS = FILES
    tiny.tables = {name: [] for name in FILES}
    tiny.load_vocabulary()
    con = duckdb.connect(tiny.warehouse.location)
    try:
        con.executemany(
            "insert into vocab.concept (concept_id, concept_name, domain_id, vocabulary_id, "
            "concept_class_id, standard_concept, concept_code, valid_start_date, "
            "valid_end_date) values (?, ?, ?, ?, ?, 'S', ?, date '1970-01-01', "
            "date '2099-12-31')",
            [(*c, f"tiny-{c[0]}") for c in EXTRA_CONCEPTS],
        )
    finally:
        con.close()
    tiny.tables["patients"].append({"id": "p1", "birth": "1970-01-01"})
    return tiny


def _add(tiny, file: str, *rows: dict) -> None:
    tiny.tables[file].extend(rows)


def test_visit_admitted_from_and_discharged_to_concepts_reach_visits_and_details(tiny):
    _site(tiny)
    p1 = {"patient": "p1"}
    _add(
        tiny,
        "visits",
        # an emergency encounter, then an inpatient one: one stay (262), two details
        {"id": "er", **p1, "start": "2020-01-01 08:00", "stop": "2020-01-01 20:00"}
        | {"class": "ER", "came_from": "home"},
        {"id": "ip", **p1, "start": "2020-01-01 20:00", "stop": "2020-01-05 10:00"}
        | {"class": "IP", "went_to": "snf"},
        {"id": "op", **p1, "start": "2020-03-01 09:00", "stop": "2020-03-01 10:00"}
        | {"class": "OP"},
    )
    tiny.run()
    # the stay comes from where its first encounter came from, goes where its last went
    assert tiny.query(
        "select visit_concept_id, admitted_from_concept_id, admitted_from_source_value, "
        "discharged_to_concept_id, discharged_to_source_value "
        "from cdm_tiny.visit_occurrence order by visit_start_datetime"
    ) == [(262, 8536, "home", 8863, "snf"), (9202, 0, None, 0, None)]
    assert tiny.query(
        "select visit_detail_source_value, admitted_from_concept_id, admitted_from_source_value, "
        "discharged_to_concept_id, discharged_to_source_value "
        "from cdm_tiny.visit_detail order by 1"
    ) == [("er", 8536, "home", 0, None), ("ip", 0, None, 8863, "snf")]


def test_event_fields_reach_their_cdm_columns(tiny):
    _site(tiny)
    p1 = {"patient": "p1", "start": "2020-01-01"}
    _add(
        tiny,
        "events",
        {**p1, "code": "C1", "system": "SNOMED", "status": "main"},
        {**p1, "code": "C2", "system": "SNOMED"},  # no status: concept 0
        # labs: an operator, a coded result, from the spec's value maps
        {**p1, "code": "L1", "system": "LOINC", "value": "5", "op": "<"},
        {**p1, "code": "L1", "system": "LOINC", "value": "7", "result": "pos"},
        # observations: a qualifier and a coded result where the vocabulary gives none;
        # where it gives one, I2's 'Maps to value' wins over the value map
        {**p1, "code": "O1", "system": "SNOMED", "result": "pos", "qualifier": "severe"},
        {**p1, "code": "I2", "system": "ICD10CM", "result": "pos"},
    )
    _add(
        tiny,
        "drugs",
        {**p1, "code": "D1", "system": "RxNorm", "stop": "2020-01-10", "route": "PO"}
        | {"sig": "1 tab daily; questions: 010-1234-5678"},
        {**p1, "code": "D2", "system": "RxNorm", "days": "5"},  # no end in the source
    )
    _add(
        tiny,
        "procedures",
        {**p1, "code": "P1", "system": "SNOMED", "qualifier": "50"},
        {**p1, "code": "P2", "system": "SNOMED"},
    )
    tiny.run()
    assert tiny.query(
        "select condition_source_value, condition_status_concept_id, "
        "condition_status_source_value from cdm_tiny.condition_occurrence order by 1"
    ) == [("C1", 32902, "main"), ("C2", 0, None)]
    assert tiny.query(
        "select value_as_number, operator_concept_id, value_as_concept_id, value_source_value "
        "from cdm_tiny.measurement order by 1"
    ) == [(5.0, 4171756, None, None), (7.0, 0, 9191, "pos")]
    assert tiny.query(
        "select observation_source_value, value_as_concept_id, qualifier_concept_id, "
        "qualifier_source_value from cdm_tiny.observation order by 1"
    ) == [("I2", 4501, 0, None), ("O1", 9191, 7102, "severe")]
    sig = "1 tab daily; questions: [REDACTED]"  # scrubbed, as a note is
    assert tiny.query(
        "select drug_source_value, drug_exposure_end_date, verbatim_end_date, sig, "
        "route_concept_id, route_source_value from cdm_tiny.drug_exposure order by 1"
    ) == [
        ("D1", date(2020, 1, 10), date(2020, 1, 10), sig, 4132161, "PO"),
        ("D2", date(2020, 1, 5), None, None, 0, None),
    ]
    assert tiny.query(
        "select procedure_source_value, modifier_concept_id, modifier_source_value "
        "from cdm_tiny.procedure_occurrence order by 1"
    ) == [("P1", 7101, "50"), ("P2", 0, None)]
    assert tiny.query("select rule, rows from stage_tiny.flags where rule like 'scrubbed%'") == [
        ("scrubbed:sig", 1)
    ]


def test_note_title_class_and_language_reach_the_note(tiny):
    _site(tiny)
    c1 = {"patient": "p1", "code": "C1", "system": "SNOMED", "name": "Condition one"}
    _add(
        tiny,
        "events",
        {**c1, "start": "2020-01-01", "note": "Stable.", "note_kind": "discharge", "lang": "en"}
        | {"title": "Discharge summary, ward 010-1234-5678"},
        {**c1, "start": "2020-01-02", "note": "Seen again."},  # titled by the code's name
    )
    tiny.run()
    assert tiny.query(
        "select note_date, note_title, note_text, note_class_concept_id, language_concept_id, "
        "encoding_concept_id from cdm_tiny.note order by 1"
    ) == [
        (date(2020, 1, 1), "Discharge summary, ward [REDACTED]", "Stable.", 7001, 4180186, 0),
        (date(2020, 1, 2), "Condition one", "Seen again.", 0, 0, 0),
    ]


def test_death_coverage_and_cost_fields_reach_the_cdm(tiny):
    _site(tiny)
    _add(
        tiny,
        "patients",
        {"id": "p2", "birth": "1950-01-01", "death": "2022-02-02", "death_type": "32815"}
        | {"death_cause": "J18.9"},
        {"id": "p3", "birth": "1950-01-01", "death": "2021-01-01"},  # an EHR record
    )
    _add(
        tiny,
        "coverage",
        {"patient": "p1", "start": "2020-01-01", "stop": "2020-12-31", "payer": "NHI"}
        | {"plan": "basic", "sponsor": "employer", "stop_reason": "moved"},
        {"patient": "p1", "start": "2021-01-01", "stop": "2021-12-31"},
    )
    _add(
        tiny,
        "visits",
        {"id": "op", "patient": "p1", "start": "2020-03-01 09:00", "stop": "2020-03-01 10:00"}
        | {"class": "OP"},
    )
    _add(
        tiny,
        "charges",
        {"visit": "op", "amount": "100", "coinsurance": "1.5", "deductible": "10"}
        | {"primary": "80", "ingredient": "5", "dispensing": "2", "drg": "470"},
        {"visit": "op", "amount": "50", "coinsurance": "2.5"},
    )
    tiny.run()
    assert tiny.query_named(
        "select p.person_source_value, death_date, death_type_concept_id, cause_concept_id, "
        "cause_source_value from cdm_tiny.death join cdm_tiny.person p using (person_id)"
    ) == [("p2", date(2022, 2, 2), 32815, 0, "J18.9"), ("p3", date(2021, 1, 1), 32817, 0, None)]
    assert tiny.query(
        "select payer_plan_period_start_date, payer_concept_id, payer_source_value, "
        "plan_concept_id, plan_source_value, sponsor_concept_id, sponsor_source_value, "
        "stop_reason_concept_id, stop_reason_source_value "
        "from cdm_tiny.payer_plan_period order by 1"
    ) == [
        (date(2020, 1, 1), 7201, "NHI", 7202, "basic", 7203, "employer", 7204, "moved"),
        (date(2021, 1, 1), 0, None, 0, None, 0, None, 0, None),
    ]
    # the encounter's two cost lines, summed
    assert tiny.query(
        "select total_charge, paid_patient_coinsurance, paid_patient_deductible, "
        "paid_by_primary, paid_ingredient_cost, paid_dispensing_fee, drg_concept_id, "
        "drg_source_value, payer_plan_period_id is not null from cdm_tiny.cost"
    ) == [(150.0, 4.0, 10.0, 80.0, 5.0, 2.0, 7301, "470", True)]
