"""Domain labels, defined once (paper eq. 3: source = 0, target = 1)."""

from __future__ import annotations

SOURCE: int = 0
TARGET: int = 1
DOMAIN_NAMES: dict[int, str] = {SOURCE: "source", TARGET: "target"}
DOMAIN_IDS: dict[str, int] = {name: idx for idx, name in DOMAIN_NAMES.items()}


def domain_id(domain: int | str) -> int:
    """Return the integer label of ``domain`` ("source"/"target" or 0/1)."""
    if isinstance(domain, str):
        try:
            return DOMAIN_IDS[domain]
        except KeyError:
            raise ValueError(f"domain must be 'source' or 'target', got {domain!r}") from None
    if isinstance(domain, bool) or domain not in DOMAIN_NAMES:
        raise ValueError(f"domain must be 0 (source) or 1 (target), got {domain!r}")
    return int(domain)
