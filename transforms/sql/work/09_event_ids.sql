-- Mapped events with their CDM ids; each event CDM table selects its own cdm_table.
-- A view, so each table's filter reaches the scan of work_event.

create or replace view @work.work_event_ids as
select
    e.*,
    k.id as event_id,
    p.person_id,
    v.visit_occurrence_id,
    v.visit_detail_id,
    prov.provider_id
from @work.work_event as e
inner join @stage.key_map as k on k.tbl = e.cdm_table and k.source_key = e.source_key
inner join @work.work_person as p on p.person_source_value = e.person_source_value
left join @work.work_visit as v on v.visit_source_value = e.visit_source_value
left join @work.work_provider as prov on prov.provider_source_value = e.provider_source_value;
