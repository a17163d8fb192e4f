-- One row per distinct patient / care-site location (city, state, ZIP, county).
select
    location_id,
    cast(null as varchar) as address_1,
    cast(null as varchar) as address_2,
    city,
    state,
    zip,
    county,
    concat_ws(', ', city, state, zip, county) as location_source_value,
    0 as country_concept_id,
    country as country_source_value,
    cast(null as double) as latitude,
    cast(null as double) as longitude
from @work.work_location_id
