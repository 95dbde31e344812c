"""Domain labels, defined once (paper eq. 3: source = 0, target = 1).

They live at the bottom layer because snapshots store features per domain name; the environment
(:mod:`mmir_env.domains`) re-exports them.
"""

from __future__ import annotations

__all__ = ["DOMAINS", "DOMAIN_IDS", "DOMAIN_NAMES", "OUTSIDE_CLASSES", "SOURCE", "TARGET", "domain_id"]

SOURCE: int = 0
TARGET: int = 1
DOMAIN_NAMES: dict[int, str] = {SOURCE: "source", TARGET: "target"}
DOMAIN_IDS: dict[str, int] = {name: idx for idx, name in DOMAIN_NAMES.items()}
#: The domain names in label order: ``("source", "target")``.
DOMAINS: tuple[str, ...] = (DOMAIN_NAMES[SOURCE], DOMAIN_NAMES[TARGET])
#: Label of a target sample whose action is not one of the source classes.
OUTSIDE_CLASSES: int = -1


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
