"""Consortium OMOP pipeline: site EHR exports -> OMOP CDM v5.4."""

__version__ = "0.1.0"
