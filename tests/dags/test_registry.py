"""A site becomes a DAG by its spec: the registry the DAG files read follows the specs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from omop_etl import cli, settings
from omop_etl.dag_sites import SITES
from omop_etl.errors import EtlError
from omop_etl.orchestration import (
    REGISTRY_PATH,
    registry_entries,
    registry_is_current,
    render_registry,
    write_registry,
)
from omop_etl.spec import load_spec

SPEC = """\
site: {site}
description: {site} hospital
id_block: 9
{extra}
files:
  - name: patients
    pattern: patients.csv
    target: person
    columns:
      person_source_value: id
      birth_datetime: {{column: birth, format: date}}
"""


def _spec(folder: Path, site: str, extra: str = "") -> Path:
    path = folder / f"{site}.yaml"
    path.write_text(SPEC.format(site=site, extra=extra), encoding="utf-8")
    return path


def test_the_registry_is_up_to_date_with_the_site_specs():
    entries = registry_entries()
    assert list(SITES) == entries, "omop_etl/dag_sites.py is out of date: run omop-etl dags sync"
    assert registry_is_current(entries), "omop_etl/dag_sites.py: run omop-etl dags sync"
    assert [e["site"] for e in entries] == sorted(
        p.stem for p in settings.sites_dir().glob("*.yaml")
    )


def test_dags_sync_check_passes_on_the_repository(capsys):
    assert cli.main(["dags", "sync", "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_adding_a_site_is_its_spec_and_a_sync(tmp_path, monkeypatch: pytest.MonkeyPatch):
    sites = tmp_path / "mappings" / "sites"
    sites.mkdir(parents=True)
    for spec in settings.sites_dir().glob("*.yaml"):
        (sites / spec.name).write_bytes(spec.read_bytes())
    monkeypatch.setenv("OMOP_ETL_MAPPINGS", str(tmp_path / "mappings"))
    registry = tmp_path / "dag_sites.py"
    registry.write_text(REGISTRY_PATH.read_text(encoding="utf-8"), encoding="utf-8")

    _spec(sites, "ulsan_new", "schedule: '30 2 * * *'\nbuckets: 8")
    assert not registry_is_current(registry_entries(), registry)
    assert write_registry(registry_entries(), registry) is True
    assert write_registry(registry_entries(), registry) is False  # nothing changed
    listed = _load_sites(registry)
    assert [e["site"] for e in listed] == [*(e["site"] for e in SITES), "ulsan_new"]
    assert listed[-1] == {
        "site": "ulsan_new",
        "description": "ulsan_new hospital",
        "schedule": "30 2 * * *",
        "buckets": 8,
    }


def test_a_spec_with_problems_is_not_synced(tmp_path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "sites").mkdir()
    monkeypatch.setenv("OMOP_ETL_MAPPINGS", str(tmp_path))
    _spec(tmp_path / "sites", "broken", "schedule: every day")
    with pytest.raises(EtlError, match="schedule: 'every day'"):
        registry_entries()


@pytest.mark.parametrize(
    ("extra", "schedule"),
    [
        ("", "@daily"),
        ("schedule: '@weekly'", "@weekly"),
        ("schedule: '0 3 * * 1-5'", "0 3 * * 1-5"),
        ("schedule: null", None),
    ],
)
def test_the_spec_schedule_key(tmp_path, extra, schedule):
    assert load_spec(_spec(tmp_path, "site_a", extra)).schedule == schedule


@pytest.mark.parametrize("bad", ["daily", "'@every_minute'", "'0 3 * *'", "5"])
def test_a_bad_schedule_is_a_spec_problem_naming_the_key(tmp_path, bad):
    with pytest.raises(EtlError, match=r"schedule: .* is not one of .*@daily"):
        load_spec(_spec(tmp_path, "site_a", f"schedule: {bad}"))


def test_the_rendered_registry_keeps_any_description_and_passes_ruff(tmp_path):
    entries = [
        {"site": "a", "description": 'Quote " and \\ backslash', "schedule": None},
        {"site": "c", "description": 'It\'s "both"\tand a tab\n', "schedule": "@daily"},
        {"site": "b", "description": "부산대학교병원 " + "long " * 30, "schedule": "@daily"},
    ]
    path = tmp_path / "dag_sites.py"
    path.write_text(render_registry(entries), encoding="utf-8")
    assert _load_sites(path) == entries
    ruff = Path(sys.executable).parent / "ruff"
    for command in (["check"], ["format", "--check"]):
        done = subprocess.run(
            [ruff, *command, "--config", settings.PROJECT_ROOT / "pyproject.toml", path],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def _load_sites(path: Path) -> list[dict]:
    """The SITES of a registry file, read as the literal it is."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    (value,) = [n.value for n in tree.body if isinstance(n, ast.AnnAssign)]
    return list(ast.literal_eval(value))


@pytest.mark.parametrize(("extra", "buckets"), [("", 1), ("buckets: 1", 1), ("buckets: 16", 16)])
def test_the_spec_buckets_key(tmp_path, extra, buckets):
    assert load_spec(_spec(tmp_path, "site_a", extra)).buckets == buckets


@pytest.mark.parametrize("value", ["0", "65", "2.5", "many", "true"])
def test_a_bucket_count_out_of_range_is_a_spec_problem(tmp_path, value):
    with pytest.raises(EtlError, match=r"buckets: .* is not a whole number from 1 to 64"):
        load_spec(_spec(tmp_path, "site_a", f"buckets: {value}"))
