-- Drug eras (OHDSI standard): exposures rolled up to their RxNorm ingredients
-- through concept_ancestor, merged per person and ingredient when the next starts
-- within 30 days (persistence window) of the end of the previous ones.
-- Exposure end: drug_exposure_end_date (already start + days_supply - 1 or the
-- start when the source had no end). gap_days = era length - days exposed, where
-- overlapping exposures count once. The windows order by (start, end, id): tied rows
-- must be in the same order in each window.

create or replace table @work.work_drug_era as
with ingredient as (
    select ca.descendant_concept_id as drug_concept_id, ca.ancestor_concept_id as ingredient_id
    from @vocab.concept_ancestor as ca
    inner join @vocab.concept as c
        on c.concept_id = ca.ancestor_concept_id
        and c.concept_class_id = 'Ingredient'
        and c.vocabulary_id in ('RxNorm', 'RxNorm Extension')
        and c.standard_concept = 'S'
),

exposure as (
    select
        de.person_id,
        i.ingredient_id,
        de.drug_exposure_id as id,
        de.drug_exposure_start_date as s,
        greatest(de.drug_exposure_end_date, de.drug_exposure_start_date) as e
    from @cdm.drug_exposure as de
    inner join ingredient as i on i.drug_concept_id = de.drug_concept_id
    where de.drug_concept_id <> 0
),

exposure_ordered as (
    select
        *,
        max(e) over (
            partition by person_id, ingredient_id
            order by s, e, id rows between unbounded preceding and 1 preceding
        ) as previous_end
    from exposure
),

exposure_numbered as (
    select
        *,
        -- overlapping exposures form one stretch of exposed days
        sum(case when previous_end is null or s > previous_end then 1 else 0 end) over w
            as stretch_no,
        sum(case when previous_end is null or s > previous_end + 30 then 1 else 0 end) over w
            as era_no
    from exposure_ordered
    window w as (partition by person_id, ingredient_id order by s, e, id rows unbounded preceding)
),

stretch as (
    select
        person_id,
        ingredient_id,
        era_no,
        min(s) as s,
        max(e) as e,
        count(*) as exposure_count
    from exposure_numbered
    group by person_id, ingredient_id, era_no, stretch_no
)

select
    person_id,
    ingredient_id as drug_concept_id,
    min(s) as drug_era_start_date,
    max(e) as drug_era_end_date,
    cast(sum(exposure_count) as integer) as drug_exposure_count,
    cast(datediff('day', min(s), max(e)) - sum(datediff('day', s, e)) as integer) as gap_days,
    md5_number(concat(person_id, ':', ingredient_id, ':', min(s))) as source_key
from stretch
group by person_id, ingredient_id, era_no;
