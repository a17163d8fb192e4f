-- Free text about an event (a diagnosis note, a lab comment) that the site spec lets
-- through: scrubbed of identifier patterns at extraction. One note per staged event.
-- The title is the spec's (scrubbed too), else the code's name; class and language
-- concepts come from the spec's value maps, 0 when none. The encoding concept is 0:
-- 32678 (UTF-8) would be right for every note, but the demo vocabulary lacks it.
select
    k.id as note_id,
    p.person_id,
    cast(e.start_datetime as date) as note_date,
    e.start_datetime as note_datetime,
    e.type_concept_id as note_type_concept_id,
    coalesce(e.note_class_concept_id, 0) as note_class_concept_id,
    coalesce(e.note_title, e.code_name) as note_title,
    e.note as note_text,
    0 as encoding_concept_id,
    coalesce(e.note_language_concept_id, 0) as language_concept_id,
    prov.provider_id,
    v.visit_occurrence_id,
    v.visit_detail_id,
    e.code as note_source_value,
    cast(null as bigint) as note_event_id,
    cast(null as integer) as note_event_field_concept_id
from @work.event as e
inner join @stage.key_map as k on k.tbl = 'note' and k.source_key = e.row_key
inner join @work.work_person as p on p.person_source_value = e.person_source_value
left join @work.work_visit as v on v.visit_source_value = e.visit_source_value
left join @work.work_provider as prov on prov.provider_source_value = e.provider_source_value
where e.reject is null and e.note is not null
