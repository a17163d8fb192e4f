"""Extraction: a batch's export files -> the canonical staging tables.

``batch.extract_site`` is the entry point; ``files`` finds the export's files,
``readers`` opens them (compression, encodings), ``records`` counts records from the
file itself and repairs damaged files, ``select`` writes each file's staging SELECT
(lookups, elements, types, rules), ``sandbox`` checks the spec's SQL, and
``accounting`` turns staging into counts and rejects (``outcome``).
"""

from omop_etl.extract.batch import extract_site
from omop_etl.extract.outcome import (
    FLAGS_DDL,
    NOT_IN_SPEC,
    RECONCILIATION_DDL,
    REJECTS_DDL,
    STORED_REJECTS_DDL,
    SUPERSEDED,
    FileResult,
)

__all__ = [
    "FLAGS_DDL",
    "NOT_IN_SPEC",
    "RECONCILIATION_DDL",
    "REJECTS_DDL",
    "STORED_REJECTS_DDL",
    "SUPERSEDED",
    "FileResult",
    "extract_site",
]
