-- One row per patient with a date of death. Its type is the record's provenance the
-- spec gives (e.g. 32815 death certificate), else an EHR record (32817). The cause is
-- kept as its source value only: its code is not looked up (concepts 0).
select
    ids.person_id,
    cast(p.death_datetime as date) as death_date,
    p.death_datetime,
    coalesce(p.death_type_concept_id, 32817) as death_type_concept_id,
    0 as cause_concept_id,
    p.death_cause_source_value as cause_source_value,
    0 as cause_source_concept_id
from @work.person as p
inner join @work.work_person as ids on ids.person_source_value = p.person_source_value
where p.reject is null and p.death_datetime is not null
