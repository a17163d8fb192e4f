-- Distinct locations (city / state / ZIP / county level) of patients and care sites.
-- Grain: one row per distinct address tuple; street addresses are never staged.

create or replace table @work.work_location as
with address as (
    select city, state, zip, county, country from @work.person where reject is null
    union
    select city, state, zip, county, country from @work.care_site where reject is null
)

select
    *,
    md5_number(concat_ws(chr(31), coalesce(city, ''), coalesce(state, ''), coalesce(zip, ''),
        coalesce(county, ''), coalesce(country, ''))) as location_key
from address
where coalesce(city, state, zip, county, country) is not null;
