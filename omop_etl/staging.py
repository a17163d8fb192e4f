"""The canonical staging model: what every source format is turned into.

Each *target* is one staging table (``<stage schema>.<target>``). A site spec maps
its files' columns onto these fields; the CDM transforms read only these tables.
Every staging row also carries ``batch_id``, ``source_file`` (the spec's file
name), ``file_no`` (the file of the batch it came from), ``row_key`` (a stable
hash of the row's mapped content), ``reject`` (the rule a row broke, or NULL)
and ``flag`` (what was fixed in a kept row, or NULL).

``person_source_value`` never holds the site's patient id: it holds the keyed
pseudonym (see ``omop_etl.privacy``). Free-text fields (``free_text``: what clinicians
type, e.g. a note, a prescription's instructions) are scrubbed of identifier patterns,
and only filled when the spec allows it.

There is a field for every CDM v5.4 column of the built tables that a source can fill;
``tests/unit/test_staging_model.py`` holds the map from CDM columns to these fields, the
columns the pipeline derives, and the deliberate exceptions (direct identifiers such as
a street address never get a field). A concept id field (``*_concept_id``, usually from
a value map) left empty is 0 in the CDM, as OMOP's conventions ask; except a result's
``value_as_concept_id`` (NULL: no coded result) and ``death_type_concept_id`` (32817 EHR).

Field types: ``text``, ``int``, ``double``, ``date``, ``timestamp``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StagingField:
    name: str
    type: str
    required: bool = False
    doc: str = ""
    free_text: bool = False  # may carry identifiers: mapped only with `free_text: scrub`


def _fields(*specs: tuple) -> dict[str, StagingField]:
    return {s[0]: StagingField(*s) for s in specs}


_ADDRESS = (
    ("city", "text"),
    ("state", "text"),
    ("zip", "text"),
    ("county", "text"),
    ("country", "text"),
)

TARGETS: dict[str, dict[str, StagingField]] = {
    # One row per patient.
    "person": _fields(
        ("person_source_value", "text", True, "the site's patient id"),
        ("birth_datetime", "timestamp", True, "date or date-time of birth"),
        ("death_datetime", "timestamp", False, "date or date-time of death, if dead"),
        ("death_type_concept_id", "int", False, "where the death record comes from; 32817 EHR"),
        ("death_cause_source_value", "text", False, "the cause of death as the export codes it"),
        ("gender_concept_id", "int"),
        ("gender_source_value", "text"),
        ("race_concept_id", "int"),
        ("race_source_value", "text"),
        ("ethnicity_concept_id", "int"),
        ("ethnicity_source_value", "text"),
        ("provider_source_value", "text"),
        ("care_site_source_value", "text"),
        *_ADDRESS,
    ),
    # One row per encounter (visit or sub-encounter).
    "visit": _fields(
        ("visit_source_value", "text", True, "the site's encounter id"),
        ("person_source_value", "text", True),
        ("start_datetime", "timestamp", True),
        ("end_datetime", "timestamp"),
        ("visit_concept_id", "int", True, "9201 inpatient, 9202 outpatient, 9203 ER, ..."),
        ("visit_class_source_value", "text"),
        ("parent_visit_source_value", "text", False, "set for a sub-encounter"),
        ("provider_source_value", "text"),
        ("care_site_source_value", "text"),
        ("type_concept_id", "int", True),
        ("admitted_from_concept_id", "int", False, "where the patient came from (Visit domain)"),
        ("admitted_from_source_value", "text"),
        ("discharged_to_concept_id", "int", False, "where the patient went to (Visit domain)"),
        ("discharged_to_source_value", "text"),
    ),
    # The clinical event stream: the standard concept's domain picks the CDM table.
    "event": _fields(
        ("person_source_value", "text", True),
        ("visit_source_value", "text"),
        ("provider_source_value", "text"),
        ("default_domain", "text", True, "CDM domain used when the code maps to nothing"),
        ("code", "text", True, "the source code"),
        ("code_system", "text", True, "vocabulary_id of the code (or a local map's)"),
        ("code_name", "text", False, "the code's name in the export (unmapped-code report)"),
        ("start_datetime", "timestamp", True),
        ("end_datetime", "timestamp"),
        ("type_concept_id", "int", True),
        ("value_as_number", "double"),
        ("value_as_string", "text", False, "a result given as text", True),
        ("value_as_concept_id", "int", False, "a coded result, where the code gives no value"),
        ("value_source_value", "text"),
        ("unit_source_value", "text"),
        ("range_low", "double"),
        ("range_high", "double"),
        ("operator_concept_id", "int", False, "the result's operator (<, <=, =, >=, >)"),
        ("operator_source_value", "text"),
        ("quantity", "double"),
        ("days_supply", "int"),
        ("refills", "int"),
        ("sig", "text", False, "the prescriber's instructions, verbatim", True),
        ("route_concept_id", "int"),
        ("route_source_value", "text"),
        ("lot_number", "text"),
        ("unique_device_id", "text"),
        ("stop_reason", "text"),
        ("status_concept_id", "int", False, "condition status (Condition Status domain)"),
        ("status_source_value", "text", False, "condition status (e.g. primary, secondary)"),
        ("qualifier_concept_id", "int", False, "observation qualifier / procedure modifier"),
        ("qualifier_source_value", "text"),
        ("note", "text", False, "free text about the event; becomes a CDM note", True),
        ("note_title", "text", False, "the note's title (else the code's name)", True),
        ("note_class_concept_id", "int", False, "the note's LOINC document kind"),
        ("note_language_concept_id", "int", False, "the note's language (World Languages)"),
    ),
    "care_site": _fields(
        ("care_site_source_value", "text", True),
        ("care_site_name", "text"),
        ("place_of_service_concept_id", "int"),
        ("place_of_service_source_value", "text"),
        *_ADDRESS,
    ),
    "provider": _fields(
        ("provider_source_value", "text", True),
        ("provider_name", "text"),
        ("npi", "text"),
        ("specialty_concept_id", "int"),
        ("specialty_source_value", "text"),
        ("gender_concept_id", "int"),
        ("gender_source_value", "text"),
        ("care_site_source_value", "text"),
        ("year_of_birth", "int"),
    ),
    # One row per coverage period of a patient.
    "payer_plan": _fields(
        ("person_source_value", "text", True),
        ("start_datetime", "timestamp", True),
        ("end_datetime", "timestamp"),
        ("payer_concept_id", "int"),
        ("payer_source_value", "text"),
        ("plan_concept_id", "int"),
        ("plan_source_value", "text"),
        ("sponsor_concept_id", "int"),
        ("sponsor_source_value", "text"),
        ("family_source_value", "text"),
        ("stop_reason_concept_id", "int"),
        ("stop_reason_source_value", "text", False, "why the coverage ended"),
    ),
    # Cost lines (charges, payments) of an encounter, summed per encounter as they are
    # read (see SUMMED_BY): one staging row per encounter and reject rule.
    "cost": _fields(
        ("visit_source_value", "text", True, "the encounter the amounts belong to"),
        ("total_charge", "double"),
        ("total_cost", "double"),
        ("total_paid", "double"),
        ("paid_by_payer", "double"),
        ("paid_by_patient", "double"),
        ("paid_patient_copay", "double"),
        ("paid_patient_coinsurance", "double"),
        ("paid_patient_deductible", "double"),
        ("paid_by_primary", "double"),
        ("paid_ingredient_cost", "double"),
        ("paid_dispensing_fee", "double"),
        ("amount_allowed", "double"),
        ("currency_concept_id", "int"),
        ("type_concept_id", "int", True),
        ("drg_concept_id", "int", False, "the encounter's diagnosis related group"),
        ("drg_source_value", "text"),
    ),
}

# Targets whose lines are summed on the way in, by this key: amounts add up,
# concept ids take the smallest, and `source_rows` counts the lines.
SUMMED_BY = {"cost": "visit_source_value"}

# Targets whose row_key names a CDM row in the persisted key map (and so must be a
# hash that never changes): events and coverage periods have no id of their own.
KEYED_BY_CONTENT = {"event", "payer_plan"}

SQL_TYPES = {
    "text": "VARCHAR",
    "int": "INTEGER",
    "double": "DOUBLE",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
}

# Columns every staging row carries besides its target's fields.
ROW_COLUMNS = {
    "batch_id": "VARCHAR",
    "source_file": "VARCHAR",
    "file_no": "INTEGER",  # which file of the batch (a spec file's pattern may match several)
    "row_key": "UHUGEINT",
    "reject": "VARCHAR",
    "flag": "VARCHAR",  # kept, but something was fixed: `scrubbed:<field>`, `unknown_visit`
    # the how-manieth copy of rows alike in every mapped value (events and coverage
    # periods; OMOP keeps repeated events): part of the row's CDM key from the second on
    "copy_no": "INTEGER",
    "element_no": "INTEGER",  # which element of its record (files with `each`), else NULL
    "record_no": "BIGINT",  # the record's number in read order, where the spec needs it
}

# Staging fields that hold patient ids: pseudonymized as they are read.
PATIENT_ID_FIELD = "person_source_value"


def staging_ddl(schema_sql: str, target: str) -> str:
    """CREATE TABLE statement of one staging table (schema already quoted)."""
    cols = [f'"{n}" {t}' for n, t in ROW_COLUMNS.items()]
    cols += [f'"{f.name}" {SQL_TYPES[f.type]}' for f in TARGETS[target].values()]
    if target in SUMMED_BY:
        cols.append('"source_rows" INTEGER')
    return f'create table if not exists {schema_sql}."{target}" ({", ".join(cols)})'
