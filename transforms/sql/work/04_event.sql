-- The mapped event stream.
-- Grain: one row per (staged event, standard target concept). The target's domain
-- picks cdm_table; an unmapped code (target 0) goes to the table of the file's
-- default domain, keeping its source value. source_key identifies the CDM row
-- across runs (the staged row's content hash combined with the target). A coded
-- result is the vocabulary's 'Maps to value', else the one the spec's value map gave.

create or replace table @work.work_event as
select
    e.* exclude (value_as_concept_id),
    lookup.source_concept_id,
    lookup.target_concept_id as concept_id,
    coalesce(lookup.value_as_concept_id, e.value_as_concept_id) as value_as_concept_id,
    coalesce(lookup.cdm_table, default_route.cdm_table) as cdm_table,
    -- a unit that maps to nothing is 0; no unit at all stays NULL
    case when e.unit_source_value is not null then coalesce(unit.unit_concept_id, 0) end
        as unit_concept_id,
    -- xor keeps the key unique per (row, target): two rows' 128-bit hashes would have
    -- to differ only in their low 31 bits to collide
    xor(e.row_key, cast(lookup.target_concept_id as uhugeint)) as source_key
from @work.event as e
inner join @work.work_concept_lookup as lookup
    on lookup.code_system = e.code_system and lookup.code = e.code
inner join @work.work_domain_route as default_route
    on default_route.domain_id = e.default_domain
left join @work.work_unit_lookup as unit
    on unit.unit_source_value = e.unit_source_value
where e.reject is null;
