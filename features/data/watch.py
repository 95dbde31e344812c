"""Smartwatch shoulder exercises: a real two-modality cross-domain benchmark (left arm <-> right arm).

Data. ``seglearn==1.2.5`` ships ``seglearn/data/watch_dataset.npy``: 140 recordings at 50 Hz from a
smartwatch, 10 subjects x 2 arms x 7 shoulder-physiotherapy exercises (``PEN ABD FEL IR ER TRAP ROW``),
one recording per (subject, arm, exercise), 947-2618 samples each, channels ``ax ay az`` (accelerometer)
and ``wx wy wz`` (gyroscope). The file is a Python-2 pickle; it is fetched with
:func:`features.registry_files.fetch_registry_file` (pinned sha256 of the wheel and of the member), read
ONCE with the restricted unpickler (:func:`features.safe_pickle.safe_load_npy`), validated and converted
into ``<cache>/watch/watch-v1.npz`` (plain arrays, read with ``allow_pickle=False``), so later runs never
unpickle anything. ``mmir data fetch watch`` does the same from the command line.

Windows. Every recording is cut into windows of ``window`` samples (2 s = 100 samples) with 50%
overlap (hop ``window // 2``), starting at sample 0; the tail shorter than a hop is dropped, and a
recording shorter than one window gives none (none of the 140 is). Two modalities: ``"acc"`` (ax, ay,
az) and ``"gyro"`` (wx, wy, wz); an item holds one float32 ``[3, window]`` tensor per modality.

Standardisation. Each of the 6 channels is standardised, ``(x - mean) / std``, with the mean and std
over every sample of the **source split's recordings** (the labelled training data), and the same
statistics are applied to the target-train and test windows: nothing about the target arm is used.

Domains and splits. Domain = arm: ``"left"`` (side 0) and ``"right"`` (side 1). For a direction
``source -> target``:

* ``source``: every recording of the source arm (all 10 subjects), labelled;
* ``target``: the target arm's recordings of subjects 1-7, used unlabelled by the loop;
* ``test``: the target arm's recordings of subjects 8-10 (:data:`TEST_SUBJECTS`), held out.

With ``source == target`` (the supervised-target upper bound, as in the EPIC presets) the labelled
split is the target arm's subjects 1-7, never the test subjects.

Evaluation unit. Every window has its own ``uid`` (its index among all windows of the data set), so
the loop's uid-grouped evaluation reports per-window top-1 and mean class accuracy; the ``recording``
key of an item allows a recording-level vote outside the loop.

Window counts (window 100, hop 50): left arm 2434 windows (subjects 1-7: 1683, 8-10: 751), right arm
2243 (subjects 1-7: 1510, 8-10: 733); see ``mmir data fetch watch`` for the full table.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from features.atomic_io import atomic_path
from features.cache import cache_dir
from features.registry_files import RegistryFile, fetch_registry_file

__all__ = [
    "ARMS",
    "CHANNELS",
    "CLASSES",
    "MODALITY_CHANNELS",
    "SAMPLE_RATE",
    "TEST_SUBJECTS",
    "WATCH",
    "WINDOW",
    "WatchData",
    "WatchDataError",
    "WatchWindows",
    "channel_stats",
    "converted_path",
    "load_watch",
    "split_recordings",
    "summary_rows",
    "watch_splits",
    "window_starts",
]

WATCH = RegistryFile(
    "seglearn",
    "1.2.5",
    "wheel",
    "ec6b952c85c9627050102854b372d85951563d3b990df677d7c55547e87413dd",
    "seglearn/data/watch_dataset.npy",
    "watch/watch_dataset.npy",
    member_sha256="eb122f23cdf06ef6bd6c6c5312958ec5cf9d038e2e6d457b8081662c75a42537",
)
#: The converted file below the cache; bump the version when the conversion changes.
CONVERTED_NAME = "watch/watch-v1.npz"
CONVERTED_VERSION = 1

SAMPLE_RATE = 50  # Hz
WINDOW = 2 * SAMPLE_RATE  # 2-second windows
ARMS: dict[str, int] = {"left": 0, "right": 1}  # arm name -> the data set's ``side``
CHANNELS: tuple[str, ...] = ("ax", "ay", "az", "wx", "wy", "wz")
CLASSES: tuple[str, ...] = ("PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW")
#: modality -> its columns of a recording.
MODALITY_CHANNELS: dict[str, tuple[int, ...]] = {"acc": (0, 1, 2), "gyro": (3, 4, 5)}
#: Subjects whose target-arm recordings form the test split (held out from the unlabelled target data).
TEST_SUBJECTS: tuple[int, ...] = (8, 9, 10)


class WatchDataError(ValueError):
    """The watch data (original pickle or converted file) does not have the expected structure."""


@dataclass(frozen=True)
class WatchData:
    """All recordings: ``signals[i]`` is a float32 ``[n_i, 6]`` array; the rest are per-recording ints."""

    signals: tuple[np.ndarray, ...]
    labels: np.ndarray  # exercise index into ``classes``
    subjects: np.ndarray  # 1-10
    sides: np.ndarray  # 0 left, 1 right
    classes: tuple[str, ...]
    channels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.signals)


# ---------------------------------------------------------------------- loading and conversion
def validate_watch(raw: Any, source: str = "watch data") -> WatchData:
    """Check the unpickled dict of ``watch_dataset.npy`` and return it as :class:`WatchData`.

    :raises WatchDataError: naming the file and the key that is missing or malformed.
    """
    if not isinstance(raw, Mapping):
        raise WatchDataError(f"{source}: expected a dict, got {type(raw).__name__}")
    missing = [k for k in ("X", "y", "subject", "side", "y_labels", "X_labels") if k not in raw]
    if missing:
        raise WatchDataError(f"{source}: lacks key(s) {missing}; has {sorted(raw)}")
    channels = tuple(str(c) for c in raw["X_labels"])
    if channels != CHANNELS:
        raise WatchDataError(f"{source}: X_labels must be {list(CHANNELS)}, got {list(channels)}")
    classes = tuple(str(c) for c in raw["y_labels"])
    xs = list(raw["X"])
    n = len(xs)
    columns = {}
    for key in ("y", "subject", "side"):
        col = np.asarray(raw[key])
        if col.shape != (n,):
            raise WatchDataError(f"{source}: {key} must have one entry per recording ({n}), got shape {col.shape}")
        if not np.all(np.isfinite(col.astype(float))) or not np.all(col == np.round(col)):
            raise WatchDataError(f"{source}: {key} must hold integers")
        columns[key] = col.astype(np.int64)
    if columns["y"].min(initial=0) < 0 or columns["y"].max(initial=0) >= len(classes):
        raise WatchDataError(f"{source}: y must lie in [0, {len(classes)}) (one per y_labels entry)")
    if not np.isin(columns["side"], list(ARMS.values())).all():
        raise WatchDataError(
            f"{source}: side must be 0 (left) or 1 (right), got {sorted(set(columns['side'].tolist()))}"
        )
    signals = []
    for i, x in enumerate(xs):
        arr = np.asarray(x)
        if arr.ndim != 2 or arr.shape[1] != len(CHANNELS) or arr.dtype.kind not in "fiu":
            raise WatchDataError(
                f"{source}: X[{i}] must be a numeric (n, {len(CHANNELS)}) array, got {arr.dtype} {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise WatchDataError(f"{source}: X[{i}] holds NaN or inf")
        signals.append(np.ascontiguousarray(arr, dtype=np.float32))
    return WatchData(tuple(signals), columns["y"], columns["subject"], columns["side"], classes, channels)


def converted_path(cache: str | os.PathLike[str] | None = None) -> Path:
    """``<cache>/watch/watch-v1.npz`` (cache: ``$MMIR_CACHE`` or ``~/.cache/mmir`` by default)."""
    return (Path(cache).expanduser() if cache else cache_dir()) / CONVERTED_NAME


def _write_converted(data: WatchData, path: Path) -> None:
    lengths = np.array([len(s) for s in data.signals], dtype=np.int64)
    # the ".npz" suffix: np.savez appends one to any other name
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(
            tmp,
            version=np.int64(CONVERTED_VERSION),
            signals=np.concatenate(data.signals),
            lengths=lengths,
            labels=data.labels,
            subjects=data.subjects,
            sides=data.sides,
            classes=np.array(data.classes, dtype=str),
            channels=np.array(data.channels, dtype=str),
            source_sha256=np.array(WATCH.member_sha256 or "", dtype=str),
        )


def _read_converted(path: Path) -> WatchData:
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != CONVERTED_VERSION:
                raise WatchDataError(
                    f"{path}: converted with version {int(z['version'])}, expected {CONVERTED_VERSION}"
                )
            lengths = z["lengths"]
            flat = z["signals"]
            if lengths.sum() != len(flat):
                raise WatchDataError(f"{path}: lengths sum to {lengths.sum()} but signals has {len(flat)} rows")
            signals = tuple(np.split(flat.astype(np.float32, copy=False), np.cumsum(lengths)[:-1]))
            raw = {
                "X": signals,
                "y": z["labels"],
                "subject": z["subjects"],
                "side": z["sides"],
                "y_labels": z["classes"].tolist(),
                "X_labels": z["channels"].tolist(),
            }
    except (KeyError, ValueError, OSError) as err:
        if isinstance(err, WatchDataError):
            raise
        raise WatchDataError(
            f"{path}: not a converted watch file ({type(err).__name__}: {err}); "
            f"delete it or run `mmir data fetch watch --force`"
        ) from err
    return validate_watch(raw, str(path))


def load_watch(
    cache: str | os.PathLike[str] | None = None, archive: str | os.PathLike[str] | None = None, force: bool = False
) -> WatchData:
    """The watch recordings, fetched, verified and converted on first use.

    Reads ``<cache>/watch/watch-v1.npz`` when it exists (no pickle involved). Otherwise the pinned
    ``.npy`` is fetched (``pip download --no-deps`` of the wheel, or the given ``archive``), its sha256
    checked, read with the restricted unpickler, validated and converted.

    :param cache: cache folder (default ``$MMIR_CACHE`` or ``~/.cache/mmir``).
    :param archive: an already downloaded ``seglearn-1.2.5`` wheel (offline use; verified all the same).
    :param force: fetch and convert again even when the cache holds the files.
    :raises WatchDataError: the data do not have the expected structure.
    """
    from features.safe_pickle import safe_load_npy

    cache_path = Path(cache).expanduser() if cache else None
    out = converted_path(cache_path)
    if out.is_file() and not force:
        return _read_converted(out)
    npy = fetch_registry_file(WATCH, cache_path, Path(archive) if archive else None, force=force)
    data = validate_watch(safe_load_npy(npy, encoding="latin1"), str(npy))
    _write_converted(data, out)
    return data


# ---------------------------------------------------------------------- windows and splits
def window_starts(length: int, window: int = WINDOW, hop: int | None = None) -> np.ndarray:
    """Start samples of the windows of a recording of ``length`` samples (hop ``window // 2``: 50% overlap)."""
    if window < 1:
        raise ValueError(f"window must be >= 1 sample, got {window}")
    hop = hop or max(1, window // 2)
    if length < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, length - window + 1, hop, dtype=np.int64)


def split_recordings(
    data: WatchData, source: str, target: str, test_subjects: Sequence[int] = TEST_SUBJECTS
) -> dict[str, np.ndarray]:
    """Recording indices of the ``source``, ``target`` (unlabelled) and ``test`` splits of a direction.

    ``source`` is the whole source arm, except when ``source == target`` (supervised upper bound):
    then it is the target arm without the test subjects.
    """
    for key, arm in (("source", source), ("target", target)):
        if arm not in ARMS:
            raise ValueError(f"{key} arm must be one of {sorted(ARMS)}, got {arm!r}")
    held_out = np.isin(data.subjects, list(test_subjects))
    if not held_out.any():
        raise ValueError(f"no recording belongs to the test subjects {list(test_subjects)}")
    on_target = data.sides == ARMS[target]
    splits = {
        "source": np.flatnonzero(data.sides == ARMS[source])
        if source != target
        else np.flatnonzero(on_target & ~held_out),
        "target": np.flatnonzero(on_target & ~held_out),
        "test": np.flatnonzero(on_target & held_out),
    }
    for name, idx in splits.items():
        if len(idx) == 0:
            raise ValueError(f"the {name} split of {source} -> {target} is empty")
    return splits


def channel_stats(data: WatchData, recordings: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over every sample of ``recordings`` (float64, shape ``[6]``)."""
    x = np.concatenate([data.signals[i] for i in recordings]).astype(np.float64)
    std = x.std(0)
    if (std <= 0).any():
        raise WatchDataError(
            f"channel(s) {[CHANNELS[c] for c in np.flatnonzero(std <= 0)]} are constant in the source data"
        )
    return x.mean(0), std


def _window_uid_base(data: WatchData, window: int) -> np.ndarray:
    """The uid of each recording's first window: windows are numbered over all recordings in order."""
    counts = np.array([len(window_starts(len(s), window)) for s in data.signals], dtype=np.int64)
    return np.concatenate([[0], np.cumsum(counts)[:-1]])


class WatchWindows(Dataset):
    """Standardised windows of some recordings; items are dicts as the co-training loop expects.

    An item: one ``[3, window]`` float32 tensor per modality, ``"label"`` (exercise), ``"uid"``
    (unique window id), ``"domain"`` (``role``), ``"recording"`` (index in the data set),
    ``"subject"`` and ``"start"`` (first sample).

    :param data: the recordings.
    :param recordings: indices of the recordings to cut into windows.
    :param mean, std: per-channel standardisation (``[6]``), e.g. :func:`channel_stats` of the source split.
    :param modalities: which of :data:`MODALITY_CHANNELS` an item holds.
    :param role: ``"source"`` or ``"target"`` (the ``domain`` of items; snapshots need it).
    :param window: samples per window (hop ``window // 2``).
    """

    def __init__(
        self,
        data: WatchData,
        recordings: Sequence[int],
        mean: np.ndarray,
        std: np.ndarray,
        modalities: Sequence[str] = ("acc", "gyro"),
        role: str = "source",
        window: int = WINDOW,
    ) -> None:
        unknown = [m for m in modalities if m not in MODALITY_CHANNELS]
        if unknown or not modalities:
            raise ValueError(f"watch modalities are {sorted(MODALITY_CHANNELS)}, got {list(modalities)}")
        if role not in ("source", "target"):
            raise ValueError(f"role must be 'source' or 'target', got {role!r}")
        self.modalities, self.role, self.window = tuple(modalities), role, int(window)
        base = _window_uid_base(data, self.window)
        xs, labels, uids, recs, subjects, starts = [], [], [], [], [], []
        mean32, std32 = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
        for r in recordings:
            sig = (data.signals[r] - mean32) / std32
            s = window_starts(len(sig), self.window)
            if len(s) == 0:
                continue
            idx = s[:, None] + np.arange(self.window)[None, :]
            xs.append(sig[idx].transpose(0, 2, 1))  # [n, 6, window]
            labels.append(np.full(len(s), data.labels[r]))
            uids.append(base[r] + np.arange(len(s)))
            recs.append(np.full(len(s), r))
            subjects.append(np.full(len(s), data.subjects[r]))
            starts.append(s)
        if not xs:
            raise ValueError(f"no recording of {list(recordings)} is at least {self.window} samples long")
        x = torch.from_numpy(np.ascontiguousarray(np.concatenate(xs), dtype=np.float32))
        self.x = {m: x[:, list(MODALITY_CHANNELS[m])].contiguous() for m in self.modalities}
        self.labels = np.concatenate(labels).astype(np.int64)
        self.uids = np.concatenate(uids).astype(np.int64)
        self.recordings = np.concatenate(recs).astype(np.int64)
        self.subjects = np.concatenate(subjects).astype(np.int64)
        self.starts = np.concatenate(starts).astype(np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} windows")
        item: dict[str, Any] = {m: self.x[m][index] for m in self.modalities}
        item.update(
            label=int(self.labels[index]),
            uid=int(self.uids[index]),
            domain=self.role,
            recording=int(self.recordings[index]),
            subject=int(self.subjects[index]),
            start=int(self.starts[index]),
        )
        return item

    def tensors(self) -> tuple[dict[str, Tensor], Tensor]:
        """All windows at once: modality -> ``[N, 3, window]`` and labels ``[N]`` (for reference models)."""
        return dict(self.x), torch.from_numpy(self.labels)


def watch_splits(
    data: WatchData,
    source: str,
    target: str,
    modalities: Sequence[str] = ("acc", "gyro"),
    window: int = WINDOW,
    test_subjects: Sequence[int] = TEST_SUBJECTS,
) -> dict[str, WatchWindows]:
    """``{"source", "target", "test"}`` window datasets of a direction, standardised with source statistics."""
    splits = split_recordings(data, source, target, test_subjects)
    mean, std = channel_stats(data, splits["source"])
    roles = {"source": "source", "target": "target", "test": "target"}
    return {name: WatchWindows(data, idx, mean, std, modalities, roles[name], window) for name, idx in splits.items()}


def summary_rows(data: WatchData, window: int = WINDOW) -> list[dict[str, Any]]:
    """Per arm and subject: recordings, windows, and windows per class (for ``mmir data fetch watch``)."""
    rows = []
    counts = np.array([len(window_starts(len(s), window)) for s in data.signals])
    for arm, side in ARMS.items():
        for subject in sorted(set(data.subjects.tolist())):
            mask = (data.sides == side) & (data.subjects == subject)
            per_class = [int(counts[mask & (data.labels == c)].sum()) for c in range(len(data.classes))]
            rows.append(
                {
                    "arm": arm,
                    "subject": int(subject),
                    "recordings": int(mask.sum()),
                    "windows": int(counts[mask].sum()),
                    "per_class": per_class,
                    "split": "test" if subject in TEST_SUBJECTS else "train",
                }
            )
    return rows
