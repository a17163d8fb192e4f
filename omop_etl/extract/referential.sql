-- Referential rules on staging, run once every file of the batch is staged and
-- its duplicates are marked (duplicate.sql). A row that breaks a rule keeps its
-- data and gets the rule in `reject`; the rejects table and the reconciliation
-- count it. Nothing is deleted.
--   * encounters, events and coverage periods of an unknown patient: `unknown_person`;
--   * cost lines of an unknown encounter: `unknown_visit`;
--   * events of an unknown encounter are kept without it, flagged `unknown_visit`;
--   * events more than 60 days after death are kept, flagged `after_death`.

update @work.visit as v set reject = 'unknown_person'
where reject is null
    and not exists (
        select 1 from @work.person as p
        where p.person_source_value = v.person_source_value and p.reject is null
    );

update @work.event as e set reject = 'unknown_person'
where reject is null
    and not exists (
        select 1 from @work.person as p
        where p.person_source_value = e.person_source_value and p.reject is null
    );

update @work.payer_plan as pp set reject = 'unknown_person'
where reject is null
    and not exists (
        select 1 from @work.person as p
        where p.person_source_value = pp.person_source_value and p.reject is null
    );

update @work.cost as c set reject = 'unknown_visit'
where reject is null
    and not exists (
        select 1 from @work.visit as v
        where v.visit_source_value = c.visit_source_value and v.reject is null
    );

-- An event whose encounter is unknown keeps its data; only the link is dropped, and
-- the row is flagged `unknown_visit`.
update @work.event as e set visit_source_value = null, flag = coalesce(flag, 'unknown_visit')
where reject is null
    and visit_source_value is not null
    and not exists (
        select 1 from @work.visit as v
        where v.visit_source_value = e.visit_source_value and v.reject is null
    );

-- An event dated more than 60 days after its patient's death (the grace period of
-- OHDSI's plausibleBeforeDeath check) is kept and flagged `after_death`.
update @work.event as e set flag = coalesce(e.flag, 'after_death')
from @work.person as p
where e.reject is null
    and p.reject is null
    and p.death_datetime is not null
    and p.person_source_value = e.person_source_value
    and e.start_datetime > p.death_datetime + interval 60 days;
