"""Site specs: the YAML that says how one hospital's export becomes staging rows.

A spec is validated as a whole before anything runs; every problem is reported
with the spec file, the key path and what is wrong. The language is described
in ``mappings/sites/README.md``; file entries are parsed by ``omop_etl.spec.entries``.
"""

from __future__ import annotations

import fnmatch
import re
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from omop_etl import settings
from omop_etl.errors import EtlError
from omop_etl.spec.entries import (
    READ_DEFAULTS,
    check_lookup_files,
    check_read_options,
    parse_file,
)
from omop_etl.spec.model import (
    DEFAULT_EARLIEST,
    DEFAULT_MAX_REJECT_RATE,
    DEFAULT_SCHEDULE,
    DEFAULT_TIMEZONE,
    SiteSpec,
)
from omop_etl.staging import TARGETS

BATCH_MODES = {"incremental", "snapshot"}
# person-hash buckets the site's CDM is built in (Airflow mapped tasks, spread over
# workers); 1 builds it in one task
MAX_BUCKETS = 64
CRON_PRESETS = {"@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"}
_CRON = re.compile(r"^[0-9A-Za-z*/,?#-]+( [0-9A-Za-z*/,?#-]+){4}$")
MAX_ID_BLOCK = 15
MAX_EXTENDS = 4  # how deep specs may extend one another
_TOP_KEYS = {
    "site",
    "description",
    "extends",
    "id_block",
    "defaults",
    "value_maps",
    "units",
    "files",
    "batches",
    "max_reject_rate",
    "contracts",
    "check_thresholds",
    "code_forms",
    "schedule",
    "buckets",
    "timezone",
    "date_window",
}
# keys whose mappings a spec that extends another merges into the base's (by key);
# every other key it gives replaces the base's
_MERGED = {"defaults", "value_maps", "check_thresholds", "code_forms"}


def spec_path(name: str) -> Path:
    return settings.sites_dir() / f"{settings.check_site_name(name)}.yaml"


def available_sites() -> list[str]:
    return sorted(p.stem for p in settings.sites_dir().glob("*.yaml"))


def load_spec(name_or_path: str | Path) -> SiteSpec:
    """Load and validate a site spec by site name or path; raise EtlError listing every problem."""
    path = _find(name_or_path)
    problems: list[str] = []
    raw, sources = _read_extended(path, problems)
    spec = _parse(raw, problems, path) if raw is not None else None
    if problems or spec is None:
        listed = "\n".join(f"  {path}: {p}" for p in problems)
        raise EtlError(f"site spec {path.name} has {len(problems)} problem(s):\n{listed}")
    return SiteSpec(**{**spec.__dict__, "sources": tuple(sources)})


def _find(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"}:
        return path
    path = spec_path(str(name_or_path))
    if not path.exists():
        known = ", ".join(available_sites()) or "none"
        raise EtlError(f"no site spec named {name_or_path!r} in {path.parent} (known: {known})")
    return path


# libyaml's loader where PyYAML has it (several times faster on long specs)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    except OSError as exc:
        raise EtlError(f"{path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise EtlError(f"{path}: not valid YAML: {exc}") from exc


def _read_extended(path: Path, problems: list[str]) -> tuple[Any, list[Path]]:
    """The spec's mapping with the specs it extends folded in, and the files read.

    ``extends: NAME`` takes every key of spec NAME (in the same folder) that this spec
    does not give; ``defaults``, ``check_thresholds`` and ``code_forms`` are merged key
    by key, ``value_maps`` map by map and entry by entry, and ``files`` entries replace
    the base's entries of the same name (the others are kept, in the base's order, then
    this spec's new ones).
    """
    raw = _read_yaml(path)
    sources = [path]
    while isinstance(raw, dict) and raw.get("extends") is not None:
        base_name = raw["extends"]
        if not isinstance(base_name, str) or not re.match(r"^[a-z][a-z0-9_]*$", base_name):
            problems.append("extends: the name of another spec in the same folder")
            return raw, sources
        base_path = path.parent / f"{base_name}.yaml"
        if base_path in sources or len(sources) > MAX_EXTENDS:
            chain = " -> ".join(p.stem for p in [*sources, base_path])
            problems.append(f"extends: specs extend one another in a circle or too deep: {chain}")
            return raw, sources
        if not base_path.is_file():
            problems.append(f"extends: no spec {base_path.name} in {path.parent}")
            return raw, sources
        base = _read_yaml(base_path)
        sources.append(base_path)
        if not isinstance(base, dict):
            problems.append(f"extends: {base_path.name} is not a mapping of keys")
            return raw, sources
        raw = _merge(base, raw)
    return raw, sources


def _merge(base: dict, child: dict) -> dict:
    """``child`` over ``base``: its own site, description and id block are never inherited."""
    merged = {k: v for k, v in base.items() if k not in ("site", "description", "id_block")}
    for key, value in child.items():
        if key == "extends":
            continue
        if key == "value_maps" and isinstance(value, dict) and isinstance(base.get(key), dict):
            # a map the child names again gets the child's entries over the base's
            merged[key] = {
                name: {**base[key][name], **entries}
                if isinstance(entries, dict) and isinstance(base[key].get(name), dict)
                else entries
                for name, entries in {**base[key], **value}.items()
            }
        elif key in _MERGED and isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = {**base[key], **value}
        elif key == "files" and isinstance(value, list) and isinstance(base.get(key), list):
            mine = {e.get("name"): e for e in value if isinstance(e, dict)}
            replaced = [mine.get(e.get("name"), e) if isinstance(e, dict) else e for e in base[key]]
            base_names = {e.get("name") for e in base[key] if isinstance(e, dict)}
            added = [e for e in value if not isinstance(e, dict) or e.get("name") not in base_names]
            merged[key] = replaced + added
        else:
            merged[key] = value
    merged["extends"] = base.get("extends")
    return merged


def _parse(raw: Any, problems: list[str], path: Path) -> SiteSpec | None:
    if not isinstance(raw, dict):
        problems.append("top level: expected a mapping of keys (site, files, ...)")
        return None
    for key in sorted(set(raw) - _TOP_KEYS):
        problems.append(f"{key}: unknown key (allowed: {', '.join(sorted(_TOP_KEYS))})")
    site = raw.get("site")
    if not isinstance(site, str):
        problems.append("site: required, the site name")
        site = path.stem
    elif site != path.stem:
        problems.append(f"site: {site!r} must equal the file name {path.stem!r}")
    else:
        try:
            settings.check_site_name(site)
        except EtlError as exc:
            problems.append(f"site: {exc}")
    id_block = raw.get("id_block")
    if not isinstance(id_block, int) or isinstance(id_block, bool):
        problems.append(f"id_block: required, a whole number from 1 to {MAX_ID_BLOCK}")
        id_block = 0
    elif not 1 <= id_block <= MAX_ID_BLOCK:
        problems.append(f"id_block: {id_block} is outside 1..{MAX_ID_BLOCK}")

    defaults = dict(READ_DEFAULTS)
    raw_defaults = raw.get("defaults") or {}
    if not isinstance(raw_defaults, dict):
        problems.append("defaults: expected a mapping")
        raw_defaults = {}
    for key, value in raw_defaults.items():
        if key not in READ_DEFAULTS:
            problems.append(f"defaults.{key}: unknown key")
        defaults[key] = value
    check_read_options(defaults, "defaults", problems)

    value_maps = raw.get("value_maps") or {}
    if not isinstance(value_maps, dict) or not all(
        isinstance(m, dict) for m in value_maps.values()
    ):
        problems.append("value_maps: expected a mapping of map name -> {source value: target}")
        value_maps = {}
    value_maps = {
        name: {str(k): v for k, v in mapping.items()} for name, mapping in value_maps.items()
    }

    units = raw.get("units") or {}
    unit_vocabulary = units.get("vocabulary") if isinstance(units, dict) else None
    if units and not isinstance(unit_vocabulary, str):
        problems.append("units.vocabulary: expected the source_vocabulary_id of a unit code map")

    batches = raw.get("batches", "incremental")
    if batches not in BATCH_MODES:
        problems.append(
            f"batches: {batches!r} is not one of {sorted(BATCH_MODES)} (incremental: each "
            "batch adds to the earlier ones; snapshot: each batch is the whole export)"
        )
    max_rate = raw.get("max_reject_rate", DEFAULT_MAX_REJECT_RATE)
    if (
        isinstance(max_rate, bool)
        or not isinstance(max_rate, int | float)
        or not 0 <= max_rate <= 1
    ):
        problems.append("max_reject_rate: expected a fraction from 0 to 1 (e.g. 0.05)")
        max_rate = DEFAULT_MAX_REJECT_RATE

    contracts = raw.get("contracts") or []
    if not isinstance(contracts, list):
        problems.append("contracts: expected a list of {target, expectation, arguments...}")
        contracts = []
    for i, c in enumerate(contracts):
        if not isinstance(c, dict) or c.get("target") not in TARGETS:
            problems.append(f"contracts[{i}].target: one of {sorted(TARGETS)}")
        elif not re.match(r"^expect_[a-z_]+$", str(c.get("expectation", ""))):
            problems.append(
                f"contracts[{i}].expectation: a Great Expectations expectation name, "
                "e.g. expect_column_values_to_be_between"
            )
    thresholds = raw.get("check_thresholds") or {}
    if not isinstance(thresholds, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 100
        for v in thresholds.values()
    ):
        problems.append("check_thresholds: expected check id or name -> percent (0 to 100)")
        thresholds = {}

    code_forms = raw.get("code_forms") or {}
    if not isinstance(code_forms, dict) or not all(isinstance(v, str) for v in code_forms.values()):
        problems.append("code_forms: expected code system -> regular expression")
        code_forms = {}
    for system, form in code_forms.items():
        try:
            re.compile(form)
        except re.error as exc:
            problems.append(f"code_forms.{system}: not a regular expression: {exc}")

    schedule = raw.get("schedule", DEFAULT_SCHEDULE)
    if schedule is not None and (
        not isinstance(schedule, str) or not (schedule in CRON_PRESETS or _CRON.match(schedule))
    ):
        problems.append(
            f"schedule: {schedule!r} is not one of {sorted(CRON_PRESETS)}, a five-field cron "
            "expression (e.g. '0 3 * * *') or null (manual runs only)"
        )
        schedule = DEFAULT_SCHEDULE

    buckets = raw.get("buckets", 1)
    if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= MAX_BUCKETS:
        problems.append(f"buckets: {buckets!r} is not a whole number from 1 to {MAX_BUCKETS}")
        buckets = 1

    timezone = raw.get("timezone", DEFAULT_TIMEZONE)
    try:
        ZoneInfo(str(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(
            f"timezone: {timezone!r} is not an IANA time zone name (e.g. Asia/Seoul, UTC)"
        )
        timezone = DEFAULT_TIMEZONE
    earliest, latest = _date_window(raw.get("date_window"), problems)

    raw_files = raw.get("files")
    if not isinstance(raw_files, list) or not raw_files:
        problems.append("files: required, a list of the export's files")
        raw_files = []
    entry_names = [e.get("name") for e in raw_files if isinstance(e, dict)]
    files = []
    seen: set[str] = set()
    for i, entry in enumerate(raw_files):
        fs = parse_file(entry, f"files[{i}]", defaults, value_maps, entry_names, problems)
        if fs is None:
            continue
        if fs.name in seen:
            problems.append(f"files[{i}].name: {fs.name!r} is used twice")
        seen.add(fs.name)
        files.append(fs)
    if not any(f.target == "person" for f in files):
        problems.append("files: no file has target 'person'")
    check_lookup_files(files, problems)
    problems.extend(_conflicts(files))
    return SiteSpec(
        site=site,
        description=str(raw.get("description") or site),
        id_block=id_block,
        files=tuple(files),
        value_maps=value_maps,
        unit_vocabulary=unit_vocabulary,
        path=path,
        batches=str(batches),
        max_reject_rate=float(max_rate),
        contracts=tuple(c for c in contracts if isinstance(c, dict)),
        check_thresholds={str(k): float(v) for k, v in thresholds.items()},
        code_forms={str(k): v for k, v in code_forms.items()},
        schedule=schedule,
        buckets=buckets,
        timezone=str(timezone),
        earliest=earliest,
        latest=latest,
    )


def _date_window(raw: Any, problems: list[str]) -> tuple[date, date | None]:
    """``date_window: {earliest: YYYY-MM-DD, latest: YYYY-MM-DD}``; both optional."""
    if raw is None:
        return DEFAULT_EARLIEST, None
    if not isinstance(raw, dict) or set(raw) - {"earliest", "latest"}:
        problems.append("date_window: expected {earliest: YYYY-MM-DD, latest: YYYY-MM-DD}")
        return DEFAULT_EARLIEST, None
    bounds: dict[str, date | None] = {"earliest": DEFAULT_EARLIEST, "latest": None}
    for key in ("earliest", "latest"):
        if key not in raw:
            continue
        try:
            bounds[key] = date.fromisoformat(str(raw[key]))
        except ValueError:
            problems.append(f"date_window.{key}: {raw[key]!r} is not a date YYYY-MM-DD")
    earliest, latest = bounds["earliest"], bounds["latest"]
    assert earliest is not None
    if latest is not None and latest < earliest:
        problems.append(f"date_window: latest {latest} is before earliest {earliest}")
    return earliest, latest


def _conflicts(files: list) -> list[str]:
    """Entries that would stage the same file into the same target twice.

    A file may feed several entries (admissions -> visits and care sites); two entries
    whose patterns can match one file and that fill one non-event target would make
    every record a duplicate of itself.
    """
    problems = []
    for i, a in enumerate(files):
        for b in files[i + 1 :]:
            if not a.target or a.target != b.target or a.target == "event":
                continue
            if _may_overlap(a.pattern, b.pattern):
                problems.append(
                    f"files: {a.name} and {b.name} both stage files matching "
                    f"{a.pattern!r} / {b.pattern!r} into target {a.target}: a record would be "
                    "staged twice (give one of them another target, or exclusive patterns)"
                )
    return problems


def _may_overlap(a: str, b: str) -> bool:
    """Whether two glob patterns can match one path (a literal match either way)."""
    return a == b or fnmatch.fnmatchcase(a, b) or fnmatch.fnmatchcase(b, a)


def id_block_conflicts(spec: SiteSpec) -> list[str]:
    """The other specs of the folder that use the same id block (their ids would collide).
    A spec's id block is its own (never inherited), so its file alone says it."""
    others = []
    for name in available_sites():
        if name == spec.site:
            continue
        try:
            raw = _read_yaml(spec_path(name))
        except EtlError:
            continue  # that spec's own problems are reported when it is checked or run
        if isinstance(raw, dict) and raw.get("id_block") == spec.id_block:
            others.append(name)
    return others


def check_id_block(spec: SiteSpec) -> None:
    """Refuse a spec whose id block another spec of the folder uses."""
    others = id_block_conflicts(spec)
    if others:
        raise EtlError(
            f"site spec {spec.site}.yaml: id_block {spec.id_block} is also the id block of "
            f"{', '.join(others)}: person and event ids of the two sites would collide in the "
            "consortium views; give each site its own id_block"
        )
