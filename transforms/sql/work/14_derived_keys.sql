-- Natural keys of the derived tables (periods and eras), for the key map.
create or replace table @work.work_derived_keys as
select 'observation_period' as tbl, source_key from @work.work_observation_period
union all
select 'condition_era', source_key from @work.work_condition_era
union all
select 'drug_era', source_key from @work.work_drug_era
union all
select 'dose_era', source_key from @work.work_dose_era;
