-- Locations (city / state / ZIP / county level) of patients and care sites.
-- work_address: one row per patient or care site with an address;
-- work_location: one row per distinct address. Street addresses are never staged.

create or replace table @work.work_address as
with address as (
    select 'person' as owner, person_source_value as owner_id, city, state, zip, county, country
    from @work.person
    where reject is null
    union all
    select 'care_site', care_site_source_value, city, state, zip, county, country
    from @work.care_site
    where reject is null
)

select
    *,
    md5_number(concat_ws(chr(31), coalesce(city, ''), coalesce(state, ''), coalesce(zip, ''),
        coalesce(county, ''), coalesce(country, ''))) as location_key
from address
where coalesce(city, state, zip, county, country) is not null;

create or replace table @work.work_location as
select distinct city, state, zip, county, country, location_key
from @work.work_address;
