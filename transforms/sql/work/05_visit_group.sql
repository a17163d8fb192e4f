-- Encounters -> visit_occurrence (+ visit_detail for sub-encounters).
-- Grain: one row per accepted staged encounter, with the key of the visit it belongs to.
--   * An encounter with parent_visit_source_value is a sub-encounter of its parent.
--   * Inpatient (9201), emergency (9203) and ER+inpatient (262) encounters of one
--     person that overlap or follow within one day form one hospital stay: one
--     visit_occurrence (ETL-Synthea / OHDSI convention). A stay with both emergency
--     and inpatient parts is 262 "Emergency Room and Inpatient Visit".
--   * Every other encounter is its own visit.
-- Encounters of a visit that holds more than one become visit_detail rows.

create or replace table @work.work_visit_group as
with encounter as (
    select
        v.*,
        coalesce(v.end_datetime, v.start_datetime) as stop_datetime,
        v.parent_visit_source_value is null and v.visit_concept_id in (9201, 9203, 262) as is_stay
    from @work.visit as v
    where v.reject is null
),

stay_ordered as (
    select
        *,
        max(stop_datetime) over (
            partition by person_source_value
            order by start_datetime, visit_source_value
            rows between unbounded preceding and 1 preceding
        ) as previous_stop
    from encounter
    where is_stay
),

stay_numbered as (
    select
        *,
        sum(case when previous_stop is null or start_datetime > previous_stop + interval 1 day
            then 1 else 0 end) over (
            partition by person_source_value
            order by start_datetime, visit_source_value
            rows unbounded preceding
        ) as stay_no
    from stay_ordered
),

stay_group as (
    select
        visit_source_value,
        first(visit_source_value order by start_datetime, visit_source_value) over stay
            as group_source_value,
        count(*) over stay as stay_size
    from stay_numbered
    window stay as (partition by person_source_value, stay_no)
),

parent as (
    -- encounters that another encounter names as its parent
    select distinct parent_visit_source_value as visit_source_value
    from encounter
    where parent_visit_source_value is not null
)

select
    e.*,
    coalesce(
        s.group_source_value,
        parent_stay.group_source_value,
        e.parent_visit_source_value,
        e.visit_source_value
    ) as group_source_value,
    -- only stays and parents with their sub-encounters hold more than one encounter
    coalesce(s.stay_size, 1) > 1
    or e.parent_visit_source_value is not null
    or p.visit_source_value is not null as is_detail,
    md5_number(
        coalesce(
            s.group_source_value,
            parent_stay.group_source_value,
            e.parent_visit_source_value,
            e.visit_source_value
        )
    ) as visit_key,
    md5_number(e.visit_source_value) as detail_key
from encounter as e
left join stay_group as s on s.visit_source_value = e.visit_source_value
left join stay_group as parent_stay
    on parent_stay.visit_source_value = e.parent_visit_source_value
left join parent as p on p.visit_source_value = e.visit_source_value;
