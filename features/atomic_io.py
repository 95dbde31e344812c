"""Atomic file writes, defined once: write a temporary file next to the target, then rename it over.

``os.replace`` within one folder is atomic, so a reader (or the next run after a crash or a kill)
sees the old file or the new one, never half of one; the temporary file is removed when writing
fails. The temporary file lives in the target's folder because a rename across file systems is a
copy. Every writer of the package that must not leave a torn file goes through :func:`atomic_path`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_directory",
    "atomic_path",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "fsync_file",
]


def _file_mode() -> int:
    """Permissions of an ordinary new file under the current umask (``mkstemp`` creates 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush ``path``'s data to the disk (a rename alone survives a crash of the process, not of the machine)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename into it) to the disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(
    path: str | os.PathLike[str],
    *,
    prefix: str | None = None,
    suffix: str = ".tmp",
    fsync: bool = False,
) -> Iterator[Path]:
    """Yield a new, empty temporary file in ``path``'s folder; it replaces ``path`` when the block succeeds.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``path`` is left
    as it was. The parent folder is created. The result has the permissions of an ordinary new file.

    :param prefix: start of the temporary name (default ``path.name + "."``; a leading dot hides it).
    :param suffix: end of the temporary name; writers that choose a format by extension need theirs
        (``np.savez`` appends ``.npz`` to any other name, matplotlib picks the image type).
    :param fsync: flush the file before the rename and the folder after it (survives power loss).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=target.name + "." if prefix is None else prefix, suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _file_mode())
        if fsync:
            fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, **options: Any) -> Path:
    """Write ``data`` to ``path`` atomically (``options``: those of :func:`atomic_path`); returns the path."""
    with atomic_path(path, **options) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8", newline: str | None = None, **options: Any) -> Path:
    """Write ``text`` to ``path`` atomically (``newline`` as :func:`open`'s; ``options``: those of :func:`atomic_path`)."""
    with atomic_path(path, **options) as tmp:
        with open(tmp, "w", encoding=encoding, newline=newline) as fh:
            fh.write(text)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str], **options: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically: never a half-written checkpoint under that name."""
    import torch  # here, so that the text and bytes writers do not pay for torch

    with atomic_path(path, **options) as tmp:
        torch.save(obj, tmp)
    return Path(path)


@contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new temporary folder next to ``path``; it becomes ``path`` when the block succeeds.

    A folder already at ``path`` (e.g. a partial one from an interrupted older version) is replaced.
    On any exception the temporary folder and everything in it are removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
