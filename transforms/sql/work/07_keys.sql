-- Every natural key that needs a CDM id in this batch.
-- Grain: one row per (CDM table, source key); ids are assigned from the site's key map.

create or replace table @work.work_keys as
select 'person' as tbl, md5_number(person_source_value) as source_key
from @work.person where reject is null
union all
select distinct 'visit_occurrence', visit_key from @work.work_visit_group
union all
select 'visit_detail', detail_key from @work.work_visit_group where is_detail
union all
select cdm_table, source_key from @work.work_event
union all
select 'location', location_key from @work.work_location
union all
select 'care_site', md5_number(care_site_source_value) from @work.care_site where reject is null
union all
select 'provider', md5_number(provider_source_value) from @work.provider where reject is null
union all
select 'payer_plan_period', row_key from @work.payer_plan where reject is null
union all
select distinct 'cost', md5_number(visit_source_value) from @work.cost where reject is null
union all
select 'note', row_key from @work.event where reject is null and note is not null;
