-- One row per patient with a date of death (EHR record, type 32817).
select
    ids.person_id,
    cast(p.death_datetime as date) as death_date,
    p.death_datetime,
    32817 as death_type_concept_id,
    0 as cause_concept_id,
    cast(null as varchar) as cause_source_value,
    0 as cause_source_concept_id
from @work.person as p
inner join @work.work_person as ids on ids.person_source_value = p.person_source_value
where p.reject is null and p.death_datetime is not null
