-- Events in the Procedure domain. The event's qualifier is the procedure's modifier
-- (e.g. a CPT4 modifier), its concept from the spec's value map (0 when none).
select
    event_id as procedure_occurrence_id,
    person_id,
    concept_id as procedure_concept_id,
    cast(start_datetime as date) as procedure_date,
    start_datetime as procedure_datetime,
    cast(end_datetime as date) as procedure_end_date,
    end_datetime as procedure_end_datetime,
    type_concept_id as procedure_type_concept_id,
    coalesce(qualifier_concept_id, 0) as modifier_concept_id,
    cast(quantity as integer) as quantity,
    provider_id,
    visit_occurrence_id,
    visit_detail_id,
    code as procedure_source_value,
    source_concept_id as procedure_source_concept_id,
    qualifier_source_value as modifier_source_value
from @work.work_event_ids
where cdm_table = 'procedure_occurrence'
