-- Observation periods by the OHDSI EHR rule.
-- Grain: one row per period of a person. Every dated clinical record (visits and
-- the six event tables) counts as observed time from its start to its end; records
-- are merged, and a gap of 548 days or more between them starts a new period.
-- A death alone never opens or extends a period.

create or replace table @work.work_observation_period as
with span as (
    select person_id, visit_start_date as s, visit_end_date as e from @cdm.visit_occurrence
    union all
    select person_id, condition_start_date, coalesce(condition_end_date, condition_start_date)
    from @cdm.condition_occurrence
    union all
    select person_id, drug_exposure_start_date, drug_exposure_end_date from @cdm.drug_exposure
    union all
    select person_id, procedure_date, coalesce(procedure_end_date, procedure_date)
    from @cdm.procedure_occurrence
    union all
    select person_id, device_exposure_start_date,
        coalesce(device_exposure_end_date, device_exposure_start_date)
    from @cdm.device_exposure
    union all
    select person_id, measurement_date, measurement_date from @cdm.measurement
    union all
    select person_id, observation_date, observation_date from @cdm.observation
),

daily as (
    -- one row per person and start day: the window below then sorts far fewer rows
    select person_id, s, max(greatest(s, e)) as e from span group by person_id, s
),

ordered as (
    select
        *,
        max(e) over (
            partition by person_id order by s rows between unbounded preceding and 1 preceding
        ) as previous_end
    from daily
),

numbered as (
    select
        *,
        sum(case when previous_end is null or datediff('day', previous_end, s) >= 548
            then 1 else 0 end) over (
            partition by person_id order by s rows unbounded preceding
        ) as period_no
    from ordered
)

select
    person_id,
    min(s) as observation_period_start_date,
    max(e) as observation_period_end_date,
    md5_number(concat(person_id, ':', min(s))) as source_key
from numbered
group by person_id, period_no;
