-- Id lookups the CDM transforms join on (source value -> CDM id).

create or replace table @work.work_person as
select p.person_source_value, k.id as person_id
from @work.person as p
inner join @stage.key_map as k
    on k.tbl = 'person' and k.source_key = md5_number(p.person_source_value)
where p.reject is null;

create or replace table @work.work_visit as
select
    g.visit_source_value,
    g.person_source_value,
    vo.id as visit_occurrence_id,
    vd.id as visit_detail_id
from @work.work_visit_group as g
inner join @stage.key_map as vo
    on vo.tbl = 'visit_occurrence' and vo.source_key = g.visit_key
left join @stage.key_map as vd
    on vd.tbl = 'visit_detail' and vd.source_key = g.detail_key and g.is_detail;

create or replace table @work.work_care_site as
select c.care_site_source_value, k.id as care_site_id
from @work.care_site as c
inner join @stage.key_map as k
    on k.tbl = 'care_site' and k.source_key = md5_number(c.care_site_source_value)
where c.reject is null;

create or replace table @work.work_provider as
select p.provider_source_value, k.id as provider_id
from @work.provider as p
inner join @stage.key_map as k
    on k.tbl = 'provider' and k.source_key = md5_number(p.provider_source_value)
where p.reject is null;

create or replace table @work.work_location_id as
select l.*, k.id as location_id
from @work.work_location as l
inner join @stage.key_map as k on k.tbl = 'location' and k.source_key = l.location_key;

create or replace table @work.work_address_location as
select a.owner, a.owner_id, k.id as location_id
from @work.work_address as a
inner join @stage.key_map as k on k.tbl = 'location' and k.source_key = a.location_key;
