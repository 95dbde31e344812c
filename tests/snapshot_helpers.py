"""Small snapshots and the broken variants the snapshot, source and CLI tests share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from features.snapshot import SnapshotWriter
from mmir_env.discriminator import seeded_discriminator

D = 32
K = 4
MODALITIES = ("rgb", "flow")
ROWS = {"source": 60, "target": 50}


def make_data(seed: int = 0, rows: dict[str, int] | None = None, d: int = D) -> dict[str, dict[str, Any]]:
    """Random features, labels (target includes -1), uids and negatives per domain."""
    rng = np.random.default_rng(seed)
    data: dict[str, dict[str, Any]] = {}
    for domain, n in (rows or ROWS).items():
        low = -1 if domain == "target" else 0
        data[domain] = {
            "features": {m: rng.standard_normal((n, d)).astype(np.float32) for m in MODALITIES},
            "label": rng.integers(low, K, size=n),
            "uid": np.array([f"{domain}-{i:05d}" for i in range(n)]),
            "is_negative": rng.random(n) < 0.25,
        }
    return data


def write_snapshot(
    path: Path,
    data: dict[str, dict[str, Any]],
    dtype: str = "float32",
    batch: int = 16,
    known_rows: bool = False,
    discriminator_seed: int | None = 0,
) -> Path:
    """Write ``data`` in batches of ``batch`` rows, with a seeded discriminator per modality."""
    d = next(iter(data["source"]["features"].values())).shape[1]
    num_rows = {dom: len(v["label"]) for dom, v in data.items()} if known_rows else None
    with SnapshotWriter(
        path,
        feature_dim=d,
        num_classes=K,
        modalities=MODALITIES,
        dtype=dtype,
        num_rows=num_rows,
        step=7,
        stage=2,
        config={"test": True},
    ) as writer:
        for domain, v in data.items():
            n = len(v["label"])
            for s in range(0, n, batch):
                sl = slice(s, s + batch)
                writer.append(
                    domain,
                    {m: v["features"][m][sl] for m in MODALITIES},
                    label=v["label"][sl],
                    uid=v["uid"][sl],
                    is_negative=v["is_negative"][sl],
                )
        if discriminator_seed is not None:
            for i, m in enumerate(MODALITIES):
                writer.save_discriminator(m, seeded_discriminator(d, discriminator_seed + i))
    return path


def small_snapshot(path: Path, **kw: Any) -> Path:
    return write_snapshot(path, make_data(), **kw)


def _set_attr(name: str, value: Any) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        f.attrs[name] = value

    return edit


def _replace(name: str, make: Callable[[np.ndarray], np.ndarray]) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        data = make(f[name][...])
        del f[name]
        f.create_dataset(name, data=data)

    return edit


def _nan_rows(f: h5py.File) -> None:
    f["/target/features/flow"][3:5] = np.nan


def _truncate(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)


# Broken variants: name -> (how to break a valid file, words the error message must contain).
BREAKAGES: dict[str, tuple[Callable[[h5py.File], None], tuple[str, ...]]] = {
    "unknown_schema_version": (
        _set_attr("schema_version", 99),
        ("unknown schema_version 99", "reads schema_version 1"),
    ),
    "missing_dataset": (lambda f: f.__delitem__("/target/features/flow"), ("missing dataset /target/features/flow",)),
    "mismatched_rows": (
        _replace("/source/features/flow", lambda a: a[:-3]),
        ("row count mismatch", "/source/features/flow", "57 rows, expected 60"),
    ),
    "wrong_feature_dim": (
        _replace("/source/features/rgb", lambda a: a[:, :-2]),
        ("wrong feature_dim", "/source/features/rgb", f"expected (60, {D})"),
    ),
    "nan_rows": (_nan_rows, ("/target/features/flow", "2 rows with NaN or inf", "rows [3, 4]")),
    "labels_out_of_range": (
        _replace("/source/label", lambda a: np.where(np.arange(a.size) == 2, K + 5, a)),
        ("/source/label", "out of range [0, 4)", "rows [2]"),
    ),
}


def broken_snapshot(path: Path, kind: str) -> tuple[Path, tuple[str, ...]]:
    """A snapshot at ``path`` broken in the way ``kind`` names, and the words its error must contain."""
    small_snapshot(path)
    if kind == "not_hdf5":
        path.write_text("this is a CSV file, not HDF5\n1,2,3\n")
        return path, ("not an HDF5 file",)
    if kind == "truncated":
        _truncate(path)
        return path, ("truncated file",)
    edit, words = BREAKAGES[kind]
    with h5py.File(path, "r+") as f:
        edit(f)
    return path, words


BROKEN_KINDS: tuple[str, ...] = ("not_hdf5", "truncated", *BREAKAGES)
