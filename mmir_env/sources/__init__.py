"""Candidate sources for the instance-refinement environment."""

from mmir_env.sources.base import ArraySource, CandidateBatch, CandidateSource, sample_distinct_rows
from mmir_env.sources.snapshot import SnapshotSource, write_synthetic_snapshot
from mmir_env.sources.synthetic import (
    OUTSIDE_CLASSES,
    SyntheticConfig,
    SyntheticDomains,
    SyntheticSource,
    generate_synthetic_domains,
)

__all__ = [
    "ArraySource",
    "CandidateBatch",
    "CandidateSource",
    "OUTSIDE_CLASSES",
    "SnapshotSource",
    "SyntheticConfig",
    "SyntheticDomains",
    "SyntheticSource",
    "generate_synthetic_domains",
    "sample_distinct_rows",
    "write_synthetic_snapshot",
]
