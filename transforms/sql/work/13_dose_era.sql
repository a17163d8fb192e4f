-- Dose eras (OHDSI standard), where drug_strength allows: a daily dose per
-- exposure = amount_value * quantity / days_supply of the ingredient (solid forms
-- with an amount), in the amount's unit. Exposures of the same person,
-- ingredient, unit and dose merge when the next starts within 30 days of the end
-- of the previous ones. No drug_strength row, no dose era.

create or replace table @work.work_dose_era as
with exposure as (
    select
        de.person_id,
        de.drug_exposure_id as id,
        ds.ingredient_concept_id as drug_concept_id,
        ds.amount_unit_concept_id as unit_concept_id,
        ds.amount_value * de.quantity / de.days_supply as dose_value,
        de.drug_exposure_start_date as s,
        greatest(de.drug_exposure_end_date, de.drug_exposure_start_date) as e
    from @cdm.drug_exposure as de
    inner join @vocab.drug_strength as ds
        on ds.drug_concept_id = de.drug_concept_id
        and ds.amount_value is not null
        and ds.amount_unit_concept_id is not null
        and ds.invalid_reason is null
    where de.drug_concept_id <> 0 and de.days_supply > 0 and de.quantity > 0
),

ordered as (
    select
        *,
        max(e) over (
            partition by person_id, drug_concept_id, unit_concept_id, dose_value
            order by s, e, id rows between unbounded preceding and 1 preceding
        ) as previous_end
    from exposure
),

numbered as (
    select
        *,
        sum(case when previous_end is null or s > previous_end + 30 then 1 else 0 end) over (
            partition by person_id, drug_concept_id, unit_concept_id, dose_value
            order by s, e, id rows unbounded preceding
        ) as era_no
    from ordered
)

select
    person_id,
    drug_concept_id,
    unit_concept_id,
    dose_value,
    min(s) as dose_era_start_date,
    max(e) as dose_era_end_date,
    md5_number(concat(person_id, ':', drug_concept_id, ':', unit_concept_id, ':', dose_value,
        ':', min(s))) as source_key
from numbered
group by person_id, drug_concept_id, unit_concept_id, dose_value, era_no;
