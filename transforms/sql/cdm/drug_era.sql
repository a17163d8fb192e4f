select
    k.id as drug_era_id,
    w.person_id,
    w.drug_concept_id,
    w.drug_era_start_date,
    w.drug_era_end_date,
    w.drug_exposure_count,
    w.gap_days
from @work.work_drug_era as w
inner join @stage.key_map as k on k.tbl = 'drug_era' and k.source_key = w.source_key
