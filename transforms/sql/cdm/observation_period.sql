select
    k.id as observation_period_id,
    w.person_id,
    w.observation_period_start_date,
    w.observation_period_end_date,
    32817 as period_type_concept_id
from @work.work_observation_period as w
inner join @stage.key_map as k on k.tbl = 'observation_period' and k.source_key = w.source_key
