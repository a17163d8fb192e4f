"""The shared PostgreSQL warehouse: layout, bulk loading, atomic publishing, views, roles.

The engine is always DuckDB: a run builds the site's CDM in its scratch database,
and this module moves data between the scratch and the server with ``COPY`` only
(see ``omop_etl.pgcopy``), never row inserts.

Publishing a site, in two steps:

1. Outside any long transaction, the new CDM is copied into ``build_<site>`` (a
   schema only the site's loader can see) and gets its primary keys, indexes and
   foreign keys there. A crash here leaves the published site untouched; the next
   run drops the leftovers.
2. One transaction swaps it in: the old tables of ``cdm_<site>`` are dropped and the
   new ones moved in (``ALTER TABLE .. SET SCHEMA`` moves a table with its indexes
   and keys, no data copied), the batch's records are stored, and the consortium
   views in ``cdm`` are recreated over every published site. Readers see the old
   site or the new one, never a half-loaded or empty one.

Layout: ``vocab``, ``cdm_<site>``, ``cdm`` (views), ``results``, ``stage_<site>``
(rejects, key map, kept staging), ``build_<site>`` (the next CDM while it loads).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import duckdb
import psycopg2
import psycopg2.extensions

from omop_etl import schema, settings
from omop_etl.errors import EtlError
from omop_etl.pgcopy import copy_from_postgres, copy_to_postgres, pg_type
from omop_etl.sql import literal, quote_ident
from omop_etl.staging import TARGETS
from omop_etl.warehouse import Target
from transforms.runner import CDM_TABLES_WRITTEN

if TYPE_CHECKING:
    from omop_etl.pipeline import Batch

VOCAB = settings.VOCAB_SCHEMA
RESULTS = "results"
CONSORTIUM = "cdm"
ANALYST = "omop_analyst"  # reads vocab, cdm, cdm_<site>, results
LOADERS = "omop_loaders"  # every site's loader: owns results and the consortium views
VOCABULARY_OWNER = "omop_vocabulary"  # owns vocab: loads Athena releases
FAULT_VARIABLE = "OMOP_ETL_FAULT"  # fault injection for the failure-semantics tests


def loader_role(site: str) -> str:
    return f"omop_loader_{settings.check_site_name(site)}"


def build_schema(site: str) -> str:
    return f"build_{settings.check_site_name(site)}"


def _lock_key(name: str) -> str:
    """An advisory lock id of the warehouse (hashtext: a stable int4 per name)."""
    return f"hashtext({literal('omop_etl:' + name)})"


@contextlib.contextmanager
def connection(target: Target) -> Iterator[psycopg2.extensions.connection]:
    """A connection to the warehouse; closing it rolls back what was not committed."""
    url = target.location.replace("postgresql+psycopg2://", "postgresql://", 1)
    try:
        con = psycopg2.connect(url, application_name="omop-etl", connect_timeout=10)
    except psycopg2.OperationalError as exc:
        # transient (a server restarting, a network hiccup): the caller may retry
        raise ConnectionError(f"cannot connect to the warehouse: {str(exc).strip()}") from exc
    try:
        yield con
    except psycopg2.Error as exc:  # what the caller did not name itself
        raise _classify(exc, f"warehouse {target}") from exc
    finally:
        con.close()


def _fault(point: str) -> None:
    """Kill this process at a named point (OMOP_ETL_FAULT=<point>), as a crash would:
    the failure-semantics tests prove that any such kill leaves the warehouse whole."""
    if os.environ.get(FAULT_VARIABLE) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _exists(cur, relation: str) -> bool:
    cur.execute("select to_regclass(%s) is not null", [relation])
    return cur.fetchone()[0]


def _role_exists(cur, role: str) -> bool:
    cur.execute("select exists (select from pg_roles where rolname = %s)", [role])
    return cur.fetchone()[0]


def _columns(duck: duckdb.DuckDBPyConnection, table_sql: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in duck.execute(f"describe {table_sql}").fetchall()]


def _create_like(cur, duck: duckdb.DuckDBPyConnection, duck_table: str, pg_table: str) -> None:
    """A PostgreSQL table with the columns of a DuckDB table (types mapped), if missing;
    a table of an older release gets the columns it lacks."""
    columns = _columns(duck, duck_table)
    cols = ", ".join(f"{quote_ident(n)} {pg_type(t)}" for n, t in columns)
    cur.execute(f"create table if not exists {pg_table} ({cols})")
    cur.execute(
        "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0 "
        "and not attisdropped",
        [pg_table],
    )
    have = {row[0] for row in cur.fetchall()}
    for name, duck_type in columns:
        if name not in have:  # ALTER locks the table: only for what is missing
            cur.execute(
                f"alter table {pg_table} add column {quote_ident(name)} {pg_type(duck_type)}"
            )


def _ship(cur, duck: duckdb.DuckDBPyConnection, source: str, dest: str, *, fault: bool = False):
    """COPY the rows of a DuckDB table (or a query: ``source`` in parentheses) into
    ``dest``, by column name; returns the rows copied."""
    columns = [n for n, _ in _columns(duck, source)]
    select = f"select {', '.join(map(quote_ident, columns))} from {source}"

    def on_chunk(rows: int) -> None:
        if fault and rows:
            _fault("copy")

    return copy_to_postgres(duck, select, cur, dest, columns, on_chunk=on_chunk)


# ---------------------------------------------------------------------------
# what a run reads
# ---------------------------------------------------------------------------


def published_batches(target: Target, site: str) -> set[str]:
    with connection(target) as con, con.cursor() as cur:
        if not _exists(cur, f"{RESULTS}.run_log"):
            return set()
        cur.execute(
            "select distinct batch_id from results.run_log where site = %s "
            "and status = 'published'",
            [site],
        )
        return {r[0] for r in cur.fetchall()}


def mapping_state(target: Target, site: str) -> tuple[tuple | None, tuple[str, str]]:
    """The site's latest publication (batch, vocabulary release, code maps digest), or
    None, and the (release, digest) the warehouse's vocabulary has now."""
    from omop_etl.vocab_copy import code_maps_sql, release_sql

    with connection(target) as con, con.cursor() as cur:
        cur.execute(release_sql())
        (release,) = cur.fetchone()
        cur.execute(code_maps_sql())
        (maps,) = cur.fetchone()
        current = (str(release), str(maps)[:16])
        if not _exists(cur, f"{RESULTS}.run_log"):
            return None, current
        cur.execute(
            "select count(*) from information_schema.columns where table_schema = %s "
            "and table_name = 'run_log' and column_name = 'code_maps_digest'",
            [RESULTS],
        )
        if not cur.fetchone()[0]:
            return None, current
        cur.execute(
            "select batch_id, vocabulary_release, code_maps_digest from results.run_log "
            "where site = %s and status = 'published' order by finished_at desc limit 1",
            [site],
        )
        return cur.fetchone(), current


def read_lasting_state(duck: duckdb.DuckDBPyConnection, batch: Batch, target: Target) -> None:
    """The site's key map and (incremental sites) kept staging, into the run's scratch."""
    stage = quote_ident(batch.stage)
    wanted = ["key_map", *(TARGETS if batch.incremental else ())]
    with connection(target) as con, con.cursor() as cur:
        for table in wanted:
            name = quote_ident(table)
            if not _exists(cur, f"{stage}.{name}"):
                continue
            _fetch(cur, f"{stage}.{name}", duck, f"{batch.kept.sql}.{name}")


def read_vocab_table(cur, duck: duckdb.DuckDBPyConnection, table: str) -> None:
    """One vocabulary table of the warehouse into the DuckDB table of the same name."""
    name = f"{quote_ident(VOCAB)}.{quote_ident(table)}"
    _fetch(cur, name, duck, name)


def _fetch(cur, source: str, duck: duckdb.DuckDBPyConnection, dest: str) -> int:
    """COPY a PostgreSQL table into an existing DuckDB table, by the DuckDB table's
    column names (the reverse of ``_ship``); returns the rows copied."""
    cols = ", ".join(quote_ident(n) for n, _ in _columns(duck, dest))
    return copy_from_postgres(cur, f"select {cols} from {source}", duck, dest)


# ---------------------------------------------------------------------------
# delivering a run
# ---------------------------------------------------------------------------


def deliver(
    duck: duckdb.DuckDBPyConnection, batch: Batch, target: Target, *, publish: bool
) -> None:
    """Store the run's records and (``publish``) swap the built CDM in, atomically."""
    from omop_etl.pipeline import outbox_tables

    tables = outbox_tables(duck)
    with connection(target) as con:
        try:
            con.autocommit = True  # loading beside the live site: no long transaction
            with con.cursor() as cur:
                _ensure_layout(cur, duck, batch, tables)
                # one delivery of a site at a time (a rerun while a run still publishes)
                cur.execute(f"select pg_advisory_lock({_lock_key('site:' + batch.site)})")
                if publish:
                    _load_build(cur, duck, batch)
            con.autocommit = False  # the swap: one transaction
            with con.cursor() as cur:
                _store_records(cur, duck, batch, tables)
                if publish:
                    _keep_lasting_state(cur, duck, batch)
                    _swap_in(cur, batch.site)
                _fault("publish")
            con.commit()
        except psycopg2.Error as exc:
            if not con.autocommit:
                con.rollback()
            raise _classify(
                exc, f"delivering {batch.run_id} failed, the published warehouse is unchanged"
            ) from exc


def _classify(exc: psycopg2.Error, what: str) -> Exception:
    """A lost connection is transient (retry); anything else is an error to read."""
    message = f"{what}: {str(exc).strip()}"
    if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
        return ConnectionError(message)
    return EtlError(message)


def _ensure_layout(cur, duck: duckdb.DuckDBPyConnection, batch: Batch, tables: list[str]) -> None:
    """The schemas and record tables a delivery writes to, made where missing (the
    ``roles`` command makes them for loaders). Under a lock: concurrent CREATE ..
    IF NOT EXISTS of the same name can fail."""
    from omop_etl.pipeline import STAGE_RECORDS

    site = batch.site
    cur.execute(f"select pg_advisory_lock({_lock_key('layout')})")
    try:
        _create_schemas(cur, [RESULTS, CONSORTIUM, batch.stage, batch.cdm, build_schema(site)])
        with _as_owner_of(cur, RESULTS):  # shared tables belong to all loaders together
            for table in tables:
                home = batch.stage if table in STAGE_RECORDS else RESULTS
                if home == RESULTS:
                    source = f"{batch.outbox.sql}.{quote_ident(table)}"
                    _create_like(cur, duck, source, f"{RESULTS}.{quote_ident(table)}")
        for table in tables:
            if table in STAGE_RECORDS:
                source = f"{batch.outbox.sql}.{quote_ident(table)}"
                _create_like(cur, duck, source, f"{quote_ident(batch.stage)}.{quote_ident(table)}")
    finally:
        cur.execute(f"select pg_advisory_unlock({_lock_key('layout')})")


def _create_schemas(cur, names: list[str]) -> None:
    """The schemas not there yet (CREATE SCHEMA IF NOT EXISTS checks the right to create
    schemas first, which a site's loader does not have)."""
    cur.execute("select nspname from pg_namespace where nspname = any(%s)", [names])
    present = {r[0] for r in cur.fetchall()}
    for name in names:
        if name not in present:
            cur.execute(f"create schema {quote_ident(name)}")


@contextlib.contextmanager
def _as_owner_of(cur, schema_name: str) -> Iterator[None]:
    """Act as the owner of a shared schema when this user is a member of that role, so
    that what is created there belongs to the group: the loaders' results tables and
    consortium views, the vocabulary owner's tables (see ``create_roles``)."""
    cur.execute(
        "select r.rolname, r.rolname <> current_user "
        "and pg_has_role(current_user, r.oid, 'member') "
        "from pg_namespace n join pg_roles r on r.oid = n.nspowner where n.nspname = %s",
        [schema_name],
    )
    found = cur.fetchone()
    switch = found is not None and found[1]
    if switch:
        cur.execute(f"set role {quote_ident(found[0])}")
    try:
        yield
    finally:
        status = cur.connection.info.transaction_status
        if switch and status != psycopg2.extensions.TRANSACTION_STATUS_INERROR:
            cur.execute("reset role")  # (a rolled-back transaction takes its SET ROLE along)


def _load_build(cur, duck: duckdb.DuckDBPyConnection, batch: Batch) -> None:
    """The new CDM into ``build_<site>``, with its keys, indexes and foreign keys."""
    build = build_schema(batch.site)
    tables = schema.cdm_tables()
    for table in tables:  # leftovers of a run that died here
        cur.execute(f"drop table if exists {quote_ident(build)}.{quote_ident(table)} cascade")
    for table in tables:
        cur.execute(schema.create_table_sql(table, build, "postgresql"))
    for table in CDM_TABLES_WRITTEN:
        name = quote_ident(table)
        _ship(cur, duck, f"{batch.build.sql}.{name}", f"{quote_ident(build)}.{name}", fault=True)
    for table in tables:
        for sql in schema.primary_key_sql(table, build, "postgresql"):
            cur.execute(sql)
    for table in tables:
        for sql in schema.index_sql(table, build, "postgresql"):
            cur.execute(sql)
    for table in tables:
        for sql in schema.foreign_key_sql(table, build, VOCAB, "postgresql"):
            cur.execute(sql)
    for table in CDM_TABLES_WRITTEN:  # fresh statistics for the planner of analysts' queries
        cur.execute(f"analyze {quote_ident(build)}.{quote_ident(table)}")


def _store_records(cur, duck: duckdb.DuckDBPyConnection, batch: Batch, tables: list[str]) -> None:
    """The batch's records replace its earlier ones in stage_<site>; the run's go to results."""
    from omop_etl.pipeline import STAGE_RECORDS

    stage = quote_ident(batch.stage)
    for table in tables:
        source = f"{batch.outbox.sql}.{quote_ident(table)}"
        if table in STAGE_RECORDS:
            dest = f"{stage}.{quote_ident(table)}"
            cur.execute(f"delete from {dest} where batch_id = %s", [batch.batch_id])
        else:
            dest = f"{RESULTS}.{quote_ident(table)}"
        _ship(cur, duck, source, dest)


def _keep_lasting_state(cur, duck: duckdb.DuckDBPyConnection, batch: Batch) -> None:
    """New key-map entries (old ids never change) and the batch's kept staging rows."""
    from omop_etl.pipeline import kept_staging_sql, new_keys_sql

    stage = quote_ident(batch.stage)
    cur.execute(
        f"create table if not exists {stage}.key_map (tbl text not null, "
        "source_key numeric(39, 0) not null, id integer not null, primary key (tbl, source_key))"
    )
    # only this run's new entries; a key another run of the site added meanwhile would
    # break the primary key and roll the publish back (runs of a site do not overlap)
    _ship(cur, duck, f"({new_keys_sql(batch)})", f"{stage}.key_map")
    if not batch.incremental:
        return
    for target in TARGETS:
        name = quote_ident(target)
        dest = f"{stage}.{name}"
        _create_like(cur, duck, f"{batch.work.sql}.{name}", dest)
        cur.execute(f"delete from {dest} where batch_id = %s", [batch.batch_id])
        _ship(cur, duck, f"({kept_staging_sql(batch, target)})", dest)


def _swap_in(cur, site: str) -> None:
    """Inside the publish transaction: the built tables replace the published ones, and
    the consortium views are recreated over every published site."""
    cur.execute(f"select pg_advisory_xact_lock({_lock_key('consortium')})")  # publishers
    cdm = quote_ident(settings.cdm_schema(site))
    build = quote_ident(build_schema(site))

    def swap() -> None:
        access = _access_rules(cur, settings.cdm_schema(site))
        _drop_views(cur)
        for table in schema.cdm_tables():
            cur.execute(f"drop table if exists {cdm}.{quote_ident(table)} cascade")
        for table in schema.cdm_tables():
            cur.execute(f"alter table {build}.{quote_ident(table)} set schema {cdm}")
        if _role_exists(cur, ANALYST):
            cur.execute(f"grant usage on schema {cdm} to {ANALYST}")
            cur.execute(f"grant select on all tables in schema {cdm} to {ANALYST}")
        for statement in access:
            cur.execute(statement)
        _create_views(cur)

    _in_short_waits(cur, swap)


def _access_rules(cur, schema_name: str) -> list[str]:
    """What the published tables of a site allow, as statements for the tables that
    replace them: the grants a warehouse admin made (to users, say) and row-level
    security with its policies. A publish must not quietly widen or drop them."""
    statements = []
    cur.execute(
        "select c.relname, quote_ident(c.relname), c.relrowsecurity, c.relforcerowsecurity, "
        "(select array_agg(format('grant %%s on %%I.%%I to %%s', a.privilege_type, n.nspname, "
        "c.relname, case when a.grantee = 0 then 'public' else quote_ident(r.rolname) end) "
        "order by a.privilege_type, r.rolname) "
        " from aclexplode(c.relacl) a left join pg_roles r on r.oid = a.grantee "
        " where a.grantee <> c.relowner) "
        "from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = %s and c.relkind = 'r' order by 1",
        [schema_name],
    )
    for _, table, rls, forced, grants in cur.fetchall():
        name = f"{quote_ident(schema_name)}.{table}"
        statements += grants or []
        if rls:
            statements.append(f"alter table {name} enable row level security")
        if forced:
            statements.append(f"alter table {name} force row level security")
    cur.execute(
        "select format('create policy %%I on %%I.%%I as %%s for %%s to %%s', policyname, "
        "schemaname, tablename, permissive, cmd, "
        "(select string_agg(case when r = 'public' then r else quote_ident(r) end, ', ') "
        " from unnest(roles) as r)) "
        "|| coalesce(' using (' || qual || ')', '') "
        "|| coalesce(' with check (' || with_check || ')', '') "
        "from pg_policies where schemaname = %s order by tablename, policyname",
        [schema_name],
    )
    return statements + [r[0] for r in cur.fetchall()]


LOCK_PATIENCE = 600.0  # seconds a swap keeps trying to find its moment
LOCK_WAIT = "100ms"  # the longest the swap waits for one lock, well under deadlock_timeout


def _in_short_waits(cur, step: Callable[[], None]) -> None:
    """Run ``step`` (DDL inside the publish transaction) waiting at most 100 ms for any
    lock; when a lock is not free, undo the step (a savepoint), wait and try again.

    An analyst's query may hold a site table and wait for a consortium view (or the
    vocabulary) the swap holds, while the swap waits for that table: a deadlock, which
    PostgreSQL would end after deadlock_timeout (1 s) by cancelling one of the two,
    perhaps the analyst's query. Giving every lock back within 100 ms breaks the cycle
    first. Readers wait only for the short swap itself.
    """
    deadline = time.monotonic() + LOCK_PATIENCE
    pause = 0.05
    while True:
        cur.execute("savepoint omop_swap")
        cur.execute(f"set local lock_timeout = '{LOCK_WAIT}'")
        try:
            step()
        except psycopg2.errors.LockNotAvailable as exc:
            cur.execute("rollback to savepoint omop_swap")  # its locks and SET LOCAL too
            if time.monotonic() >= deadline:
                raise ConnectionError(
                    f"readers kept the tables busy for {LOCK_PATIENCE:.0f} s; publish again later"
                ) from exc
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
            continue
        cur.execute("set local lock_timeout = default")
        cur.execute("release savepoint omop_swap")
        return


# ---------------------------------------------------------------------------
# consortium views
# ---------------------------------------------------------------------------


def published_sites(cur) -> list[str]:
    """Sites with a published CDM: schemas cdm_<site> that hold a person table."""
    cur.execute(
        "select n.nspname from pg_namespace n join pg_class c on c.relnamespace = n.oid "
        "where n.nspname like 'cdm\\_%%' and c.relname = 'person' and c.relkind = 'r' "
        "order by n.nspname"
    )
    return [r[0][len("cdm_") :] for r in cur.fetchall()]


def _drop_views(cur) -> None:
    cur.execute(
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = %s and c.relkind = 'v'",
        [CONSORTIUM],
    )
    for (name,) in cur.fetchall():
        cur.execute(f"drop view {quote_ident(CONSORTIUM)}.{quote_ident(name)}")


def _create_views(cur) -> None:
    """Each CDM table as the union of the published sites' tables. The views check the
    reader's own rights (security_invoker): an analyst reads them with the SELECT the
    roles command granted on every cdm_<site>, and row-level security on a site's
    tables applies to the reader, not to whoever created the view."""
    sites = published_sites(cur)
    if not sites:
        return
    with _as_owner_of(cur, CONSORTIUM):  # views: any site's publish replaces them
        for table in schema.cdm_tables():
            fields = ", ".join(quote_ident(f) for f in schema.load_spec()[table].field_names)
            union = " union all ".join(
                f"select {fields} from {quote_ident(settings.cdm_schema(s))}.{quote_ident(table)}"
                for s in sites
            )
            cur.execute(
                f"create view {quote_ident(CONSORTIUM)}.{quote_ident(table)} "
                f"with (security_invoker = true) as {union}"
            )
        if _role_exists(cur, ANALYST):
            cur.execute(
                f"grant select on all tables in schema {quote_ident(CONSORTIUM)} to {ANALYST}"
            )


def refresh_views(target: Target) -> list[str]:
    """Recreate the consortium views (after a site was added or removed); returns the sites."""
    with connection(target) as con:
        with con.cursor() as cur:
            _create_schemas(cur, [CONSORTIUM])
            cur.execute(f"select pg_advisory_xact_lock({_lock_key('consortium')})")

            def recreate() -> None:
                _drop_views(cur)
                _create_views(cur)

            _in_short_waits(cur, recreate)
            sites = published_sites(cur)
        con.commit()
    return sites


def query(target: Target, sql: str) -> tuple[list[str], list[tuple]]:
    """One query in a read-only transaction: column names and rows."""
    with connection(target) as con:
        con.set_session(readonly=True)
        try:
            with con.cursor() as cur:
                cur.execute(sql)
                names = [d[0] for d in cur.description or []]
                return names, cur.fetchall() if cur.description else []
        except psycopg2.Error as exc:
            raise EtlError(f"query failed: {str(exc).strip()}") from exc


# ---------------------------------------------------------------------------
# vocabulary, results snapshots, roles
# ---------------------------------------------------------------------------


def publish_vocabulary(duck: duckdb.DuckDBPyConnection, target: Target) -> dict[str, int]:
    """Replace the warehouse's vocabulary with the one loaded (and checked) in ``duck``.

    One transaction: the sites' foreign keys to the vocabulary are dropped, the
    tables replaced (COPY, then keys and indexes per the CDM DDL), and the foreign
    keys added again, which checks every published site against the new release.
    Run it as the warehouse's owner, or a user in ``omop_vocabulary`` and every site's
    loader role: it alters every site's tables. The vocabulary's
    own foreign keys are left out: an Athena download of some vocabularies refers to
    concepts of vocabularies it does not hold.
    """
    tables = schema.vocabulary_tables()
    vocab = quote_ident(VOCAB)
    counts: dict[str, int] = {}
    with connection(target) as con:
        try:
            with con.cursor() as cur:
                cur.execute(f"select pg_advisory_xact_lock({_lock_key('consortium')})")
                _create_schemas(cur, [VOCAB])
                outside = _foreign_keys_into(cur, VOCAB)
                for relation, name, _ in outside:
                    cur.execute(f"alter table {relation} drop constraint {quote_ident(name)}")
                with _as_owner_of(cur, VOCAB):
                    for table in tables:
                        name = f"{vocab}.{quote_ident(table)}"
                        cur.execute(f"drop table if exists {name}")
                        cur.execute(schema.create_table_sql(table, VOCAB, "postgresql"))
                        counts[table] = _ship(cur, duck, name, name)
                    for table in tables:
                        for sql in schema.primary_key_sql(table, VOCAB, "postgresql"):
                            cur.execute(sql)
                        for sql in schema.index_sql(table, VOCAB, "postgresql"):
                            cur.execute(sql)
                    _grant_vocabulary(cur)
                for relation, name, definition in outside:
                    cur.execute(
                        f"alter table {relation} add constraint {quote_ident(name)} {definition}"
                    )
            con.commit()
        except psycopg2.Error as exc:
            con.rollback()
            raise _classify(
                exc, "loading the vocabulary failed, the warehouse is unchanged"
            ) from exc
    return counts


def _foreign_keys_into(cur, schema_name: str) -> list[tuple[str, str, str]]:
    """Foreign keys of tables outside ``schema_name`` that reference tables in it."""
    cur.execute(
        "select c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) "
        "from pg_constraint c join pg_class r on r.oid = c.confrelid "
        "join pg_namespace rn on rn.oid = r.relnamespace "
        "join pg_class t on t.oid = c.conrelid join pg_namespace tn on tn.oid = t.relnamespace "
        "where c.contype = 'f' and rn.nspname = %s and tn.nspname <> %s order by 1, 2",
        [schema_name, schema_name],
    )
    return cur.fetchall()


def _grant_vocabulary(cur) -> None:
    vocab = quote_ident(VOCAB)
    for role, rights in ((ANALYST, "select"), (LOADERS, "select, references")):
        if _role_exists(cur, role):
            cur.execute(f"grant usage on schema {vocab} to {role}")
            cur.execute(f"grant {rights} on all tables in schema {vocab} to {role}")


def results_snapshot(target: Target, site: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB copy of the warehouse's ``results`` (and, with ``site``, the
    site's unmapped codes and reconciliation), for the dashboard, reports and
    summaries, which read DuckDB."""
    from quality import results

    duck = duckdb.connect(":memory:")
    results.create_results_schema(duck)
    with connection(target) as con, con.cursor() as cur:
        for table in results.TABLES:
            source = f"{RESULTS}.{quote_ident(table)}"
            if _exists(cur, source):
                _fetch(cur, source, duck, source)
        if site is not None:
            from omop_etl.pipeline import STAGE_RECORDS

            stage = quote_ident(settings.stage_schema(site))
            duck.execute(f"create schema {stage}")
            for table in ("unmapped_codes", "reconciliation"):
                source = f"{stage}.{table}"
                duck.execute(STAGE_RECORDS[table].format(schema=stage))
                if _exists(cur, source):
                    _fetch(cur, source, duck, source)
    return duck


def create_roles(
    target: Target, sites: list[str], login: str | None = None, password: str | None = None
) -> list[str]:
    """The warehouse's roles and schemas, idempotently; returns what was granted.

    - ``omop_loader_<site>`` owns ``stage_<site>``, ``build_<site>`` and ``cdm_<site>``
      and writes nothing else of a site; it is a member of ``omop_loaders``.
    - ``omop_loaders`` owns ``results`` and the consortium views in ``cdm`` (any site's
      publish recreates them) and may read and reference the vocabulary.
    - ``omop_vocabulary`` owns ``vocab`` (loads Athena releases).
    - ``omop_analyst`` reads ``vocab``, ``cdm``, ``cdm_<site>`` and ``results``; it has
      no right on ``stage_<site>`` or ``build_<site>`` (rejects, key maps, staging).

    The roles cannot log in: grant them to login users (``grant omop_analyst to alice``).
    ``login`` makes (or updates) one login user in every site's loader role and the
    vocabulary owner, for an Airflow that loads all sites with one connection.
    """
    done = []
    with connection(target) as con:
        try:
            with con.cursor() as cur:
                cur.execute(f"select pg_advisory_xact_lock({_lock_key('layout')})")
                for role in (ANALYST, LOADERS, VOCABULARY_OWNER):
                    _create_role(cur, role)
                for name in (VOCAB, RESULTS, CONSORTIUM):
                    cur.execute(f"create schema if not exists {quote_ident(name)}")
                cur.execute(f"alter schema {VOCAB} owner to {VOCABULARY_OWNER}")
                for table in _tables_of(cur, VOCAB):
                    cur.execute(f"alter table {table} owner to {VOCABULARY_OWNER}")
                for name in (RESULTS, CONSORTIUM):
                    cur.execute(f"alter schema {quote_ident(name)} owner to {LOADERS}")
                    cur.execute(f"grant usage on schema {quote_ident(name)} to {ANALYST}")
                _grant_vocabulary(cur)
                for table in _tables_of(cur, RESULTS) + _tables_of(cur, CONSORTIUM):
                    cur.execute(f"alter table {table} owner to {LOADERS}")
                cur.execute(
                    f"alter default privileges for role {LOADERS} in schema {RESULTS} "
                    f"grant select on tables to {ANALYST}"
                )
                cur.execute(f"grant select on all tables in schema {RESULTS} to {ANALYST}")
                cur.execute(f"grant select on all tables in schema {CONSORTIUM} to {ANALYST}")
                done.append(f"{ANALYST}: reads vocab, cdm, results")
                for site in sites:
                    done.append(_site_roles(cur, site))
                if login:
                    done.append(_login_role(cur, login, password, sites))
            con.commit()
        except psycopg2.Error as exc:
            con.rollback()
            raise _classify(exc, "creating the warehouse roles failed, nothing changed") from exc
    return done


def _login_role(cur, login: str, password: str | None, sites: list[str]) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", login):
        raise EtlError(f"login {login!r}: use lowercase letters, digits and '_' (a role name)")
    if not _role_exists(cur, login):
        if not password:
            raise EtlError(f"creating login {login} needs a password (OMOP_ETL_LOGIN_PASSWORD)")
        cur.execute(f"create role {quote_ident(login)} login password %s", [password])
    elif password:
        cur.execute(f"alter role {quote_ident(login)} password %s", [password])
    groups = [VOCABULARY_OWNER, *(loader_role(s) for s in sites)]
    cur.execute(f"grant {', '.join(groups)} to {quote_ident(login)}")
    return f"{login}: logs in as every site's loader and the vocabulary owner"


def _create_role(cur, role: str) -> None:
    if not _role_exists(cur, role):
        cur.execute(f"create role {role} nologin")


def _tables_of(cur, schema_name: str) -> list[str]:
    cur.execute(
        "select c.oid::regclass::text from pg_class c join pg_namespace n "
        "on n.oid = c.relnamespace where n.nspname = %s and c.relkind in ('r', 'v')",
        [schema_name],
    )
    return [r[0] for r in cur.fetchall()]


def _site_roles(cur, site: str) -> str:
    loader = loader_role(site)
    _create_role(cur, loader)
    cur.execute(f"grant {LOADERS} to {loader}")
    stage, cdm, build = settings.stage_schema(site), settings.cdm_schema(site), build_schema(site)
    for name in (stage, build, cdm):
        cur.execute(f"create schema if not exists {quote_ident(name)}")
        cur.execute(f"alter schema {quote_ident(name)} owner to {loader}")
        for table in _tables_of(cur, name):
            cur.execute(f"alter table {table} owner to {loader}")
        cur.execute(f"revoke all on schema {quote_ident(name)} from public")
    cdm_sql = quote_ident(cdm)
    # the consortium views are the loaders' together: they need to see every site
    cur.execute(f"grant usage on schema {cdm_sql} to {ANALYST}, {LOADERS}")
    cur.execute(f"grant select on all tables in schema {cdm_sql} to {ANALYST}")
    cur.execute(
        f"alter default privileges for role {loader} in schema {cdm_sql} "
        f"grant select on tables to {ANALYST}"
    )
    return f"{loader}: owns {stage}, {build}, {cdm}"
