-- Provenance of the published CDM: the batch it was built from.
select
    @id_base + 1 as metadata_id,
    0 as metadata_concept_id,
    0 as metadata_type_concept_id,
    'etl_batch_id' as name,
    @batch_id as value_as_string,
    cast(null as integer) as value_as_concept_id,
    cast(null as double) as value_as_number,
    cast(@batch_date as date) as metadata_date,
    cast(null as timestamp) as metadata_datetime
union all
select
    @id_base + 2, 0, 0, 'etl_site_spec_sha256', @spec_sha256, null, null, cast(@batch_date as date), null
