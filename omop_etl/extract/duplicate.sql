-- One duplicate rule: rows of this batch's @target sharing @key (a patient,
-- encounter, care site or provider id; for events and coverage periods the row key of
-- the file entries in @entries only: a declared record key, or the content of entries
-- that ask for exact copies to be rejected) are duplicates; all copies but one get
-- @rule. A row with a record number (its entry declares a record key) keeps the latest
-- record: a later record (of a later file of the entry) supersedes an earlier one.
-- Otherwise the copy kept is the one with the smallest content hash, so reruns keep
-- the same one. The repeated keys are
-- found first (a cheap aggregate), so only those rows are ranked.

update @work.@target set reject = @rule
where rowid in (
    select rowid
    from (
        select rowid, row_number() over (
            partition by @key
            order by case when record_no is not null then file_no end desc nulls last,
                record_no desc nulls last, row_key, rowid
        ) as copy
        from @work.@target
        where reject is null and batch_id = @batch_id
            and (@every_entry or list_contains(@entries, source_file))
            and @key in (
                select @key from @work.@target
                where reject is null and batch_id = @batch_id
                    and (@every_entry or list_contains(@entries, source_file))
                group by 1 having count(*) > 1
            )
    )
    where copy > 1
);
