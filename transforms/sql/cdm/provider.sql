select
    ids.provider_id,
    p.provider_name,
    p.npi,
    cast(null as varchar) as dea,
    coalesce(p.specialty_concept_id, 0) as specialty_concept_id,
    cs.care_site_id,
    p.year_of_birth,
    coalesce(p.gender_concept_id, 0) as gender_concept_id,
    p.provider_source_value,
    p.specialty_source_value,
    0 as specialty_source_concept_id,
    p.gender_source_value,
    0 as gender_source_concept_id
from @work.provider as p
inner join @work.work_provider as ids on ids.provider_source_value = p.provider_source_value
left join @work.work_care_site as cs on cs.care_site_source_value = p.care_site_source_value
where p.reject is null
