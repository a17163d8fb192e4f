-- Events in the Drug domain. The end date is required: the source end, else
-- start + days_supply - 1, else the start date (OHDSI convention);
-- verbatim_end_date keeps the source end as given. The route concept comes from the
-- spec's value map (0 when there is none); sig is the prescriber's text, scrubbed.
select
    event_id as drug_exposure_id,
    person_id,
    concept_id as drug_concept_id,
    cast(start_datetime as date) as drug_exposure_start_date,
    start_datetime as drug_exposure_start_datetime,
    coalesce(
        cast(end_datetime as date),
        cast(start_datetime as date) + (days_supply - 1),
        cast(start_datetime as date)
    ) as drug_exposure_end_date,
    end_datetime as drug_exposure_end_datetime,
    cast(end_datetime as date) as verbatim_end_date,
    type_concept_id as drug_type_concept_id,
    stop_reason,
    refills,
    quantity,
    days_supply,
    sig,
    coalesce(route_concept_id, 0) as route_concept_id,
    lot_number,
    provider_id,
    visit_occurrence_id,
    visit_detail_id,
    code as drug_source_value,
    source_concept_id as drug_source_concept_id,
    route_source_value,
    unit_source_value as dose_unit_source_value
from @work.work_event_ids
where cdm_table = 'drug_exposure'
