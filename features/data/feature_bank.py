"""Pre-extracted features as co-training datasets: in memory, per modality, with planted ground truth.

:class:`FeatureBank` serves rows of per-modality feature arrays in the co-training loop's item
layout, ``{modality: float32 [d] tensor, "label": int, "uid": int, "domain": str, "is_negative": bool}``
(``is_negative`` only when the data carries planted ground truth). Target training rows may have
label ``-1`` (unknown to the source classes, or simply unlabelled): the loop never puts target
labels into a loss, and evaluation skips ``-1`` rows.

:func:`feature_datasets_from_snapshots` builds the three datasets of a run from HDF5 snapshots
(:mod:`features.snapshot`, written by ``mmir extract`` or by co-training): the training snapshot's
``source`` and ``target`` domains, and a second snapshot's ``target`` domain as the test split, e.g.
``mmir extract ... --split train --out train.h5`` and ``... --split test --out test.h5``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from features.domains import DOMAINS

__all__ = ["FeatureBank", "FeatureFileError", "feature_datasets_from_snapshots"]


class FeatureFileError(ValueError):
    """A feature file that cannot serve its role; the one-line message names the file.

    :ivar path: the file.
    :ivar role: ``"train"`` (the training snapshot) or ``"test"`` (the test split's snapshot).
    """

    def __init__(self, path: str | os.PathLike[str], role: str, problem: str) -> None:
        self.path, self.role = str(path), role
        super().__init__(f"{path}: {problem}")


class FeatureBank(Dataset):
    """Rows of in-memory feature arrays of one domain (see the module docstring for the item layout).

    :param features: modality -> ``[N, d_k]`` array (any float dtype; served as float32).
    :param labels: ``[N]`` int labels (``-1`` allowed: unknown class or unlabelled).
    :param domain: ``"source"`` or ``"target"`` (the item's ``domain``).
    :param is_negative: optional ``[N]`` bool planted ground truth.
    :param uids: optional ``[N]`` int row identifiers (default ``0..N-1``); evaluation groups rows by uid.
    """

    def __init__(
        self, features: Mapping[str, Any], labels: Any, domain: str, is_negative: Any = None, uids: Any = None
    ) -> None:
        if domain not in DOMAINS:
            raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
        if not features:
            raise ValueError("features must map at least one modality to an array")
        self.features = {m: torch.as_tensor(np.asarray(x, dtype=np.float32)) for m, x in features.items()}
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        n = len(self.labels)
        for m, x in self.features.items():
            if x.dim() != 2 or x.shape[0] != n:
                raise ValueError(f"features[{m!r}] must be [N={n}, d], got {tuple(x.shape)}")
        self.is_negative = None if is_negative is None else np.asarray(is_negative, dtype=bool).reshape(-1)
        if self.is_negative is not None and len(self.is_negative) != n:
            raise ValueError(f"is_negative has {len(self.is_negative)} rows, expected {n}")
        self.uids = np.arange(n, dtype=np.int64) if uids is None else np.asarray(uids, dtype=np.int64).reshape(-1)
        if len(self.uids) != n:
            raise ValueError(f"uids has {len(self.uids)} rows, expected {n}")
        self.domain = domain
        self.modalities: tuple[str, ...] = tuple(self.features)
        # python scalars once: items are fetched one by one, thousands of times per run
        self._meta = list(
            zip(
                self.labels.tolist(),
                self.uids.tolist(),
                [None] * n if self.is_negative is None else self.is_negative.tolist(),
            )
        )

    @property
    def feature_dims(self) -> dict[str, int]:
        return {m: int(x.shape[1]) for m, x in self.features.items()}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {m: x[i] for m, x in self.features.items()}
        label, uid, negative = self._meta[i]
        item["label"], item["uid"], item["domain"] = label, uid, self.domain
        if negative is not None:
            item["is_negative"] = negative
        return item


def _bank(snapshot: Any, domain: str, modalities: Sequence[str]) -> FeatureBank:
    n = snapshot.num_rows(domain)
    labels = snapshot.labels(domain)
    if labels is None:
        labels = np.full(n, -1, dtype=np.int64)
    return FeatureBank(
        {m: snapshot.features(domain, m) for m in modalities}, labels, domain, snapshot.is_negative(domain)
    )


def feature_datasets_from_snapshots(
    train_path: str | os.PathLike[str], test_path: str | os.PathLike[str], modalities: Sequence[str] | None = None
) -> dict[str, FeatureBank]:
    """``{"source", "target", "test"}`` feature banks: ``train_path``'s two domains and ``test_path``'s target domain.

    :param modalities: the modalities to serve (default: every modality of the training snapshot).
    :raises FeatureFileError: (a ValueError) one line naming the file: a missing or unreadable
        snapshot, a test snapshot without labelled target rows, modalities or feature widths that
        the two files do not share.
    """
    from features.snapshot import Snapshot, SnapshotError

    if not str(test_path):
        raise FeatureFileError(
            "(none)", "test", "no test split: name a second snapshot whose target domain is the test split"
        )
    train_path, test_path = Path(train_path).expanduser(), Path(test_path).expanduser()
    snaps = {}
    for role, path in (("train", train_path), ("test", test_path)):
        if not path.is_file():
            raise FeatureFileError(
                path,
                role,
                ("is a folder; a snapshot file (.h5) is expected" if path.is_dir() else "no such snapshot file")
                + (" (the test split is the target domain of a second snapshot)" if role == "test" else ""),
            )
        try:
            snaps[role] = Snapshot(path)
        except SnapshotError as err:
            raise FeatureFileError(path, role, "; ".join(err.problems)) from None
    try:
        return _banks(snaps["train"], snaps["test"], modalities)
    finally:
        for snap in snaps.values():
            snap.close()


def _banks(train: Any, test: Any, modalities: Sequence[str] | None) -> dict[str, FeatureBank]:
    train_path, test_path = train.path, test.path
    snaps = {"train": train, "test": test}
    names = list(modalities) if modalities is not None else list(train.modalities)
    for role, snap in snaps.items():
        missing = [m for m in names if m not in snap.modalities]
        if missing:
            raise FeatureFileError(
                snap.path, role, f"no features of modalities {missing}; it holds {list(snap.modalities)}"
            )
    if train.feature_dim != test.feature_dim:
        raise FeatureFileError(
            test_path,
            "test",
            f"features of width {test.feature_dim}, but the training snapshot {train_path} has {train.feature_dim}",
        )
    for domain in DOMAINS:
        if train.num_rows(domain) == 0:
            raise FeatureFileError(train_path, "train", f"no {domain} rows to train on")
    source_labels = train.labels("source")
    if source_labels is None or (source_labels < 0).any():
        raise FeatureFileError(train_path, "train", "source rows without labels: the source domain must be labelled")
    test_labels = test.labels("target")
    if test.num_rows("target") == 0 or test_labels is None or not (test_labels >= 0).any():
        raise FeatureFileError(
            test_path,
            "test",
            "no labelled target rows, so no test split (write it with target labels, e.g. mmir extract --split test)",
        )
    return {
        "source": _bank(train, "source", names),
        "target": _bank(train, "target", names),
        "test": _bank(test, "target", names),
    }
