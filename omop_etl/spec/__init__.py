"""Site specs: the validated model of a site's YAML spec, and its parser."""

from omop_etl.spec.model import (
    DEFAULT_MAX_REJECT_RATE,
    DEFAULT_SCHEDULE,
    ColumnRule,
    Each,
    FileFilter,
    FileSpec,
    Lookup,
    SiteSpec,
)
from omop_etl.spec.parse import (
    MAX_BUCKETS,
    MAX_ID_BLOCK,
    available_sites,
    check_id_block,
    id_block_conflicts,
    load_spec,
    spec_path,
)

__all__ = [
    "DEFAULT_MAX_REJECT_RATE",
    "DEFAULT_SCHEDULE",
    "MAX_BUCKETS",
    "MAX_ID_BLOCK",
    "ColumnRule",
    "Each",
    "FileFilter",
    "FileSpec",
    "Lookup",
    "SiteSpec",
    "available_sites",
    "check_id_block",
    "id_block_conflicts",
    "load_spec",
    "spec_path",
]
