"""Patient ids reach the warehouse only as keyed pseudonyms; secrets come from the environment."""

from __future__ import annotations

import hashlib
import hmac

import duckdb
import pytest

from omop_etl.errors import EtlError
from omop_etl.privacy import DEMO_KEY, hmac_sql, pseudonym, secret_env_var, site_key


def _populate(tiny) -> None:
    tiny.patient("MRN-000123")
    tiny.patient("MRN-000456", sex="F")
    tiny.visit("V1", "MRN-000123", "2020-01-01 08:00", "2020-01-01 09:00")
    tiny.diagnosis("MRN-000123", "C1", "2020-01-01", visit="V1")
    tiny.diagnosis("MRN-000456", "C2", "2020-02-01")
    tiny.drug("MRN-000456", "D1", "2020-02-01", days="10")


def _every_text_value(warehouse: str) -> set[str]:
    """Every text value in every table of the warehouse (staging, rejects and key maps too)."""
    con = duckdb.connect(warehouse, read_only=True)
    try:
        columns = con.execute(
            "select schema_name, table_name, column_name from duckdb_columns() "
            "where data_type = 'VARCHAR' and not internal"
        ).fetchall()
        values = set()
        for schema, table, column in columns:
            rows = con.execute(
                f'select distinct cast("{column}" as varchar) from "{schema}"."{table}"'
            ).fetchall()
            values |= {v for (v,) in rows if v is not None}
        return values
    finally:
        con.close()


def test_the_sql_hmac_is_rfc_2104_hmac_sha256():
    con = duckdb.connect()
    for key in (b"k", b"a much longer key than the sixty-four byte block of sha-256 .....!"):
        for value in ("P1", "환자-001", ""):
            (got,) = con.execute(f"select {hmac_sql('?', key)}", [value]).fetchall()[0]
            want = hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]
            assert got == want == pseudonym(value, key)


def test_patient_ids_and_their_plain_hashes_appear_nowhere_in_the_warehouse(tiny):
    _populate(tiny)
    tiny.run()
    values = _every_text_value(tiny.warehouse.location)
    for raw in ("MRN-000123", "MRN-000456"):
        plain = {
            raw,
            hashlib.md5(raw.encode()).hexdigest(),
            hashlib.sha1(raw.encode()).hexdigest(),
            hashlib.sha256(raw.encode()).hexdigest(),
            hashlib.sha256(raw.encode()).hexdigest()[:32],
        }
        assert not {v for v in values if any(p in v for p in plain)}
    assert sorted(tiny.query("select person_source_value from cdm_tiny.person")) == sorted(
        [(tiny.pseudonym("MRN-000123"),), (tiny.pseudonym("MRN-000456"),)]
    )


def test_the_same_patient_gets_different_pseudonyms_at_two_sites(tiny):
    _populate(tiny)
    tiny.add_spec("tiny_b", id_block=4)
    tiny.run()
    tiny.run(site="tiny_b")
    a = {v for (v,) in tiny.query("select person_source_value from cdm_tiny.person")}
    b = {v for (v,) in tiny.query("select person_source_value from cdm_tiny_b.person")}
    assert len(a) == len(b) == 2 and not a & b


def test_a_site_without_a_secret_is_refused_unless_the_demo_key_is_asked_for(
    tiny, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv(secret_env_var("tiny"))
    with pytest.raises(EtlError, match=r"no pseudonymization secret\. Set OMOP_ETL_SECRET_TINY"):
        site_key("tiny")
    assert site_key("tiny", demo=True) == DEMO_KEY.encode()
    _populate(tiny)
    with pytest.raises(EtlError, match="OMOP_ETL_SECRET_TINY"):
        tiny.run()
    tiny.run(demo_key=True)
    assert tiny.query("select count(*) from cdm_tiny.person") == [(2,)]


@pytest.mark.parametrize(
    "connection",
    ['{"conn_type": "generic", "password": "from-airflow"}', "generic://:from-airflow@"],
)
def test_the_secret_comes_from_an_airflow_connection_when_no_variable_is_set(
    connection: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv(secret_env_var("tiny"))
    monkeypatch.setenv("AIRFLOW_CONN_OMOP_ETL_SECRET_TINY", connection)
    assert site_key("tiny") == b"from-airflow"
    monkeypatch.setenv(secret_env_var("tiny"), "from-env")  # the variable wins
    assert site_key("tiny") == b"from-env"


def test_the_scrubber_finds_korean_and_north_american_phone_numbers_and_leaves_values():
    from omop_etl.privacy import scrub_sql
    from omop_etl.warehouse import connect_memory

    con = connect_memory()
    texts = {
        "call 010-1234-5678 today": "call [REDACTED] today",
        "office (617) 555-0123.": "office [REDACTED].",
        "cell 617-555-0123 or +1 617 555 0123": "cell [REDACTED] or [REDACTED]",
        "RRN 900101-1234567": "RRN [REDACTED]",
        "BP 120/80, dose 10 mg at 08:00, order 2021-03-04": "BP 120/80, dose 10 mg at 08:00, "
        "order 2021-03-04",
    }
    for text, scrubbed in texts.items():
        assert con.execute(f"select {scrub_sql('?')}", [text]).fetchone()[0] == scrubbed
