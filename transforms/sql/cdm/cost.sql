-- Costs of an encounter: its cost lines (charges, payments) summed, one row per
-- encounter, as a cost of the visit it belongs to (cost_domain_id 'Visit'). The
-- payer plan period is the patient's coverage on the encounter's start date: the
-- period that started last on or before that day, if it has not ended by then.
-- The DRG is the encounter's (its lines' smallest); a revenue code belongs to one line,
-- not to the summed encounter, so there is none.
with line as (
    select
        visit_source_value,
        sum(total_charge) as total_charge,
        sum(total_cost) as total_cost,
        sum(total_paid) as total_paid,
        sum(paid_by_payer) as paid_by_payer,
        sum(paid_by_patient) as paid_by_patient,
        sum(paid_patient_copay) as paid_patient_copay,
        sum(paid_patient_coinsurance) as paid_patient_coinsurance,
        sum(paid_patient_deductible) as paid_patient_deductible,
        sum(paid_by_primary) as paid_by_primary,
        sum(paid_ingredient_cost) as paid_ingredient_cost,
        sum(paid_dispensing_fee) as paid_dispensing_fee,
        sum(amount_allowed) as amount_allowed,
        min(currency_concept_id) as currency_concept_id,
        min(type_concept_id) as type_concept_id,
        min(drg_concept_id) as drg_concept_id,
        min(drg_source_value) as drg_source_value
    from @work.cost
    where reject is null
    group by visit_source_value
),

period_start as (
    -- one coverage period per person and start date (the smallest id), so that the
    -- as-of join below has one candidate
    select
        person_id,
        payer_plan_period_start_date,
        min(payer_plan_period_id) as payer_plan_period_id,
        max(payer_plan_period_end_date) as payer_plan_period_end_date
    from @cdm.payer_plan_period
    group by person_id, payer_plan_period_start_date
),

visit_day as (
    select g.visit_source_value, p.person_id, cast(g.start_datetime as date) as visit_date
    from @work.work_visit_group as g
    inner join @work.work_person as p on p.person_source_value = g.person_source_value
    where g.visit_source_value in (select visit_source_value from line)
),

coverage as (
    -- the period that started last on or before the visit day, if it still runs then
    select
        v.visit_source_value,
        case
            when v.visit_date <= ps.payer_plan_period_end_date then ps.payer_plan_period_id
        end as payer_plan_period_id
    from visit_day as v
    asof left join period_start as ps
        on ps.person_id = v.person_id and v.visit_date >= ps.payer_plan_period_start_date
)

select
    k.id as cost_id,
    v.visit_occurrence_id as cost_event_id,
    'Visit' as cost_domain_id,
    line.type_concept_id as cost_type_concept_id,
    coalesce(line.currency_concept_id, 0) as currency_concept_id,
    line.total_charge,
    line.total_cost,
    line.total_paid,
    line.paid_by_payer,
    line.paid_by_patient,
    line.paid_patient_copay,
    line.paid_patient_coinsurance,
    line.paid_patient_deductible,
    line.paid_by_primary,
    line.paid_ingredient_cost,
    line.paid_dispensing_fee,
    coverage.payer_plan_period_id,
    line.amount_allowed,
    0 as revenue_code_concept_id,
    cast(null as varchar) as revenue_code_source_value,
    coalesce(line.drg_concept_id, 0) as drg_concept_id,
    line.drg_source_value
from line
inner join @work.work_visit as v on v.visit_source_value = line.visit_source_value
inner join @stage.key_map as k
    on k.tbl = 'cost' and k.source_key = md5_number(line.visit_source_value)
left join coverage on coverage.visit_source_value = line.visit_source_value
