"""The omop-etl command line: the interface users and scripts rely on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb

from omop_etl import settings
from omop_etl.cli import main

SAMPLE = settings.PROJECT_ROOT / "mappings" / "samples" / "synthea_ma27"
OMOP_ETL = Path(sys.executable).with_name("omop-etl")


def test_spec_check_accepts_the_synthea_spec(capsys):
    assert main(["spec", "check", "synthea"]) == 0
    assert "ok spec synthea" in capsys.readouterr().out


def test_errors_are_one_message_without_traceback(capsys, tmp_path):
    assert main(["spec", "check", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "error: no site spec named 'nosuch'" in err
    assert "Traceback" not in err
    missing = tmp_path / "nowhere"
    assert (
        main(
            [
                "run",
                "--site",
                "synthea",
                "--input",
                str(missing),
                "--warehouse",
                str(tmp_path / "w.duckdb"),
            ]
        )
        == 2
    )
    assert f"input folder {missing} does not exist" in capsys.readouterr().err.replace("\n", "")


def test_a_postgresql_warehouse_out_of_reach_is_one_clear_error(capsys):
    code = main(
        [
            "run",
            "--site",
            "synthea",
            "--input",
            str(SAMPLE),
            "--demo-key",
            "--warehouse",
            "postgresql://postgres@127.0.0.1:9/omop",  # nothing listens on port 9
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert err.startswith("error: cannot connect to the warehouse")
    assert "Traceback" not in err


def test_vocab_load_then_run_from_the_installed_command(tmp_path):
    env = {**os.environ, "OMOP_ETL_WAREHOUSE": str(tmp_path / "env.duckdb"), "COLUMNS": "200"}
    load = subprocess.run(
        [OMOP_ETL, "vocab", "load"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert load.returncode == 0, load.stderr
    assert "concept" in load.stdout
    run = subprocess.run(
        [OMOP_ETL, "run", "--site", "synthea", "--input", str(SAMPLE), "--batch-id", "b1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "Site synthea, batch b1 -> schema cdm_synthea" in run.stdout
    assert "Rows per CDM table" in run.stdout
    assert "10,950 source rows" in run.stdout
    # the warehouse came from OMOP_ETL_WAREHOUSE, not the working folder's default
    assert not (tmp_path / "warehouse.duckdb").exists()
    con = duckdb.connect(str(tmp_path / "env.duckdb"), read_only=True)
    try:
        assert con.execute("select count(*) from cdm_synthea.person").fetchall() == [(27,)]
    finally:
        con.close()


def test_run_without_a_vocabulary_says_what_to_do(tmp_path, capsys):
    code = main(
        [
            "run",
            "--site",
            "synthea",
            "--input",
            str(SAMPLE),
            "--warehouse",
            str(tmp_path / "w.duckdb"),
        ]
    )
    assert code == 2
    assert "omop-etl vocab load" in capsys.readouterr().err


def test_spec_check_with_an_export_finds_what_the_run_would_find(capsys, tmp_path):
    export = tmp_path / "synthea"
    shutil.copytree(SAMPLE, export)
    assert main(["spec", "check", "synthea", "--input", str(export)]) == 0
    (export / "payer_transitions.csv").write_text("PATIENT,MEMBERID,PAYER\n")
    (export / "encounters.csv").unlink()
    assert main(["spec", "check", "synthea", "--input", str(export)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "lacks required file(s): encounters (encounters.csv)" in err
    (export / "encounters.csv").write_text((SAMPLE / "encounters.csv").read_text())
    assert main(["spec", "check", "synthea", "--input", str(export)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (
        "site synthea, file payer_transitions.csv: none of the columns START_DATE, "
        "START_YEAR named in the spec (payer_transitions.start_datetime) is in the header"
    ) in err
