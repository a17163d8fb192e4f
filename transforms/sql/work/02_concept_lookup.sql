-- Source code -> standard concept(s), following the OHDSI mapping conventions.
-- Grain: one row per (code_system, code, target concept); a code with no standard
-- target has one row with target_concept_id 0 (never dropped).
--   1. a site code map (source_to_concept_map, e.g. KCD-7 or local lab codes) wins;
--   2. else the source concept (vocabulary_id = code_system, concept_code = code)
--      and its valid 'Maps to' targets: one source code may give several rows;
--   3. a standard source concept without a 'Maps to' row maps to itself;
--   4. 'Maps to value' of the source concept fills value_as_concept_id.
-- The target's domain picks the CDM table (OMOP domain routing).

create or replace table @work.work_domain_route as
select *
from (
    values
        ('Condition', 'condition_occurrence'),
        ('Drug', 'drug_exposure'),
        ('Procedure', 'procedure_occurrence'),
        ('Measurement', 'measurement'),
        ('Observation', 'observation'),
        ('Device', 'device_exposure')
) as route (domain_id, cdm_table);

create or replace table @work.work_concept_lookup as
with codes as (
    select distinct code_system, code
    from @work.event
    where reject is null
),

site_map as (
    select
        codes.code_system,
        codes.code,
        stcm.source_concept_id,
        stcm.target_concept_id
    from codes
    inner join @vocab.source_to_concept_map as stcm
        on stcm.source_vocabulary_id = codes.code_system
        and stcm.source_code = codes.code
        and stcm.invalid_reason is null
),

source_concept as (
    select
        codes.code_system,
        codes.code,
        c.concept_id as source_concept_id,
        c.standard_concept
    from codes
    inner join @vocab.concept as c
        on c.vocabulary_id = codes.code_system
        and c.concept_code = codes.code
),

maps_to as (
    select
        sc.code_system,
        sc.code,
        sc.source_concept_id,
        r.concept_id_2 as target_concept_id
    from source_concept as sc
    inner join @vocab.concept_relationship as r
        on r.concept_id_1 = sc.source_concept_id
        and r.relationship_id = 'Maps to'
        and r.invalid_reason is null
    union
    select code_system, code, source_concept_id, source_concept_id
    from source_concept as sc
    where standard_concept = 'S'
        and not exists (
            select 1 from @vocab.concept_relationship as r
            where r.concept_id_1 = sc.source_concept_id and r.relationship_id = 'Maps to'
                and r.invalid_reason is null
        )
),

maps_to_value as (
    select
        r.concept_id_1 as source_concept_id,
        min(r.concept_id_2) as value_as_concept_id
    from @vocab.concept_relationship as r
    where r.relationship_id = 'Maps to value' and r.invalid_reason is null
        and r.concept_id_1 in (select source_concept_id from source_concept)
    group by r.concept_id_1
),

mapped as (
    select code_system, code, coalesce(source_concept_id, 0) as source_concept_id,
        target_concept_id
    from site_map
    union all
    select code_system, code, source_concept_id, target_concept_id
    from maps_to as m
    where not exists (
        select 1 from site_map as s where s.code_system = m.code_system and s.code = m.code
    )
),

standard_target as (
    -- only valid standard targets count as mapped
    select mapped.*, t.domain_id
    from mapped
    inner join @vocab.concept as t
        on t.concept_id = mapped.target_concept_id
        and t.standard_concept = 'S'
        and t.invalid_reason is null
)

select
    codes.code_system,
    codes.code,
    coalesce(st.source_concept_id, sc.source_concept_id, 0) as source_concept_id,
    coalesce(st.target_concept_id, 0) as target_concept_id,
    route.cdm_table,
    mtv.value_as_concept_id
from codes
left join standard_target as st
    on st.code_system = codes.code_system and st.code = codes.code
left join (
    select code_system, code, min(source_concept_id) as source_concept_id
    from source_concept
    group by code_system, code
) as sc
    on sc.code_system = codes.code_system and sc.code = codes.code
left join @work.work_domain_route as route
    on route.domain_id = coalesce(st.domain_id, '')
left join maps_to_value as mtv
    on mtv.source_concept_id = coalesce(st.source_concept_id, sc.source_concept_id);

-- A standard target outside the six event domains (e.g. Visit, Spec Anatomic Site)
-- is recorded in observation, the OHDSI catch-all.
update @work.work_concept_lookup set cdm_table = 'observation'
where target_concept_id <> 0 and cdm_table is null;
