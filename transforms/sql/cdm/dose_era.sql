select
    k.id as dose_era_id,
    w.person_id,
    w.drug_concept_id,
    w.unit_concept_id,
    w.dose_value,
    w.dose_era_start_date,
    w.dose_era_end_date
from @work.work_dose_era as w
inner join @stage.key_map as k on k.tbl = 'dose_era' and k.source_key = w.source_key
