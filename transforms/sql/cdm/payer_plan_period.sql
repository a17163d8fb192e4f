-- One row per coverage period of a patient; an open period ends on its start date.
-- Payer, plan, sponsor and stop reason concepts come from the spec's value maps (0
-- when none).
select
    k.id as payer_plan_period_id,
    p.person_id,
    cast(pp.start_datetime as date) as payer_plan_period_start_date,
    coalesce(cast(pp.end_datetime as date), cast(pp.start_datetime as date))
        as payer_plan_period_end_date,
    coalesce(pp.payer_concept_id, 0) as payer_concept_id,
    pp.payer_source_value,
    0 as payer_source_concept_id,
    coalesce(pp.plan_concept_id, 0) as plan_concept_id,
    pp.plan_source_value,
    0 as plan_source_concept_id,
    coalesce(pp.sponsor_concept_id, 0) as sponsor_concept_id,
    pp.sponsor_source_value,
    0 as sponsor_source_concept_id,
    pp.family_source_value,
    coalesce(pp.stop_reason_concept_id, 0) as stop_reason_concept_id,
    pp.stop_reason_source_value,
    0 as stop_reason_source_concept_id
from @work.payer_plan as pp
inner join @work.work_person as p on p.person_source_value = pp.person_source_value
inner join @stage.key_map as k on k.tbl = 'payer_plan_period' and k.source_key = pp.row_key
where pp.reject is null
