-- One row describing this site's CDM: the batch's dates, not the wall clock, so a
-- rerun of the same batch writes the same row.
select
    @site_description as cdm_source_name,
    @site as cdm_source_abbreviation,
    @site as cdm_holder,
    @site_description as source_description,
    cast(null as varchar) as source_documentation_reference,
    'omop-etl ' || @etl_version || ', spec ' || @spec_sha256 as cdm_etl_reference,
    cast(@source_release_date as date) as source_release_date,
    cast(@batch_date as date) as cdm_release_date,
    'v5.4' as cdm_version,
    756265 as cdm_version_concept_id,
    coalesce(
        (select max(vocabulary_version) from @vocab.vocabulary where vocabulary_id = 'None'),
        'unknown'
    ) as vocabulary_version
