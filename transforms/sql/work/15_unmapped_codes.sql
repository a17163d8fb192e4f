-- This batch's source codes that map to no standard concept (concept 0), most
-- frequent first: the terminologist's work list (the unmapped-code report).
-- Grain: one row per (code system, code); the name is the one the export gives most.

create or replace table @work.work_unmapped_codes as
select
    @batch_id as batch_id,
    e.code_system as source_vocabulary_id,
    e.code as source_code,
    mode(e.code_name) as source_name,
    count(*) as frequency,
    min(e.default_domain) as domain_id
from @work.event as e
semi join (
    select code_system, code from @work.work_concept_lookup where target_concept_id = 0
) as unmapped
    on unmapped.code_system = e.code_system and unmapped.code = e.code
where e.reject is null and e.batch_id = @batch_id
group by e.code_system, e.code
order by frequency desc, source_vocabulary_id, source_code;
