"""Staging -> OMOP CDM v5.4: one SQL file per CDM table, and the runner that orders them."""
