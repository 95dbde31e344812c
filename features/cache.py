"""The user cache folder of the package: fetched weights and data sets, the demo's generated videos."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_dir"]

#: Environment variable that moves the cache (e.g. to a shared or larger disk).
CACHE_ENV = "MMIR_CACHE"


def cache_dir() -> Path:
    """``$MMIR_CACHE`` or ``~/.cache/mmir`` (not created here: the writers create what they need)."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "mmir")).expanduser()
