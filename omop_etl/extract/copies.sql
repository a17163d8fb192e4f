-- Repeated events are kept (OMOP keeps repeated same-day events): rows of this
-- batch's @target alike in every mapped value are numbered as copies 1, 2, ..., and
-- from the second copy on the copy number is folded into the row key (xor with the
-- hash of the number), so each copy is a CDM row of its own with a stable id. Which
-- row gets which number does not matter: they are alike. Run after the duplicate
-- rule, before supersede.sql.

update @work.@target as t
set copy_no = numbered.copy_no,
    row_key = xor(t.row_key, md5_number('copy ' || numbered.copy_no))
from (
    select rowid as id, row_number() over (partition by row_key order by rowid) as copy_no
    from @work.@target
    where reject is null and batch_id = @batch_id and row_key in (
        select row_key from @work.@target
        where reject is null and batch_id = @batch_id
        group by 1 having count(*) > 1
    )
) as numbered
where t.rowid = numbered.id and numbered.copy_no > 1;
