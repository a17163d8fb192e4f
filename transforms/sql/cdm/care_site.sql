select
    ids.care_site_id,
    cs.care_site_name,
    coalesce(cs.place_of_service_concept_id, 0) as place_of_service_concept_id,
    loc.location_id,
    cs.care_site_source_value,
    cs.place_of_service_source_value
from @work.care_site as cs
inner join @work.work_care_site as ids on ids.care_site_source_value = cs.care_site_source_value
left join @work.work_address_location as loc
    on loc.owner = 'care_site' and loc.owner_id = cs.care_site_source_value
where cs.reject is null
