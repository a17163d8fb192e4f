-- One duplicate rule: rows of this batch's @target sharing @key (a patient,
-- encounter, care site or provider id; for events and coverage periods, the whole
-- row's content hash) are duplicates; all copies but one get @rule. The copy kept
-- is the one with the smallest content hash, so reruns keep the same one. The
-- repeated keys are found first (a cheap aggregate), so only those rows are ranked.

update @work.@target set reject = @rule
where rowid in (
    select rowid
    from (
        select rowid, row_number() over (partition by @key order by row_key, rowid) as copy_no
        from @work.@target
        where reject is null and batch_id = @batch_id and @key in (
            select @key from @work.@target
            where reject is null and batch_id = @batch_id
            group by 1 having count(*) > 1
        )
    )
    where copy_no > 1
);
