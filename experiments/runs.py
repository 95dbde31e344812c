"""Run folders a researcher can trust: one writer at a time, no silent overwrite, resume only what was started.

A run folder (``output_dir/name``) holds one run's ``config.json``, ``metrics.jsonl``, checkpoints,
snapshots and summary. This module keeps it consistent:

- :class:`RunLock`: an exclusive ``flock`` on ``RUN/.lock`` (which records the holder's pid and
  host) for as long as a process trains into the folder. The kernel drops the lock when its
  process dies, however it dies, so a stale lock of a killed run is simply taken over.
- :func:`prepare_run_folder`: a fresh run refuses a folder that already holds one (unless told to
  overwrite it, or the run there stopped before it saved any state: nothing to resume, so it is
  started again); a resumed run refuses a config that differs from the stored one in anything but
  the step counts.
- :func:`run_folder_problem`: why a run could not write its folder (not a folder, read-only), checked
  before anything trains.
- :func:`resume_state`: the newest usable state to continue from (``checkpoint.pt`` or ``stage1.pt``).
- :func:`usable_device`: the configured torch device, or a one-line error when this machine lacks it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments.config import ConfigError, RunConfig, from_dict, migrate_legacy
from features.atomic_io import folder_problem, remove_stale_temporaries

if TYPE_CHECKING:
    import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "RESUMABLE_KEYS",
    "RUN_FILES",
    "RunFolderError",
    "RunLock",
    "clear_run",
    "config_differences",
    "existing_run_files",
    "finished_run",
    "one_line",
    "prepare_run_folder",
    "read_checkpoint",
    "remove_stale_temporaries",
    "resume_state",
    "run_folder_problem",
    "saved_state",
    "usable_device",
    "with_defaults",
]

# What a run writes into its folder (and --overwrite removes); nothing else there is touched.
RUN_FILES = ("config.json", "metrics.jsonl", "checkpoint.pt", "stage1.pt", "summary.json", "refinement_stats.json")
# What a run has to show for itself: a state to resume from, or its result. A folder with none of
# them (a run stopped before its first checkpoint) holds nothing a new start could lose.
SAVED_FILES = ("checkpoint.pt", "stage1.pt", "summary.json")
RUN_FOLDERS = ("snapshots", "tensorboard")
# The keys a resumed run may change: training longer (or shorter) is still the same run.
RESUMABLE_KEYS = ("stage1.steps", "stage2.steps")
# Where the folder is, not what it trains: a run folder moved or copied elsewhere resumes there.
LOCATION_KEYS = ("output_dir", "name")
LOCK_NAME = ".lock"
CHECKPOINT_FORMAT = "mmir-cotrain"
CHECKPOINT_VERSION = 2


class RunFolderError(Exception):
    """A run folder that cannot be used as asked; the message says why and what to do instead."""


class RunLock:
    """An exclusive lock on a run folder for the duration of a ``with`` block (re-entrant within a process).

    A second process asking for a held folder gets :class:`RunFolderError` naming the holder's pid
    and host at once (no waiting). ``flock`` locks belong to the open file, so the kernel releases
    them when the holder exits or is killed: no stale lock survives its process.
    """

    _held: dict[Path, list[Any]] = {}  # resolved folder -> [fd, depth]; this process's locks

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)

    def __enter__(self) -> RunLock:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunFolderError(
                f"cannot create the folder {self.run_dir} ({err.strerror or err}); "
                f"{folder_problem(self.run_dir) or 'check the path'}"
            ) from None
        key = self.run_dir.resolve()
        if key in self._held:
            self._held[key][1] += 1
            return self
        path = key / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunFolderError(
                f"cannot create the lock file {path} ({err.strerror or err}); the folder must be writable"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (
                errno.ENOLCK,
                errno.EOPNOTSUPP,
                errno.ENOSYS,
            ):  # a file system without flock (some NFS setups)
                warnings.warn(
                    f"{path}: this file system cannot lock files ({err.strerror}); nothing stops a second run "
                    "from writing into this folder at the same time",
                    RuntimeWarning,
                    stacklevel=2,
                )
            else:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "an unknown process"
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunFolderError(
                        f"{self.run_dir} is in use by {holder} (lock {path}); wait for it, "
                        "stop it, or train into another folder (--set name=...)"
                    ) from None
                raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._held[key] = [fd, 1]
        return self

    def __exit__(self, *exc: object) -> None:
        key = self.run_dir.resolve()
        entry = self._held[key]
        entry[1] -= 1
        if entry[1] == 0:
            del self._held[key]
            os.close(entry[0])  # releases the flock; the file stays (removing it would race a waiting opener)


def existing_run_files(run_dir: Path) -> list[str]:
    """The run outputs already in ``run_dir`` (empty: nothing to protect)."""
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def saved_state(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` saved anything to continue from or keep: a checkpoint or its summary."""
    return any((run_dir / name).is_file() for name in SAVED_FILES)


def run_folder_problem(run_dir: Path, resume: bool = False, overwrite: bool = False) -> str | None:
    """Why a run cannot write into ``run_dir`` (``output_dir/name``), as a sentence saying what to do; None when it can.

    Checked before a run builds or trains anything, so that no training is lost to a path that
    could never hold its checkpoints.
    """
    run_dir = Path(run_dir)
    problem = folder_problem(run_dir)
    if problem is None:
        return None
    if run_dir.is_dir():  # the run folder itself is read-only
        if resume:
            todo = (
                "--resume writes the run's checkpoints and metrics there: make it writable, or copy the folder "
                "under a writable output_dir and resume it there (--set output_dir=...)"
            )
        elif overwrite:
            todo = "--overwrite deletes and writes files there: make it writable, or train elsewhere (--set output_dir=...)"
        else:
            todo = "make it writable, or train elsewhere (--set output_dir=... or --set name=...)"
        return f"run folder {run_dir}: {problem}; {todo}"
    if run_dir.exists() or run_dir.is_symlink():
        return f"run folder {run_dir}: {problem}; choose another run name (--set name=...)"
    return f"output_dir {str(run_dir.parent)!r}: {problem}; set output_dir to a writable folder (--set output_dir=...)"


def clear_run(run_dir: Path) -> None:
    """Remove a previous run's outputs (``--overwrite``); files of other origin in the folder stay."""
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for name in RUN_FOLDERS:
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)
    remove_stale_temporaries(run_dir, RUN_FILES)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict) or (prefix and not data):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        # tables of user-chosen keys (objectives, checkpoints) compare as one value
        out.update(_flatten(value, dotted) if isinstance(value, dict) and dotted.count(".") < 1 else {dotted: value})
    return out


def with_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored ``config.json`` as this version of mmir would write it: keys added since get their defaults.

    A new key's default keeps the behaviour from before it existed, so a run written by an earlier
    mmir is the same run as today's config that leaves the key at its default; a method switch of an
    earlier version reads as the registry entry that replaced it (:func:`experiments.config.migrate_legacy`).
    A stored config this version cannot read (a key since removed, a wrong type) is returned as it is.
    """
    try:
        return from_dict(RunConfig, migrate_legacy(stored)).to_dict()
    except (ConfigError, TypeError, ValueError):
        return stored


def config_differences(stored: dict[str, Any], current: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ between a stored config (see :func:`with_defaults`) and a
    ``RunConfig.to_dict()`` mapping, as ``key: old -> new``."""
    old, new = _flatten(json.loads(json.dumps(with_defaults(stored)))), _flatten(json.loads(json.dumps(current)))
    return [
        f"{key}: {json.dumps(old.get(key))} -> {json.dumps(new.get(key))}"
        for key in sorted(set(old) | set(new))
        if key not in ignore and old.get(key) != new.get(key)
    ]


def finished_run(cfg: RunConfig, extra: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The summary (merged with the ``extra`` JSON files) of the finished run of ``cfg`` in its folder, or None.

    Finished: ``summary.json``, ``config.json`` and every ``extra`` file are there, and the stored
    config is ``cfg``'s (no :func:`config_differences`). Benchmarks use it to skip what is done.
    """
    run_dir = cfg.run_dir()
    files = [run_dir / name for name in ("summary.json", "config.json", *extra)]
    if not all(f.is_file() for f in files):
        return None
    try:
        stored = json.loads(files[1].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or config_differences(stored, cfg.to_dict()):
        return None
    merged: dict[str, Any] = {}
    for f in (files[0], *files[2:]):
        merged.update(json.loads(f.read_text(encoding="utf-8")))
    return merged


def prepare_run_folder(
    run_dir: Path, config: dict[str, Any], resume: bool, overwrite: bool, clear: bool = True
) -> None:
    """Check (and with ``overwrite`` empty) ``run_dir`` before a run starts in it; the caller holds its :class:`RunLock`.

    A fresh run empties a folder whose run stopped before saving any state (:func:`saved_state`)
    without ``overwrite``: there is nothing in it to resume or keep.

    :param clear: False: only check (nothing is removed), e.g. before building what the run needs.
    :raises RunFolderError: a fresh run into a folder that holds one, or a resume whose config
        differs from the stored ``config.json`` in more than :data:`RESUMABLE_KEYS`.
    """
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other: continue the run or replace it")
    if resume:
        stored_path = run_dir / "config.json"
        if stored_path.is_file():
            try:
                stored = json.loads(stored_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise RunFolderError(
                    f"{stored_path}: unreadable ({err}); cannot check that --resume continues the same run"
                ) from None
            changed = config_differences(stored, config, ignore=RESUMABLE_KEYS + LOCATION_KEYS)
            if changed:
                raise RunFolderError(
                    f"--resume: the config differs from the run's {stored_path} in {'; '.join(changed)} "
                    f"(only {', '.join(RESUMABLE_KEYS)} may change); start a new run under another name instead"
                )
        return
    found = existing_run_files(run_dir)
    if found and not overwrite and saved_state(run_dir):
        raise RunFolderError(
            f"{run_dir} already holds a run ({', '.join(found)}); use --resume to continue it, "
            "--overwrite to replace it, or another name (--set name=...)"
        )
    if found and clear:  # replaced, or a run that stopped before it saved a state: nothing there to resume
        clear_run(run_dir)


def one_line(err: BaseException, limit: int = 240) -> str:
    """An exception's message on one line (torch's are several), cut at ``limit`` characters."""
    text = " ".join(part.strip() for part in str(err).splitlines() if part.strip()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the run; the message names the file."""


def read_checkpoint(path: Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """A co-training checkpoint as a dict, or :class:`CheckpointError` (missing: ``FileNotFoundError``).

    ``mmap``: map the file instead of reading it (the tensors load when touched; cheap for a peek).
    """
    import torch  # here: the checks of a run folder need no torch (`mmir train` reports them before importing it)

    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises several types for truncated, empty or foreign files
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt: {one_line(err)}); "
            "delete it to resume from an earlier state, or start afresh with --overwrite"
        ) from None
    if (
        not isinstance(state, dict)
        or state.get("format") != CHECKPOINT_FORMAT
        or state.get("version") != CHECKPOINT_VERSION
    ):
        raise CheckpointError(f"{path} is not an mmir co-training checkpoint of version {CHECKPOINT_VERSION}")
    return state


def _peek(path: Path) -> tuple[int, int]:
    """(stage, step) of a checkpoint, read lazily (``mmap``: the tensors are not loaded)."""
    state = read_checkpoint(path, mmap=True)
    return int(state["stage"]), int(state["step"])


def resume_state(run_dir: Path) -> Path:
    """The newest state of ``run_dir`` to resume from: ``checkpoint.pt`` or ``stage1.pt``, whichever is further.

    A run whose checkpoints are far apart (``checkpoints.every`` large) killed in stage 2 has only
    ``stage1.pt`` past its last ``checkpoint.pt``; that is where it continues.
    """
    candidates = [run_dir / name for name in ("checkpoint.pt", "stage1.pt") if (run_dir / name).is_file()]
    if not candidates:
        raise FileNotFoundError(
            f"no checkpoint to resume from at {run_dir / 'checkpoint.pt'} (nor {run_dir / 'stage1.pt'})"
        )
    if len(candidates) == 1:
        return candidates[0]
    return max(candidates, key=_peek)  # checkpoint.pt first: it wins a tie


def usable_device(name: str, key: str = "device") -> torch.device:
    """``name`` (``"auto"``, ``"cpu"``, ``"cuda:1"``, ...) as a device this machine has, else a :class:`ConfigError`.

    :param key: what set the name, for the message: a config key (``device``) or a flag (``--device``).
    """
    import torch

    from features.devices import resolve_device

    said = f"{key} {name}" if key.startswith("--") else f"{key} = {name!r}"
    instead = f"use {key} cpu" if key.startswith("--") else f'use {key} = "cpu" (or "auto")'
    try:
        device = resolve_device(name)
    except RuntimeError as err:
        raise ConfigError(f"{said} is not a torch device ({one_line(err)})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ConfigError(f"{said}, but {why}; {instead}")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{said}, but this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{said}, but MPS is not available here; {instead}")
    return device
