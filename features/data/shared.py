"""Locating the shared test/example data (``../shared/data`` beside the repository clone)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SHARED_DATA_ENV", "REPO_ROOT", "find_shared_data", "shared_data_dir"]

#: Environment variable that overrides the location of the shared data folder.
SHARED_DATA_ENV = "MMIR_SHARED_DATA"

#: Root of the repository this package lives in (``features/data/shared.py`` -> two levels up).
REPO_ROOT = Path(__file__).resolve().parents[2]


def find_shared_data() -> Path | None:
    """The shared data folder, or None when it is absent.

    ``$MMIR_SHARED_DATA`` wins when set (and must exist); otherwise ``<repo>/../shared/data``.
    """
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"${SHARED_DATA_ENV}={env!r} is not a directory")
        return path
    path = REPO_ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


def shared_data_dir() -> Path:
    """The shared data folder; raises naming both places looked at when it is absent."""
    path = find_shared_data()
    if path is None:
        raise FileNotFoundError(
            f"shared data not found: set ${SHARED_DATA_ENV} or place it at {REPO_ROOT.parent / 'shared' / 'data'}"
        )
    return path
