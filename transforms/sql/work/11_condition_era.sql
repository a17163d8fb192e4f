-- Condition eras (OHDSI standard): occurrences of the same standard condition
-- concept of a person, merged when the next starts within 30 days of the end of
-- the previous ones. A missing end counts as start + 1 day. Unmapped (0) rows
-- have no era. Both windows order by (start, end, id): with ties left open, DuckDB may
-- order tied rows differently in the two windows and split one era in two.

create or replace table @work.work_condition_era as
with occurrence as (
    select
        person_id,
        condition_concept_id,
        condition_occurrence_id as id,
        condition_start_date as s,
        coalesce(condition_end_date, condition_start_date + 1) as e
    from @cdm.condition_occurrence
    where condition_concept_id <> 0
),

ordered as (
    select
        *,
        max(e) over (
            partition by person_id, condition_concept_id
            order by s, e, id rows between unbounded preceding and 1 preceding
        ) as previous_end
    from occurrence
),

numbered as (
    select
        *,
        sum(case when previous_end is null or s > previous_end + 30 then 1 else 0 end) over (
            partition by person_id, condition_concept_id
            order by s, e, id rows unbounded preceding
        ) as era_no
    from ordered
)

select
    person_id,
    condition_concept_id,
    min(s) as condition_era_start_date,
    max(e) as condition_era_end_date,
    count(*) as condition_occurrence_count,
    md5_number(concat(person_id, ':', condition_concept_id, ':', min(s))) as source_key
from numbered
group by person_id, condition_concept_id, era_no;
