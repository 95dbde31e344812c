"""Domain labels (paper eq. 3: source = 0, target = 1); defined in :mod:`features.domains`, the lowest layer."""

from __future__ import annotations

from features.domains import DOMAIN_IDS, DOMAIN_NAMES, SOURCE, TARGET, domain_id

__all__ = ["DOMAIN_IDS", "DOMAIN_NAMES", "SOURCE", "TARGET", "domain_id"]
