-- Referential rules on staging, run once every file of the batch is staged.
-- A row that breaks a rule keeps its data and gets the rule in `reject`; the
-- rejects table and the reconciliation count it. Nothing is deleted.
--   * an id given twice (patient, encounter, care site, provider): every copy
--     but one is `duplicate:<target>` (the copy kept is the one with the smallest
--     content hash, so reruns keep the same one);
--   * the very same event row twice in one file: later copies are `duplicate:event`;
--   * encounters, events and coverage periods of an unknown patient: `unknown_person`;
--   * cost lines of an unknown encounter: `unknown_visit`.
-- Each duplicate rule first finds the repeated keys (a cheap aggregate), then ranks
-- only those rows.

update @work.person set reject = 'duplicate:person'
where rowid in (
    select rowid from (
        select rowid, row_number() over (partition by person_source_value order by row_key, rowid) as n
        from @work.person
        where reject is null and person_source_value in (
            select person_source_value from @work.person where reject is null
            group by 1 having count(*) > 1
        )
    ) where n > 1
);

update @work.visit set reject = 'duplicate:visit'
where rowid in (
    select rowid from (
        select rowid, row_number() over (partition by visit_source_value order by row_key, rowid) as n
        from @work.visit
        where reject is null and visit_source_value in (
            select visit_source_value from @work.visit where reject is null
            group by 1 having count(*) > 1
        )
    ) where n > 1
);

update @work.care_site set reject = 'duplicate:care_site'
where rowid in (
    select rowid from (
        select rowid, row_number() over (partition by care_site_source_value order by row_key, rowid) as n
        from @work.care_site
        where reject is null and care_site_source_value in (
            select care_site_source_value from @work.care_site where reject is null
            group by 1 having count(*) > 1
        )
    ) where n > 1
);

update @work.provider set reject = 'duplicate:provider'
where rowid in (
    select rowid from (
        select rowid, row_number() over (partition by provider_source_value order by row_key, rowid) as n
        from @work.provider
        where reject is null and provider_source_value in (
            select provider_source_value from @work.provider where reject is null
            group by 1 having count(*) > 1
        )
    ) where n > 1
);

update @work.event set reject = 'duplicate:event'
where rowid in (
    select rowid from (
        select rowid, row_number() over (partition by row_key order by rowid) as n
        from @work.event
        where reject is null and row_key in (
            select row_key from @work.event where reject is null
            group by 1 having count(*) > 1
        )
    ) where n > 1
);

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
