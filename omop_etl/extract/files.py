"""The files of an export folder: which file entry of the spec reads which file.

Patterns are globs relative to the export folder and may name sub-folders
(``hosp/*.csv.gz``, ``**/Observation.*.ndjson``). A file may feed several entries
(admissions -> visits and care sites). Hidden files and folders (a name starting
with ``.``) are not part of an export. A file reached through a symbolic link that
leads out of the export folder is refused: the export is what is in its folder.
"""

from __future__ import annotations

from pathlib import Path

from omop_etl.errors import EtlError
from omop_etl.spec import SiteSpec

SYMLINK_RULE = "symlink_outside_export"


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def relative_name(path: Path, root: Path) -> str:
    """How messages name a file of the export: its path inside the export folder.

    >>> relative_name(Path("/x/b1/hosp/a.csv"), Path("/x/b1"))
    'hosp/a.csv'
    """
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def find_files(input_dir: Path, spec: SiteSpec) -> dict[str, list[Path]]:
    """Match every spec file pattern in the export folder, sub-folders included.

    A missing required file is an error; so is a matched file that is a symbolic link
    leading out of the export folder.
    """
    if not input_dir.is_dir():
        raise EtlError(f"site {spec.site}: input folder {input_dir} does not exist")
    found: dict[str, list[Path]] = {}
    missing = []
    for fs in spec.files:
        paths = sorted(
            p for p in input_dir.glob(fs.pattern) if p.is_file() and not _hidden(p, input_dir)
        )
        for path in paths:
            if not _inside(path, input_dir):
                raise EtlError(
                    f"site {spec.site}, file {relative_name(path, input_dir)} ({fs.name}): "
                    f"refused by rule {SYMLINK_RULE}: it is a symbolic link to "
                    f"{path.resolve()}, outside the export folder {input_dir}; put the "
                    "file itself into the export"
                )
        if not paths and fs.required and not fs.skip:
            missing.append(f"{fs.name} ({fs.pattern})")
        found[fs.name] = paths
    if missing:
        raise EtlError(
            f"site {spec.site}: export folder {input_dir} lacks required file(s): "
            + ", ".join(missing)
        )
    return found


def unmatched_files(input_dir: Path, files: dict[str, list[Path]]) -> list[Path]:
    """Files of the export folder and its sub-folders that no spec file describes."""
    matched = {path for paths in files.values() for path in paths}
    return sorted(
        p
        for p in input_dir.rglob("*")
        if p.is_file() and not _hidden(p, input_dir) and p not in matched
    )


def holds_export(folder: Path, spec: SiteSpec) -> bool:
    """Whether the spec's patterns match a file of ``folder`` itself: then it is one
    batch, else (with only folders in it) a folder of dated batch folders. A pattern's
    leading ``**/`` is left out: it would find the files of the batches inside."""
    for fs in spec.files:
        pattern = fs.pattern
        while pattern.startswith("**/"):
            pattern = pattern[3:]
        if any(p.is_file() and not _hidden(p, folder) for p in folder.glob(pattern)):
            return True
    return False
