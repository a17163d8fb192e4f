-- Events whose standard concept is in the Condition domain (or unmapped codes of a
-- file whose default domain is Condition). The status concept (primary, secondary,
-- admitting diagnosis ...) comes from the spec's value map; 0 when the source has none.
select
    event_id as condition_occurrence_id,
    person_id,
    concept_id as condition_concept_id,
    cast(start_datetime as date) as condition_start_date,
    start_datetime as condition_start_datetime,
    cast(end_datetime as date) as condition_end_date,
    end_datetime as condition_end_datetime,
    type_concept_id as condition_type_concept_id,
    coalesce(status_concept_id, 0) as condition_status_concept_id,
    stop_reason,
    provider_id,
    visit_occurrence_id,
    visit_detail_id,
    code as condition_source_value,
    source_concept_id as condition_source_concept_id,
    status_source_value as condition_status_source_value
from @work.work_event_ids
where cdm_table = 'condition_occurrence'
