-- Stable ids from the site's persisted key map.
-- A key seen before keeps its id (reruns and later batches give the same ids); new
-- keys get the next ids of the site's block, in key order, so a fresh warehouse
-- gives the same ids too. Blocks differ per site, so ids never collide across sites.

create table if not exists @stage.key_map (tbl varchar, source_key uhugeint, id integer);

insert into @stage.key_map
with new_key as (
    -- the keys are distinct by construction: duplicates were rejected in staging
    select wanted.tbl, wanted.source_key
    from @work.@keys as wanted
    anti join @stage.key_map as k
        on k.tbl = wanted.tbl and k.source_key = wanted.source_key
),

last_id as (
    select tbl, max(id) as max_id from @stage.key_map group by tbl
)

select
    new_key.tbl,
    new_key.source_key,
    coalesce(last_id.max_id, @id_base) + row_number() over (
        partition by new_key.tbl order by new_key.source_key
    ) as id
from new_key
left join last_id on last_id.tbl = new_key.tbl;
