select
    k.id as condition_era_id,
    w.person_id,
    w.condition_concept_id,
    w.condition_era_start_date,
    w.condition_era_end_date,
    w.condition_occurrence_count
from @work.work_condition_era as w
inner join @stage.key_map as k on k.tbl = 'condition_era' and k.source_key = w.source_key
