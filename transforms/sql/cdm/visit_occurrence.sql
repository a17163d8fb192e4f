-- One row per visit: a single encounter, or a hospital stay merged from several
-- (see work/05_visit_group.sql). A stay that holds both emergency and inpatient
-- encounters is 262; its dates span all of them, it comes from where its first
-- encounter came from and goes where its last one went. preceding_visit_occurrence_id
-- is the person's previous visit by start.
with encounter as (
    select g.*, ids.visit_occurrence_id
    from @work.work_visit_group as g
    inner join @work.work_visit as ids on ids.visit_source_value = g.visit_source_value
),

single as (
    -- most visits are one encounter
    select
        visit_occurrence_id,
        person_source_value,
        visit_concept_id,
        start_datetime as visit_start_datetime,
        stop_datetime as visit_end_datetime,
        type_concept_id,
        visit_source_value,
        provider_source_value,
        care_site_source_value,
        admitted_from_concept_id,
        admitted_from_source_value,
        discharged_to_concept_id,
        discharged_to_source_value
    from encounter
    where not is_detail
),

merged as (
    -- a stay, or a parent encounter with its sub-encounters: first encounter's details
    select
        visit_occurrence_id,
        min_by(person_source_value, start_datetime) as person_source_value,
        case
            when count(*) filter (where visit_concept_id = 262) > 0 then 262
            when count(*) filter (where visit_concept_id = 9201) > 0
                and count(*) filter (where visit_concept_id = 9203) > 0 then 262
            else min_by(visit_concept_id, (start_datetime, visit_source_value))
        end as visit_concept_id,
        min(start_datetime) as visit_start_datetime,
        max(stop_datetime) as visit_end_datetime,
        min_by(type_concept_id, (start_datetime, visit_source_value)) as type_concept_id,
        min(group_source_value) as visit_source_value,
        min_by(provider_source_value, (start_datetime, visit_source_value))
            as provider_source_value,
        min_by(care_site_source_value, (start_datetime, visit_source_value))
            as care_site_source_value,
        min_by(admitted_from_concept_id, (start_datetime, visit_source_value))
            as admitted_from_concept_id,
        min_by(admitted_from_source_value, (start_datetime, visit_source_value))
            as admitted_from_source_value,
        max_by(discharged_to_concept_id, (stop_datetime, visit_source_value))
            as discharged_to_concept_id,
        max_by(discharged_to_source_value, (stop_datetime, visit_source_value))
            as discharged_to_source_value
    from encounter
    where is_detail
    group by visit_occurrence_id
),

visit as (
    select * from single
    union all
    select * from merged
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
    coalesce(v.admitted_from_concept_id, 0) as admitted_from_concept_id,
    v.admitted_from_source_value,
    coalesce(v.discharged_to_concept_id, 0) as discharged_to_concept_id,
    v.discharged_to_source_value,
    lag(v.visit_occurrence_id) over (
        partition by p.person_id order by v.visit_start_datetime, v.visit_occurrence_id
    ) as preceding_visit_occurrence_id
from visit as v
inner join @work.work_person as p on p.person_source_value = v.person_source_value
left join @work.work_provider as prov on prov.provider_source_value = v.provider_source_value
left join @work.work_care_site as cs on cs.care_site_source_value = v.care_site_source_value
