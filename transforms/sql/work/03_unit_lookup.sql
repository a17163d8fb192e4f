-- Unit strings -> UCUM unit concepts.
-- Grain: one row per distinct unit_source_value of the batch's events.
-- A site's unit code map (source_to_concept_map with source_vocabulary_id =
-- the spec's units.vocabulary) wins; else an exact UCUM concept_code match;
-- else 0, with unit_source_value kept in the CDM row.

create or replace table @work.work_unit_lookup as
with units as (
    select distinct unit_source_value
    from @work.event
    where reject is null and unit_source_value is not null
),

site_map as (
    select stcm.source_code, min(stcm.target_concept_id) as unit_concept_id
    from @vocab.source_to_concept_map as stcm
    where stcm.source_vocabulary_id = @unit_vocabulary and stcm.invalid_reason is null
    group by stcm.source_code
),

ucum as (
    select concept_code, min(concept_id) as unit_concept_id
    from @vocab.concept
    where vocabulary_id = 'UCUM' and standard_concept = 'S' and invalid_reason is null
    group by concept_code
)

select
    units.unit_source_value,
    coalesce(site_map.unit_concept_id, ucum.unit_concept_id, 0) as unit_concept_id
from units
left join site_map on site_map.source_code = units.unit_source_value
left join ucum on ucum.concept_code = units.unit_source_value;
