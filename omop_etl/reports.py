"""Reports a run leaves for people: the unmapped-code work list for terminologists.

The unmapped-code report lists a site batch's source codes that map to no standard
concept, most frequent first, as a CSV that OHDSI Usagi imports as it is: in Usagi's
import dialog pick ``sourceCode``, ``sourceName`` and ``sourceFrequency`` as the
code, name and frequency columns and ``sourceVocabularyId`` (and ``domainId``) as
additional info. Usagi then saves the mapping with an
``ADD_INFO:sourceVocabularyId`` column, which ``omop-etl vocab load`` reads back as
a code map (put the file under ``mappings/codemaps/``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb

from omop_etl import settings
from omop_etl.errors import EtlError
from omop_etl.sql import quote_ident

USAGI_COLUMNS = ("sourceCode", "sourceName", "sourceFrequency", "sourceVocabularyId", "domainId")


def latest_batch(con: duckdb.DuckDBPyConnection, site: str) -> str:
    """The newest batch the site has an unmapped-code list for."""
    stage = quote_ident(settings.stage_schema(site))
    try:
        (batch,) = con.execute(f"select max(batch_id) from {stage}.unmapped_codes").fetchall()[0]
    except duckdb.CatalogException:
        batch = None
    if batch is None:
        raise EtlError(f"site {site} has no published batch in this warehouse yet")
    return batch


def write_unmapped_report(
    con: duckdb.DuckDBPyConnection, site: str, batch_id: str, out: Path
) -> int:
    """Write the Usagi import CSV of a site batch's unmapped codes; returns the codes listed."""
    stage = quote_ident(settings.stage_schema(site))
    rows = con.execute(
        "select source_code, coalesce(source_name, source_code), frequency, "
        f"source_vocabulary_id, domain_id from {stage}.unmapped_codes where batch_id = ? "
        "order by frequency desc, source_vocabulary_id, source_code",
        [batch_id],
    ).fetchall()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(USAGI_COLUMNS)
        writer.writerows(rows)
    return len(rows)
