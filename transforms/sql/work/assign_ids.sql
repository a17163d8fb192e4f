-- Stable ids from the site's persisted key map, for the new keys of one CDM table.
-- A key seen before keeps its id (reruns and later batches give the same ids); new
-- keys get the next ids of the site's block, in key order, so a fresh warehouse
-- gives the same ids too. Blocks differ per site, so ids never collide across sites.
-- One table at a time: a window per table sorts in parallel, one partitioned by
-- table does not.

create table if not exists @stage.key_map (tbl varchar, source_key uhugeint, id integer);

insert into @stage.key_map
with new_key as (
    -- the keys are distinct by construction: duplicates were rejected in staging
    select wanted.source_key
    from @work.@keys as wanted
    anti join (select source_key from @stage.key_map where tbl = @tbl) as k
        on k.source_key = wanted.source_key
    where wanted.tbl = @tbl
)

select
    @tbl,
    source_key,
    coalesce((select max(id) from @stage.key_map where tbl = @tbl), @id_base)
    + row_number() over (order by source_key) as id
from new_key;
