-- One row per accepted patient. Concepts for gender, race and ethnicity come from
-- the spec's value maps (0 when the source value is not mapped); source values kept.
select
    ids.person_id,
    coalesce(p.gender_concept_id, 0) as gender_concept_id,
    year(p.birth_datetime) as year_of_birth,
    month(p.birth_datetime) as month_of_birth,
    day(p.birth_datetime) as day_of_birth,
    p.birth_datetime,
    coalesce(p.race_concept_id, 0) as race_concept_id,
    coalesce(p.ethnicity_concept_id, 0) as ethnicity_concept_id,
    loc.location_id,
    prov.provider_id,
    cs.care_site_id,
    p.person_source_value,
    p.gender_source_value,
    0 as gender_source_concept_id,
    p.race_source_value,
    0 as race_source_concept_id,
    p.ethnicity_source_value,
    0 as ethnicity_source_concept_id
from @work.person as p
inner join @work.work_person as ids on ids.person_source_value = p.person_source_value
left join @work.work_address_location as loc
    on loc.owner = 'person' and loc.owner_id = p.person_source_value
left join @work.work_provider as prov on prov.provider_source_value = p.provider_source_value
left join @work.work_care_site as cs on cs.care_site_source_value = p.care_site_source_value
where p.reject is null
