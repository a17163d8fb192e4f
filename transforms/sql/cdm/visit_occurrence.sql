-- One row per visit: a single encounter, or a hospital stay merged from several
-- (see work/05_visit_group.sql). A stay that holds both emergency and inpatient
-- encounters is 262; its dates span all of them. preceding_visit_occurrence_id is
-- the person's previous visit by start.
with visit as (
    select
        ids.visit_occurrence_id,
        min_by(g.person_source_value, g.start_datetime) as person_source_value,
        case
            when count(*) filter (where g.visit_concept_id = 262) > 0 then 262
            when count(*) filter (where g.visit_concept_id = 9201) > 0
                and count(*) filter (where g.visit_concept_id = 9203) > 0 then 262
            else min_by(g.visit_concept_id, (g.start_datetime, g.visit_source_value))
        end as visit_concept_id,
        min(g.start_datetime) as visit_start_datetime,
        max(g.stop_datetime) as visit_end_datetime,
        min_by(g.type_concept_id, (g.start_datetime, g.visit_source_value)) as type_concept_id,
        min(g.group_source_value) as visit_source_value,
        min_by(g.visit_class_source_value, (g.start_datetime, g.visit_source_value))
            as visit_class_source_value,
        min_by(g.provider_source_value, (g.start_datetime, g.visit_source_value))
            as provider_source_value,
        min_by(g.care_site_source_value, (g.start_datetime, g.visit_source_value))
            as care_site_source_value,
        min_by(g.admitted_from_source_value, (g.start_datetime, g.visit_source_value))
            as admitted_from_source_value,
        max_by(g.discharged_to_source_value, (g.stop_datetime, g.visit_source_value))
            as discharged_to_source_value
    from @work.work_visit_group as g
    inner join @work.work_visit as ids on ids.visit_source_value = g.visit_source_value
    group by ids.visit_occurrence_id
)

select
    v.visit_occurrence_id,
    p.person_id,
    v.visit_concept_id,
    cast(v.visit_start_datetime as date) as visit_start_date,
    v.visit_start_datetime,
    cast(v.visit_end_datetime as date) as visit_end_date,
    v.visit_end_datetime,
    v.type_concept_id as visit_type_concept_id,
    prov.provider_id,
    cs.care_site_id,
    v.visit_source_value,
    0 as visit_source_concept_id,
    0 as admitted_from_concept_id,
    v.admitted_from_source_value,
    0 as discharged_to_concept_id,
    v.discharged_to_source_value,
    lag(v.visit_occurrence_id) over (
        partition by p.person_id order by v.visit_start_datetime, v.visit_occurrence_id
    ) as preceding_visit_occurrence_id
from visit as v
inner join @work.work_person as p on p.person_source_value = v.person_source_value
left join @work.work_provider as prov on prov.provider_source_value = v.provider_source_value
left join @work.work_care_site as cs on cs.care_site_source_value = v.care_site_source_value
