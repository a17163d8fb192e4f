"""Privacy at the door: keyed pseudonyms for patient ids, identifier scrubbing of free text.

Patient ids become ``HMAC-SHA256(site secret, id)`` (the first 128 bits, as 32 hex
digits: it fits the CDM's ``person_source_value``). The HMAC is computed in SQL
by the engine (RFC 2104 over DuckDB's ``sha256``), so no row passes through
Python. Each site has its own secret, so the same patient gets different
pseudonyms at two sites. Secrets come from the environment
(``OMOP_ETL_SECRET_<SITE>``) or an Airflow Connection ``omop_etl_secret_<site>``
(its password) — never from the repository.

The demo runs with a published key (:data:`DEMO_KEY`), and says so loudly: its
pseudonyms protect nothing and it must never see real data.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from omop_etl.errors import EtlError
from omop_etl.sql import literal

DEMO_KEY = "omop-etl DEMO key: public, for synthetic data only"
DEMO_WARNING = (
    "WARNING: using the public DEMO pseudonymization key. Its pseudonyms protect "
    "nothing: use it only for synthetic data, never for a real export."
)
PSEUDONYM_HEX_DIGITS = 32

# Identifier patterns scrubbed from the free text a spec allows: (name, regex).
# Korean resident registration numbers, Korean phone numbers (mobile and landline,
# also with dots or spaces), North American phone numbers written with separators
# ((617) 555-0123, 617-555-0123, +1 617 555 0123), e-mail addresses.
IDENTIFIER_PATTERNS = (
    ("rrn", r"\d{6}\s?-\s?[1-8]\d{6}"),
    ("phone", r"(\+82[ .-]?|\b0)\d{1,2}[ .-]?\d{3,4}[ .-]?\d{4}\b"),
    ("phone_nanp", r"(\+1[ .-]?)?(\(\d{3}\)|\b\d{3})[ .-]?\d{3}[ .-]\d{4}\b"),
    ("email", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
)
SCRUBBED = "[REDACTED]"


def secret_env_var(site: str) -> str:
    return f"OMOP_ETL_SECRET_{site.upper()}"


def airflow_connection_id(site: str) -> str:
    return f"omop_etl_secret_{site}"


def site_key(site: str, *, demo: bool = False) -> bytes:
    """The site's pseudonymization secret: environment, else Airflow Connection.

    ``demo`` falls back to the public demo key when no secret is configured.
    """
    value = os.environ.get(secret_env_var(site)) or _airflow_secret(site)
    if value:
        return value.encode("utf-8")
    if demo:
        return DEMO_KEY.encode("utf-8")
    raise EtlError(
        f"site {site}: no pseudonymization secret. Set {secret_env_var(site)} (or the "
        f"password of Airflow Connection {airflow_connection_id(site)!r}); for synthetic "
        "demo data only, pass --demo-key"
    )


def _airflow_secret(site: str) -> str | None:
    """The password of the site's Airflow Connection: from its ``AIRFLOW_CONN_*``
    environment variable (JSON or URI, as Airflow accepts them), else, inside an Airflow
    task, from Airflow's secrets backends."""
    conn_id = airflow_connection_id(site)
    raw = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    if raw:
        return connection_password(raw)
    if not os.environ.get("AIRFLOW_CTX_DAG_ID"):
        return None  # not in an Airflow task
    try:
        from airflow.sdk import Connection

        return Connection.get(conn_id).password or None
    except Exception:  # any failure means "no connection": the caller says so
        return None


def connection_password(raw: str) -> str | None:
    """The password of an Airflow Connection written as JSON or as a URI.

    >>> connection_password('{"conn_type": "generic", "password": "k"}')
    'k'
    >>> connection_password("generic://:s%2Fecret@")
    's/ecret'
    """
    import json
    from urllib.parse import unquote, urlsplit

    text = raw.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text).get("password")
        except (ValueError, AttributeError):
            return None
        return str(value) if value else None
    password = urlsplit(text).password
    return unquote(password) if password else None


def hmac_sql(expr: str, key: bytes) -> str:
    """SQL for the pseudonym of a VARCHAR expression: truncated hex HMAC-SHA256.

    HMAC(K, m) = H((K' xor opad) || H((K' xor ipad) || m)), K' the key padded to the
    64-byte block (hashed first when longer).
    """
    block = hashlib.sha256(key).digest() if len(key) > 64 else key
    block = block.ljust(64, b"\0")
    ipad = bytes(b ^ 0x36 for b in block).hex()
    opad = bytes(b ^ 0x5C for b in block).hex()
    inner = f"unhex(sha256(unhex({literal(ipad)}) || encode({expr})))"
    return f"left(sha256(unhex({literal(opad)}) || {inner}), {PSEUDONYM_HEX_DIGITS})"


def pseudonym(value: str, key: bytes) -> str:
    """The pseudonym of one id, in Python (for tests and support tools)."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_DIGITS]


def scrub_sql(expr: str) -> str:
    """SQL replacing every identifier pattern in a text expression by [REDACTED]."""
    for _, pattern in IDENTIFIER_PATTERNS:
        expr = f"regexp_replace({expr}, {literal(pattern)}, {literal(SCRUBBED)}, 'g')"
    return expr
