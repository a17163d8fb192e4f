-- Events in the Device domain. production_id (the UDI's serial or lot part) is never
-- staged: a device serial number is an identifier of the person who carries it.
select
    event_id as device_exposure_id,
    person_id,
    concept_id as device_concept_id,
    cast(start_datetime as date) as device_exposure_start_date,
    start_datetime as device_exposure_start_datetime,
    cast(end_datetime as date) as device_exposure_end_date,
    end_datetime as device_exposure_end_datetime,
    type_concept_id as device_type_concept_id,
    unique_device_id,
    cast(null as varchar) as production_id,
    cast(quantity as integer) as quantity,
    provider_id,
    visit_occurrence_id,
    visit_detail_id,
    code as device_source_value,
    source_concept_id as device_source_concept_id,
    unit_concept_id,
    unit_source_value,
    0 as unit_source_concept_id
from @work.work_event_ids
where cdm_table = 'device_exposure'
