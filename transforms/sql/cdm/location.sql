-- One row per distinct patient / care-site location (city, state, ZIP, county).
-- The CDM's state is a 2-letter code and its ZIP at most 9 characters: a state
-- name (Synthea writes "Massachusetts"; a Korean province has no 2-letter code)
-- is left out of `state`, a US ZIP+4 loses its hyphen; location_source_value
-- keeps the address as the export gave it.
select
    location_id,
    cast(null as varchar) as address_1,
    cast(null as varchar) as address_2,
    city,
    case when length(state) <= 2 then upper(state) end as state,
    case
        when regexp_full_match(zip, '[0-9]{5}-[0-9]{4}') then replace(zip, '-', '')
        when length(zip) <= 9 then zip
    end as zip,
    county,
    concat_ws(', ', city, state, zip, county) as location_source_value,
    0 as country_concept_id,
    country as country_source_value,
    cast(null as double) as latitude,
    cast(null as double) as longitude
from @work.work_location_id
