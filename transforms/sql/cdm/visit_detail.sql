-- One row per encounter that is part of a visit with more than one encounter
-- (a merged hospital stay, or a sub-encounter of a parent encounter). Admitted-from and
-- discharged-to concepts come from the spec's value maps (0 when none).
select
    ids.visit_detail_id,
    p.person_id,
    g.visit_concept_id as visit_detail_concept_id,
    cast(g.start_datetime as date) as visit_detail_start_date,
    g.start_datetime as visit_detail_start_datetime,
    cast(g.stop_datetime as date) as visit_detail_end_date,
    g.stop_datetime as visit_detail_end_datetime,
    g.type_concept_id as visit_detail_type_concept_id,
    prov.provider_id,
    cs.care_site_id,
    g.visit_source_value as visit_detail_source_value,
    0 as visit_detail_source_concept_id,
    coalesce(g.admitted_from_concept_id, 0) as admitted_from_concept_id,
    g.admitted_from_source_value,
    coalesce(g.discharged_to_concept_id, 0) as discharged_to_concept_id,
    g.discharged_to_source_value,
    lag(ids.visit_detail_id) over (
        partition by ids.visit_occurrence_id order by g.start_datetime, ids.visit_detail_id
    ) as preceding_visit_detail_id,
    parent.visit_detail_id as parent_visit_detail_id,
    ids.visit_occurrence_id
from @work.work_visit_group as g
inner join @work.work_visit as ids on ids.visit_source_value = g.visit_source_value
inner join @work.work_person as p on p.person_source_value = g.person_source_value
left join @work.work_visit as parent on parent.visit_source_value = g.parent_visit_source_value
left join @work.work_provider as prov on prov.provider_source_value = g.provider_source_value
left join @work.work_care_site as cs on cs.care_site_source_value = g.care_site_source_value
where g.is_detail
