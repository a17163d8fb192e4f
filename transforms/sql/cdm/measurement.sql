-- Events in the Measurement domain: numeric results with UCUM units, coded results
-- from 'Maps to value' (else the spec's value map of the result), reference ranges.
-- The operator concept (<, <=, >=, >) comes from the spec's value map; 0 when none.
select
    event_id as measurement_id,
    person_id,
    concept_id as measurement_concept_id,
    cast(start_datetime as date) as measurement_date,
    start_datetime as measurement_datetime,
    strftime(start_datetime, '%H:%M:%S') as measurement_time,
    type_concept_id as measurement_type_concept_id,
    coalesce(operator_concept_id, 0) as operator_concept_id,
    value_as_number,
    value_as_concept_id,
    unit_concept_id,
    range_low,
    range_high,
    provider_id,
    visit_occurrence_id,
    visit_detail_id,
    code as measurement_source_value,
    source_concept_id as measurement_source_concept_id,
    unit_source_value,
    0 as unit_source_concept_id,
    value_source_value,
    cast(null as bigint) as measurement_event_id,
    cast(null as integer) as meas_event_field_concept_id
from @work.work_event_ids
where cdm_table = 'measurement'
