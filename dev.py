#!/usr/bin/env python3
"""Set up the project's virtual environment and run the demo or the test suite.

    python3 dev.py demo    # install, then run the demo into ./warehouse.duckdb
    python3 dev.py test    # install, then lint, format check and the whole test suite

Needs only Python 3.11+. The environment lives in .venv and is reinstalled only
when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed-from"


def _run(*cmd: str | Path) -> None:
    result = subprocess.run([str(c) for c in cmd], cwd=ROOT)
    if result.returncode:
        sys.exit(result.returncode)


def setup() -> None:
    """Create .venv and install the project with its dev extras when needed."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be started by an older Python
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}.")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print("Creating .venv ...", flush=True)
        venv.create(VENV, with_pip=True)
    print("Installing the project and its pinned dependencies (first run: ~2 minutes) ...")
    _run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    _run(BIN / "python", "-m", "pip", "install", "--quiet", "-e", ".[dev]")
    STAMP.write_text(wanted)


def main(argv: list[str]) -> None:
    if len(argv) != 1 or argv[0] not in {"demo", "test"}:
        sys.exit(__doc__)
    setup()
    if argv[0] == "demo":
        _run(BIN / "omop-etl", "demo")
    else:
        _run(BIN / "ruff", "check", ".")
        _run(BIN / "ruff", "format", "--check", ".")
        _run(BIN / "python", "-m", "pytest")


if __name__ == "__main__":
    main(sys.argv[1:])
