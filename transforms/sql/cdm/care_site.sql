select
    ids.care_site_id,
    cs.care_site_name,
    coalesce(cs.place_of_service_concept_id, 0) as place_of_service_concept_id,
    loc.location_id,
    cs.care_site_source_value,
    cs.place_of_service_source_value
from @work.care_site as cs
inner join @work.work_care_site as ids on ids.care_site_source_value = cs.care_site_source_value
left join @work.work_location_id as loc
    on loc.city is not distinct from cs.city
    and loc.state is not distinct from cs.state
    and loc.zip is not distinct from cs.zip
    and loc.county is not distinct from cs.county
    and loc.country is not distinct from cs.country
where cs.reject is null
