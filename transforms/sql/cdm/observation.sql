-- Events in the Observation domain, and standard concepts of domains that have no
-- table of their own (OHDSI catch-all). Qualifier concepts come from the spec's value
-- map (0 when none).
select
    event_id as observation_id,
    person_id,
    concept_id as observation_concept_id,
    cast(start_datetime as date) as observation_date,
    start_datetime as observation_datetime,
    type_concept_id as observation_type_concept_id,
    value_as_number,
    value_as_string,
    value_as_concept_id,
    coalesce(qualifier_concept_id, 0) as qualifier_concept_id,
    unit_concept_id,
    provider_id,
    visit_occurrence_id,
    visit_detail_id,
    code as observation_source_value,
    source_concept_id as observation_source_concept_id,
    unit_source_value,
    qualifier_source_value,
    value_source_value,
    cast(null as bigint) as observation_event_id,
    cast(null as integer) as obs_event_field_concept_id
from @work.work_event_ids
where cdm_table = 'observation'
