"""The Docker deployment: the compose file has the services, images, mounts and secrets
handling Airflow and the warehouse need (parsed, not run: CI has no Docker engine)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from omop_etl import settings

DOCKER = settings.PROJECT_ROOT / "docker"
AIRFLOW_SERVICES = {"api-server", "scheduler", "dag-processor", "triggerer"}


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))


def test_compose_runs_airflow_3_with_the_project_image_and_two_databases():
    services = _compose()["services"]
    assert AIRFLOW_SERVICES | {"airflow-db", "warehouse-db", "airflow-init"} <= set(services)
    commands = {name: services[name]["command"] for name in AIRFLOW_SERVICES}
    assert commands == {name: [name] for name in AIRFLOW_SERVICES}
    for name in AIRFLOW_SERVICES | {"airflow-init"}:
        service = services[name]
        assert service["image"] == "omop-etl-airflow:latest"
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        assert service["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith(
            "@airflow-db:5432/airflow"
        )
        assert "@warehouse-db:5432/omop" in service["environment"]["OMOP_ETL_WAREHOUSE"]
        assert set(service["depends_on"]) == {"airflow-db", "warehouse-db"}
    for name in ("airflow-db", "warehouse-db"):
        assert services[name]["image"].startswith("postgres:")
        assert services[name]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]


def test_compose_mounts_the_dags_the_exports_and_the_dashboard():
    volumes = _compose()["services"]["scheduler"]["volumes"]
    targets = {re.search(r":(/[^:]+)(:ro)?$", v).group(1): v for v in volumes}
    assert targets["/opt/airflow/dags"].startswith("../dags:")
    assert targets["/opt/omop-etl/exports"].endswith(":ro")  # exports are read, never written
    assert "/opt/omop-etl/dashboard" in targets
    assert "/opt/omop-etl/work" in targets  # runs' scratch, shared by a site's tasks
    assert {"airflow-db", "warehouse-db", "dashboard", "work"} <= set(_compose()["volumes"])
    # the tasks find them where they are mounted, not where the host keeps them
    environment = _compose()["services"]["scheduler"]["environment"]
    assert environment["OMOP_ETL_EXPORTS"] == "/opt/omop-etl/exports"
    assert environment["OMOP_ETL_DASHBOARD"] == "/opt/omop-etl/dashboard"
    assert environment["OMOP_ETL_WORK_DIR"] == "/opt/omop-etl/work"


def test_compose_makes_the_warehouse_roles_and_the_dags_log_in_as_a_loader():
    services = _compose()["services"]
    init = services["warehouse-init"]
    assert init["command"] == ["omop-etl", "warehouse", "roles", "--login", "omop_etl"]
    assert init["environment"]["OMOP_ETL_WAREHOUSE"].startswith("postgresql://postgres:")
    assert init["environment"]["OMOP_ETL_LOGIN_PASSWORD"] == "${WAREHOUSE_PASSWORD}"
    dags_login = services["scheduler"]["environment"]["OMOP_ETL_WAREHOUSE"]
    assert dags_login.startswith("postgresql://omop_etl:${WAREHOUSE_PASSWORD}@")


def test_secrets_come_from_an_env_file_that_is_not_committed():
    compose = (DOCKER / "compose.yaml").read_text(encoding="utf-8")
    # every password is a ${VARIABLE} from docker/.env, never a literal
    for line in compose.splitlines():
        if re.search(r"PASSWORD:|:\$\{", line) and "PASSWORD" in line:
            assert re.search(r"\$\{[A-Z_]+\}", line), line
    assert all(s.get("env_file") == ".env" for s in _compose()["services"].values() if "build" in s)
    ignored = (settings.PROJECT_ROOT / ".gitignore").read_text(encoding="utf-8").split()
    assert "docker/.env" in ignored
    example = (DOCKER / "env.example").read_text(encoding="utf-8")
    needed = set(re.findall(r"\$\{([A-Z_]+)\}", compose))
    assert needed <= set(re.findall(r"^([A-Z_]+)=", example, re.M))


def test_the_image_is_airflow_3_3_with_the_project_installed():
    dockerfile = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM apache/airflow:3\.3\.2-python3\.11$", dockerfile, re.M)
    for folder in ("omop_etl", "transforms", "quality", "mappings", "dags"):
        assert re.search(rf"^COPY .*\b{folder}\b", dockerfile, re.M), folder
        assert (settings.PROJECT_ROOT / folder).is_dir()
    assert 'pip install "${OMOP_ETL_HOME}"' in dockerfile
    assert Path(settings.PROJECT_ROOT / "pyproject.toml").read_text().count("apache-airflow==3.3.2")
