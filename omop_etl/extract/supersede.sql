-- Incremental sites: a record (same @key) in several batches is taken from the latest
-- batch; its rows of earlier batches are `superseded`, so the CDM shows the newest
-- version once. Run after the duplicate rule and the copy numbers, before the
-- referential rules.

update @work.@target set reject = 'superseded'
where rowid in (
    select rowid
    from (
        select rowid, batch_id, max(batch_id) over (partition by @key) as latest
        from @work.@target
        where reject is null and @key in (
            select @key from @work.@target
            where reject is null group by @key having count(distinct batch_id) > 1
        )
    )
    where batch_id < latest
);
