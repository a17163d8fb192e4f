-- This batch's source codes that map to no standard concept (concept 0), most
-- frequent first: the terminologist's work list (the unmapped-code report).
-- Grain: one row per (code system, code); the name is the one the export gives most.

create or replace table @work.work_unmapped_codes as
select
    @batch_id as batch_id,
    code_system as source_vocabulary_id,
    code as source_code,
    mode(code_name) as source_name,
    count(*) as frequency,
    min(default_domain) as domain_id
from @work.work_event
where concept_id = 0 and batch_id = @batch_id
group by code_system, code
order by frequency desc, source_vocabulary_id, source_code;
