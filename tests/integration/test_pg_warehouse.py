"""The shared PostgreSQL warehouse on a real server: publishing, reruns, crashes,
five sites at once, the consortium views and the roles.

Every test works in a database of its own, dropped afterwards. Runs that must be
killed or run side by side are child processes (``python -c``), as Airflow's tasks
would be; ``OMOP_ETL_FAULT`` makes a child SIGKILL itself mid-COPY or mid-publish.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import duckdb
import psycopg2
import pytest

from omop_etl import pgwarehouse, schema, settings
from omop_etl.errors import EtlError
from omop_etl.pipeline import run_demo_site, run_site
from omop_etl.vocabulary import load_into_warehouse
from omop_etl.warehouse import Target, parse_target

pytestmark = pytest.mark.postgres

SITES = ("seoul_general", "busan_university", "incheon_medical", "daegu_fhir", "gwangju_local")
BATCHES = ("2026-01-31", "2026-02-28")
PATIENTS = 100


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory) -> Path:
    from omop_etl.demo.generate import generate

    out = tmp_path_factory.mktemp("pg_demo_export")
    generate(out, PATIENTS, 7)
    return out


@pytest.fixture
def new_database(new_pg_database, tmp_path, monkeypatch):
    """A function that makes a fresh database with the demo vocabulary: its Target."""
    monkeypatch.setenv("OMOP_ETL_WORK_DIR", str(tmp_path / "work"))

    def make() -> Target:
        target = parse_target(new_pg_database())
        load_into_warehouse(target, None)
        return target

    return make


def _rows(target: Target, sql: str) -> list[tuple]:
    con = psycopg2.connect(target.location)
    try:
        with con.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        con.close()


def _checksums(target: Target, site: str) -> dict[str, tuple[int, str]]:
    """Rows and an md5 over the sorted rows of every CDM table of a site."""
    cdm = settings.cdm_schema(site)
    found = {}
    for table in schema.cdm_tables():
        ((n, digest),) = _rows(
            target,
            f"select count(*), md5(coalesce(string_agg(t::text, '|' order by t::text), '')) "
            f'from "{cdm}"."{table}" as t',
        )
        found[table] = (n, digest)
    return found


def _child(target: Target, site: str, folder: Path, fault: str | None = None, **env):
    """One batch of a site in a child process, as an Airflow worker would run it."""
    code = (
        "import sys; from pathlib import Path; from omop_etl.pipeline import run_site; "
        "from omop_etl.warehouse import parse_target; "
        "run_site(sys.argv[1], Path(sys.argv[2]), parse_target(sys.argv[3]), demo_key=True)"
    )
    environment = {**os.environ, **env}
    environment.pop(pgwarehouse.FAULT_VARIABLE, None)
    if fault:
        environment[pgwarehouse.FAULT_VARIABLE] = fault
    return subprocess.Popen(
        [sys.executable, "-c", code, site, str(folder), target.location],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _normalized(value):
    if isinstance(value, Decimal):
        return float(value)
    return value


def test_a_site_in_postgres_holds_exactly_what_the_duckdb_warehouse_holds(new_database, tmp_path):
    pg = new_database()
    duck = parse_target(str(tmp_path / "w.duckdb"))
    load_into_warehouse(duck, None)
    run_demo_site(pg)
    run_demo_site(duck)
    con = duckdb.connect(duck.location, read_only=True)
    try:
        for table in schema.cdm_tables():
            fields = ", ".join(f'"{f}"' for f in schema.load_spec()[table].field_names)
            order = " order by " + ", ".join(
                str(i + 1) for i in range(len(schema.load_spec()[table].field_names))
            )
            in_pg = _rows(pg, f"select {fields} from cdm_synthea.{table}{order}")
            in_duck = con.execute(f"select {fields} from cdm_synthea.{table}{order}").fetchall()
            assert [tuple(map(_normalized, r)) for r in in_pg] == in_duck, table
    finally:
        con.close()
    # the consortium view of a table is the union of the published sites
    assert _rows(pg, "select count(*) from cdm.person") == [(27,)]
    # key map, rejects and reconciliation are kept in the site's stage schema
    ((keys,),) = _rows(pg, "select count(*) from stage_synthea.key_map")
    assert keys > 0
    ((run_status,),) = _rows(pg, "select status from results.run_log")
    assert run_status == "published"
    # the loading schema is empty once published
    assert _rows(pg, "select count(*) from pg_tables where schemaname = 'build_synthea'") == [(0,)]


def test_rerunning_a_batch_leaves_every_cdm_table_identical(new_database, demo_export):
    target = new_database()
    site = "daegu_fhir"
    for batch in BATCHES:
        run_site(site, demo_export / site / batch, target, demo_key=True)
    before = _checksums(target, site)
    assert before["person"][0] > 0
    for batch in BATCHES:  # both batches again, in order
        run_site(site, demo_export / site / batch, target, demo_key=True)
    assert _checksums(target, site) == before
    # an older batch again: the same CDM, whose provenance names the batch it was built by
    run_site(site, demo_export / site / BATCHES[0], target, demo_key=True)
    after = _checksums(target, site)
    assert {t: v for t, v in after.items() if t != "metadata"} == {
        t: v for t, v in before.items() if t != "metadata"
    }
    assert _rows(
        target, f"select value_as_string from cdm_{site}.metadata where name = 'etl_batch_id'"
    ) == [(BATCHES[0],)]


class _Reader(threading.Thread):
    """An analyst reading a site's tables, a consortium view and the vocabulary, over and
    over, each time in one snapshot; ``view_first`` reverses the order of the query."""

    def __init__(self, target: Target, site: str, view_first: bool = False) -> None:
        super().__init__(daemon=True)
        self.target, self.site, self.view_first = target, site, view_first
        self.seen: set[tuple] = set()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        tables = ("person", "visit_occurrence", "condition_occurrence", "measurement")
        parts = [f"select '{t}', count(*) from cdm_{self.site}.{t}" for t in tables]
        shared = ["select 'cdm.person', count(*) from cdm.person"]
        vocab = "select 'concept', count(*) from vocab.concept"
        sql = " union all ".join([*shared, *parts] if self.view_first else [*parts, *shared])
        try:
            with pgwarehouse.connection(self.target) as con:
                con.set_session(isolation_level="REPEATABLE READ", readonly=True)
                while not self.stop.is_set():
                    with con.cursor() as cur:
                        cur.execute(f"{sql} union all {vocab}")
                        found = cur.fetchall()
                        self.seen.add(tuple(sorted(r for r in found if r[0] != "concept")))
                    con.rollback()
                    time.sleep(0.01)
        except BaseException as exc:  # reported by the test
            self.error = exc


def _counts(target: Target, site: str) -> tuple:
    tables = ("person", "visit_occurrence", "condition_occurrence", "measurement")
    found = [(t, _rows(target, f"select count(*) from cdm_{site}.{t}")[0][0]) for t in tables]
    found.append(("cdm.person", _rows(target, "select count(*) from cdm.person")[0][0]))
    return tuple(sorted(found))


@pytest.mark.parametrize("fault", ["copy", "publish"])
def test_a_run_killed_during_copy_or_publish_leaves_the_site_whole_and_the_rerun_converges(
    new_database, demo_export, fault
):
    site = "seoul_general"
    first, second = (demo_export / site / b for b in BATCHES)
    reference = new_database()  # the same batches, never interrupted
    for folder in (first, second):
        run_site(site, folder, reference, demo_key=True)

    target = new_database()
    run_site(site, first, target, demo_key=True)
    published = _checksums(target, site)
    old_counts = _counts(target, site)
    readers = [_Reader(target, site), _Reader(target, site, view_first=True)]
    for reader in readers:
        reader.start()
    try:
        child = _child(target, site, second, fault=fault)
        _, err = child.communicate(timeout=300)
        assert child.returncode == -9, err  # SIGKILL, at the fault point
        assert _checksums(target, site) == published  # the killed run changed nothing
        ((status,),) = _rows(target, "select string_agg(status, ',') from results.run_log")
        assert status == "published"  # only the first batch's run was recorded
        child = _child(target, site, second)
        _, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
    finally:
        for reader in readers:
            reader.stop.set()
            reader.join(timeout=30)
    assert [r.error for r in readers] == [None, None]  # no reader failed (nor deadlocked)
    assert _checksums(target, site) == _checksums(reference, site)
    new_counts = _counts(target, site)
    assert new_counts != old_counts
    for reader in readers:  # every snapshot: the whole old site or the whole new one
        assert reader.seen <= {old_counts, new_counts}
        assert old_counts in reader.seen
    assert _rows(
        target, "select count(*) from pg_tables where schemaname = 'build_seoul_general'"
    ) == [(0,)]


def test_five_sites_publishing_at_once_end_as_publishing_one_after_another(
    new_database, demo_export
):
    one_by_one = new_database()
    for site in SITES:
        run_site(site, demo_export / site / BATCHES[0], one_by_one, demo_key=True)

    at_once = new_database()
    children = [_child(at_once, site, demo_export / site / BATCHES[0]) for site in SITES]
    for child in children:
        _, err = child.communicate(timeout=600)  # a deadlock would end here
        assert child.returncode == 0, err
    for site in SITES:
        assert _checksums(at_once, site) == _checksums(one_by_one, site), site
    for table in ("person", "measurement", "cdm_source"):
        assert _rows(at_once, f"select count(*) from cdm.{table}") == _rows(
            one_by_one, f"select count(*) from cdm.{table}"
        )
    ((n,),) = _rows(at_once, "select count(*) from cdm.cdm_source")
    assert n == len(SITES)


@pytest.fixture
def login_roles(new_database):
    """A warehouse with the roles made, and login users in them (trust auth here)."""
    target = new_database()
    sites = ["seoul_general", "daegu_fhir"]
    pgwarehouse.create_roles(target, sites)
    suffix = uuid.uuid4().hex[:8]
    users = {name: f"t_{name}_{suffix}" for name in ("analyst", *sites)}
    roles = {"analyst": pgwarehouse.ANALYST} | {s: pgwarehouse.loader_role(s) for s in sites}
    with pgwarehouse.connection(target) as con, con.cursor() as cur:
        for name, user in users.items():
            cur.execute(f'create role "{user}" login in role {roles[name]}')
        con.commit()
    rest = target.location.partition("@")[2]
    as_user = {name: parse_target(f"postgresql://{user}@{rest}") for name, user in users.items()}
    yield target, as_user
    _drop_roles(target, [*users.values(), *roles.values()])


def _drop_roles(target: Target, roles: list[str]) -> None:
    """The test's roles and what they own here; the shared group roles too, unless
    another database still grants them something (roles belong to the server)."""
    groups = [pgwarehouse.ANALYST, pgwarehouse.LOADERS, pgwarehouse.VOCABULARY_OWNER]
    every = list(dict.fromkeys([*roles, *groups]))
    with pgwarehouse.connection(target) as con, con.cursor() as cur:
        cur.execute("select rolname from pg_roles where rolname = any(%s)", [every])
        present = [r[0] for r in cur.fetchall()]
        for role in present:  # one at a time: together they can trip over a default ACL
            cur.execute(f'drop owned by "{role}" cascade')
        for role in present:
            cur.execute("savepoint r")
            try:
                cur.execute(f'drop role "{role}"')
            except psycopg2.errors.DependentObjectsStillExist:
                cur.execute("rollback to savepoint r")
        con.commit()


def _denied(target: Target, sql: str) -> bool:
    try:
        _rows(target, sql)
    except psycopg2.errors.InsufficientPrivilege:
        return True
    return False


def test_analysts_read_the_consortium_views_but_no_staging_key_maps_or_rejects(
    login_roles, demo_export
):
    target, as_user = login_roles
    for site in ("seoul_general", "daegu_fhir"):  # each site published by its own loader
        run_site(site, demo_export / site / BATCHES[0], as_user[site], demo_key=True)
    analyst = as_user["analyst"]
    persons = sum(
        _rows(target, f"select count(*) from cdm_{s}.person")[0][0]
        for s in ("seoul_general", "daegu_fhir")
    )
    assert _rows(analyst, "select count(*) from cdm.person") == [(persons,)]
    assert _rows(analyst, "select count(*) from cdm_daegu_fhir.person")[0][0] > 0
    assert _rows(analyst, "select count(*) from results.run_log") == [(2,)]
    assert _rows(analyst, "select count(*) from vocab.concept")[0][0] > 0
    for site in ("seoul_general", "daegu_fhir"):
        for table in ("key_map", "rejects", "reconciliation", "person"):
            assert _denied(analyst, f"select count(*) from stage_{site}.{table}"), (site, table)
    # a site's loader writes its own schemas only
    seoul = as_user["seoul_general"]
    assert _denied(seoul, "delete from cdm_daegu_fhir.person")
    assert _denied(seoul, "select count(*) from stage_daegu_fhir.key_map")
    assert _denied(seoul, "create table stage_daegu_fhir.x (i int)")
    assert _denied(analyst, "delete from results.run_log")
    # an analyst's run is refused with one clear message, and changes nothing
    before = _checksums(target, "seoul_general")
    with pytest.raises(EtlError, match="permission denied for schema stage_seoul_general"):
        run_site(
            "seoul_general", demo_export / "seoul_general" / BATCHES[1], analyst, demo_key=True
        )
    assert _checksums(target, "seoul_general") == before


def test_the_roles_command_is_idempotent(login_roles):
    target, _ = login_roles
    first = pgwarehouse.create_roles(target, ["seoul_general", "daegu_fhir"])
    assert pgwarehouse.create_roles(target, ["seoul_general", "daegu_fhir"]) == first


def test_one_airflow_login_loads_every_site_and_a_new_vocabulary_release(new_database, demo_export):
    target = new_database()
    login = f"t_airflow_{uuid.uuid4().hex[:8]}"
    sites = ["seoul_general", "gwangju_local"]
    pgwarehouse.create_roles(target, sites, login, "not-a-real-password")
    as_login = parse_target(target.location.replace("postgres@", f"{login}@", 1))
    try:
        for site in sites:
            run_site(site, demo_export / site / BATCHES[0], as_login, demo_key=True)
        before = {site: _checksums(target, site) for site in sites}
        fks = (
            "select count(*) from pg_constraint "
            "where contype = 'f' and confrelid = 'vocab.concept'::regclass"
        )
        ((linked,),) = _rows(target, fks)
        assert linked > 0  # the sites' tables refer to the vocabulary
        counts = load_into_warehouse(as_login, None)  # the release again, as the login
        assert counts["concept"] == _rows(target, "select count(*) from vocab.concept")[0][0]
        assert _rows(target, fks) == [(linked,)]  # the foreign keys are back, checked
        assert {site: _checksums(target, site) for site in sites} == before
        ((owner,),) = _rows(
            target,
            "select tableowner from pg_tables where schemaname = 'vocab' and tablename = 'concept'",
        )
        assert owner == pgwarehouse.VOCABULARY_OWNER
    finally:
        _drop_roles(target, [login, *(pgwarehouse.loader_role(s) for s in sites)])


def test_row_level_security_and_grants_on_a_site_survive_its_next_publish(login_roles, demo_export):
    target, as_user = login_roles
    site, seoul, analyst = "seoul_general", as_user["seoul_general"], as_user["analyst"]
    daegu_user = as_user["daegu_fhir"].location.partition("://")[2].partition("@")[0]
    run_site(site, demo_export / site / BATCHES[0], seoul, demo_key=True)
    with psycopg2.connect(target.location) as con, con.cursor() as cur:  # the warehouse admin
        cur.execute(f"alter table cdm_{site}.person enable row level security")
        cur.execute(
            f"create policy women_only on cdm_{site}.person for select to {pgwarehouse.ANALYST} "
            "using (gender_concept_id = 8532)"
        )
        cur.execute(f'grant select on cdm_{site}.measurement to "{daegu_user}"')
    run_site(site, demo_export / site / BATCHES[1], seoul, demo_key=True)  # new tables
    ((women,),) = _rows(
        target, f"select count(*) from cdm_{site}.person where gender_concept_id = 8532"
    )
    ((everyone,),) = _rows(target, f"select count(*) from cdm_{site}.person")
    assert 0 < women < everyone
    # the policy holds on the new table, also through the consortium view (security_invoker)
    assert _rows(analyst, f"select count(*) from cdm_{site}.person") == [(women,)]
    assert _rows(analyst, "select count(*) from cdm.person") == [(women,)]
    ((measurements,),) = _rows(target, f"select count(*) from cdm_{site}.measurement")
    assert _rows(as_user["daegu_fhir"], f"select count(*) from cdm_{site}.measurement") == [
        (measurements,)
    ]
    assert _denied(as_user["daegu_fhir"], f"select count(*) from cdm_{site}.person")
