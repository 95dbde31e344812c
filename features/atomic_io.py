"""Atomic file writes, defined once: write a temporary file next to the target, then rename it over.

``os.replace`` within one folder is atomic, so a reader (or the next run after a crash or a kill)
sees the old file or the new one, never half of one; the temporary file is removed when writing
fails. The temporary file lives in the target's folder because a rename across file systems is a
copy. Every writer of the package that must not leave a torn file goes through :func:`atomic_path`.
"""

from __future__ import annotations

import errno
import glob
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "DiskFullError",
    "append_line",
    "atomic_directory",
    "atomic_path",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "disk_full_error",
    "folder_problem",
    "fsync_dir",
    "fsync_file",
    "is_disk_full",
    "json_text",
    "remove_stale_temporaries",
]

# errno values that mean "no room for these bytes": the device is full, or the user's quota is.
_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """No space for a write (ENOSPC, or a full quota); the message names the file and the space it needs."""

    def __str__(self) -> str:
        return str(self.strerror)


def _size_text(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` is the file system refusing bytes for want of space (ENOSPC, or a full quota)."""
    return isinstance(err, OSError) and err.errno in _FULL


def disk_full_error(target: str | os.PathLike[str], needed: int | None = None, written: int = 0) -> DiskFullError:
    """The :class:`DiskFullError` for a write of ``target`` that did not fit: names the file, the space it needs and the space free.

    :param needed: bytes the whole file needs (None: unknown, then ``written`` is what it got before failing).
    """
    target = Path(target)
    try:  # the space where the bytes go: in the folder itself when the target is one (an events folder)
        where = target if target.is_dir() else target.parent
        free: int | None = shutil.disk_usage(where if where.is_dir() else ".").free
    except OSError:  # pragma: no cover
        free = None
    if needed:
        need = f": it needs about {_size_text(needed)}"
    elif written:
        need = f": it needs more than the {_size_text(written)} written before it failed"
    else:
        need = ""
    has = f", {_size_text(free)} free there" if free is not None else ""
    return DiskFullError(errno.ENOSPC, f"no space left on device writing {target}{need}{has}")


def folder_problem(path: str | os.PathLike[str]) -> str | None:
    """Why files cannot be written into the folder ``path`` (made with its parents if missing), or None when they can.

    The nearest existing folder on the way is probed by creating and removing a file in it: permission
    bits alone do not tell (root ignores them; a read-only mount or an ACL overrides them).
    """
    path = Path(path)
    existing = path
    while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
        existing = existing.parent
    if existing.is_symlink() and not existing.exists():
        return f"{existing} is a broken symbolic link"
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".mmir-write-test.", dir=existing)
    except OSError as err:
        return f"{existing} is not writable ({(err.strerror or str(err)).lower()})"
    os.close(fd)
    os.unlink(probe)
    return None


def append_line(path: str | os.PathLike[str], line: str) -> int:
    """Append ``line`` and a newline to ``path`` (created if missing) as one write, all of it or none; returns the file's new size.

    A log read line by line (``metrics.jsonl``) then never ends in half a line: when the write fails
    part way (a full disk), the file is cut back to where it ended before.

    :raises DiskFullError: no space for the line (the file is as it was).
    :raises ValueError: ``line`` holds a newline of its own.
    """
    if "\n" in line.rstrip("\n"):
        raise ValueError(f"append_line writes one line; got {line.count(chr(10))} newlines")
    data = memoryview((line.rstrip("\n") + "\n").encode("utf-8"))
    size = len(data)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        end = os.fstat(fd).st_size
        try:
            while data:
                data = data[os.write(fd, data) :]
        except BaseException as err:
            os.ftruncate(fd, end)
            if is_disk_full(err):
                raise disk_full_error(path, size) from err
            raise
        return end + size
    finally:
        os.close(fd)


def json_text(obj: Any, indent: int | None = None) -> str:
    """``obj`` as strict JSON: NaN and infinities become ``null`` (``json.dumps`` would write bare ``NaN``, which is not JSON)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(obj), indent=indent, allow_nan=False)


def remove_stale_temporaries(folder: str | os.PathLike[str], names: tuple[str, ...] | list[str]) -> list[Path]:
    """Delete the temporaries :func:`atomic_path` left for ``names`` in ``folder`` when a process was killed mid-write.

    Only ``NAME.<random>.tmp`` of the given names go (the default prefix and suffix): the caller
    must own the folder (hold its lock), since a live writer's temporary has the same pattern.
    """
    removed = []
    for name in names:
        for path in Path(folder).glob(f"{glob.escape(name)}.*.tmp"):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


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
    size_hint: int | None = None,
) -> Iterator[Path]:
    """Yield a new, empty temporary file in ``path``'s folder; it replaces ``path`` when the block succeeds.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``path`` is left
    as it was. The parent folder is created. The result has the permissions of an ordinary new file.

    :param prefix: start of the temporary name (default ``path.name + "."``; a leading dot hides it).
    :param suffix: end of the temporary name; writers that choose a format by extension need theirs
        (``np.savez`` appends ``.npz`` to any other name, matplotlib picks the image type).
    :param fsync: flush the file before the rename and the folder after it (survives power loss).
    :param size_hint: bytes the file will take, for the message of a :class:`DiskFullError` (raised
        instead of a bare ENOSPC ``OSError``).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=target.name + "." if prefix is None else prefix, suffix=suffix, dir=target.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _file_mode())
        if fsync:
            fsync_file(tmp)
        os.replace(tmp, target)
    except OSError as err:
        if is_disk_full(err) and not isinstance(err, DiskFullError):
            written = tmp.stat().st_size if tmp.exists() else 0
            tmp.unlink(missing_ok=True)  # first: the space it held is free again for the message to count
            raise disk_full_error(target, size_hint, written) from err
        tmp.unlink(missing_ok=True)
        raise
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


def atomic_write_text(
    path: str | os.PathLike[str], text: str, encoding: str = "utf-8", newline: str | None = None, **options: Any
) -> Path:
    """Write ``text`` to ``path`` atomically (``newline`` as :func:`open`'s; ``options``: those of :func:`atomic_path`)."""
    with atomic_path(path, **options) as tmp:
        with open(tmp, "w", encoding=encoding, newline=newline) as fh:
            fh.write(text)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str], **options: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically: never a half-written checkpoint under that name."""
    import torch  # here, so that the text and bytes writers do not pay for torch

    options.setdefault("size_hint", _tensor_bytes(obj))
    with atomic_path(path, **options) as tmp:
        full = False
        try:
            torch.save(obj, tmp)
        except RuntimeError:
            # torch's writer reports a full disk as "[enforce fail at inline_container.cc] ... unexpected
            # pos" with no errno; the free space left on the file system tells it apart.
            full = _out_of_space(tmp, options["size_hint"])
            if not full:
                raise
        if full:  # raised here, not chained: torch's error holds its writer, and the writer the file's space
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return Path(path)


def _out_of_space(tmp: Path, needed: int | None) -> bool:
    """Whether the file system of ``tmp`` (a failed write) lacks the room to finish it."""
    try:
        free = shutil.disk_usage(tmp.parent).free
        written = tmp.stat().st_size if tmp.exists() else 0
    except OSError:  # pragma: no cover
        return False
    return free < max((needed or 0) - written, 1 << 20)


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a nested state (what dominates a checkpoint's size)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return len(obj) if isinstance(obj, (str, bytes)) else 0


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
