"""What a run config names, built: the datasets of ``data.kind`` and the model of ``model.backbone``.

The co-training loop asks these two registries (:mod:`experiments.registries`, re-exported here)
and never names a data set or a backbone itself. The builders of the shipped kinds are below: they
are the only code that reads a :class:`~experiments.config.RunConfig` for the data and model layer
(:mod:`features` takes plain arguments and knows no config), and they report a value that does not
fit as a :class:`~experiments.config.ConfigError` naming its key. Each imports its ``features``
module on first use, so that a video run does not import the sensor code and the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from experiments.config import ConfigError, RunConfig, check_data_root
from experiments.registries import DATASETS, MODELS, Registry, register_datasets, register_model

if TYPE_CHECKING:  # annotations only: the builders import these on first use
    from features.data.epic import EpicClips
    from features.data.watch import WatchWindows
    from features.two_stream import TwoStream

__all__ = [
    "DATASETS",
    "MODELS",
    "build_datasets",
    "build_model",
    "adapter_model",
    "epic_datasets",
    "feature_benchmark_datasets",
    "feature_datasets",
    "i3d_model",
    "register_datasets",
    "register_model",
    "sensor_model",
    "watch_datasets",
]

DatasetsBuilder = Callable[[RunConfig], dict[str, Any]]
ModelBuilder = Callable[[RunConfig], nn.Module]


def _resolve(table: Registry[Any], key: str, what: str) -> Callable[[RunConfig], Any]:
    try:
        return table.resolve(key, what)
    except KeyError as err:
        raise ConfigError(str(err.args[0])) from None


def build_datasets(cfg: RunConfig) -> dict[str, Any]:
    """``{"source", "target", "test"}`` datasets of ``cfg.data.kind``."""
    return _resolve(DATASETS, cfg.data.kind, "data.kind")(cfg)


def build_model(cfg: RunConfig) -> nn.Module:
    """The model of ``cfg.model.backbone``: random init seeded by ``cfg.seed`` (the global RNG untouched), or checkpoints."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return _resolve(MODELS, cfg.model.backbone, "model.backbone")(cfg)


# ---------------------------------------------------------------------- data.kind
def epic_datasets(cfg: RunConfig) -> dict[str, EpicClips]:
    """Source-train, target-train and target-test clips of a run config with ``data.kind = "epic"``.

    ``data.decode = "gpu"`` makes the three sets GPU-decoded (the loop and the evaluation finish
    their batches with ``device_transform``).
    """
    from features.data.epic import epic_splits

    root = check_data_root(cfg)
    d = cfg.data
    empty = [f"{m}/" for m in cfg.model.modalities if (root / m).is_dir() and not any((root / m).iterdir())]
    if empty:
        raise ConfigError(
            f"data.root {root}: {' and '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty "
            "(expected PXX/PXX_YY/ frame folders, EPIC layout)"
        )
    try:
        return epic_splits(
            root,
            d.source,
            d.target,
            splits=d.annotations or None,
            modalities=cfg.model.modalities,
            size=d.size,
            num_frames=d.frames,
            seed=cfg.seed,
            synchronised=d.synchronised,
            test_clips=cfg.evaluation.windows,
            decode=d.decode,
        )  # type: ignore[arg-type]
    except (ValueError, OSError) as err:  # no split file for a domain, an unreadable or malformed one
        where = f"data.annotations {d.annotations}" if d.annotations else "the MM-SADA splits (data.annotations empty)"
        raise ConfigError(f"data.source {d.source!r} / data.target {d.target!r} with {where}: {err}") from None


def watch_datasets(cfg: RunConfig) -> dict[str, WatchWindows]:
    """The datasets of a run config with ``data.kind = "watch"``.

    Uses ``data.source``/``data.target`` (arm names ``"left"``/``"right"``), ``data.frames`` (samples
    per window; 100 = 2 s) and ``model.modalities`` (``"acc"``, ``"gyro"``). ``data.root``, when set,
    is the cache folder holding ``watch/watch-v1.npz`` (``mmir data fetch watch --cache DIR``); empty
    means the user cache. ``data.size``, ``data.annotations`` and ``data.synchronised`` do not apply
    (both modalities always share a window).
    """
    from features.data.watch import ARMS, CLASSES, MODALITY_CHANNELS, load_watch, watch_splits

    d = cfg.data
    # checked before load_watch, which may download: a config mistake costs no fetch
    for key, arm in (("data.source", d.source), ("data.target", d.target)):
        if arm not in ARMS:
            raise ConfigError(f"{key} must be one of {sorted(ARMS)} for data.kind = 'watch', got {arm!r}")
    unknown = [m for m in cfg.model.modalities if m not in MODALITY_CHANNELS]
    if unknown:
        raise ConfigError(
            f"model.modalities {unknown} are not watch modalities; choose from {sorted(MODALITY_CHANNELS)}"
        )
    if cfg.model.num_classes != len(CLASSES):
        raise ConfigError(
            f"model.num_classes must be {len(CLASSES)} for the watch data ({', '.join(CLASSES)}), got {cfg.model.num_classes}"
        )
    data = load_watch(d.root or None)
    return watch_splits(data, d.source, d.target, cfg.model.modalities, d.frames)


# ---------------------------------------------------------------------- model.backbone
def i3d_model(cfg: RunConfig) -> TwoStream:
    """The model of a run config with ``model.backbone = "i3d"``: RGB/flow I3Ds, random or ``model.checkpoints``."""
    from features.two_stream import TwoStream

    m = cfg.model
    return TwoStream.i3d(
        m.num_classes,
        m.modalities,
        width=m.width,
        checkpoints=m.checkpoints or None,
        dropout=m.dropout,
        fusion=m.fusion,
        pool=m.pool,
    )


def sensor_model(cfg: RunConfig) -> TwoStream:
    """One temporal-conv encoder per ``model.modalities`` (width ``model.width``) in a two-stream model.

    ``model.checkpoints`` may map a modality to a file holding an encoder ``state_dict``
    (``torch.save(encoder.state_dict(), path)``), loaded with ``strict=True``; the error of a file
    that is missing or does not fit names its key.
    """
    from features.sensor_encoders import load_encoder_state, sensor_two_stream

    m = cfg.model
    model = sensor_two_stream(m.modalities, m.num_classes, width=m.width, dropout=m.dropout, fusion=m.fusion)
    for name in m.modalities:
        path = (m.checkpoints or {}).get(name)
        if path:
            load_encoder_state(model.backbones[name], path, what=f"model.checkpoints.{name}")
    return model


# ---------------------------------------------------------------------- feature-level co-training
def feature_datasets(cfg: RunConfig) -> dict[str, Any]:
    """The datasets of ``data.kind = "features"``: pre-extracted features from HDF5 snapshots.

    ``data.root`` is the training snapshot (its ``source`` and ``target`` domains: ``mmir extract
    --split train`` or a co-training snapshot) and ``data.test_features`` a second snapshot whose
    ``target`` domain, with labels, is the test split (``mmir extract --split test``).
    ``model.modalities`` must be modalities of both files.
    """
    from features.data.feature_bank import FeatureFileError, feature_datasets_from_snapshots

    d = cfg.data
    if not d.root:
        raise ConfigError("data.root is empty: set it to the training snapshot (.h5) for data.kind = 'features'")
    if not d.test_features:
        raise ConfigError(
            "data.test_features is empty: set it to a snapshot whose target domain is the test split "
            "(e.g. mmir extract ... --split test) for data.kind = 'features'"
        )
    try:
        datasets = feature_datasets_from_snapshots(d.root, d.test_features, cfg.model.modalities)
    except FeatureFileError as err:
        raise ConfigError(f"{'data.root' if err.role == 'train' else 'data.test_features'} {err}") from None
    for role, key, path in (
        ("source", "data.root", d.root),
        ("target", "data.root", d.root),
        ("test", "data.test_features", d.test_features),
    ):
        _check_feature_bank(
            datasets[role], f"{key} {path}", "target" if role == "test" else role, cfg.model.num_classes
        )
    return datasets


def _check_feature_bank(bank: Any, where: str, domain: str, num_classes: int) -> None:
    """A loaded domain's labels fit ``model.num_classes`` and every feature row is finite (all rows, in blocks).

    Opening a snapshot checks NaN/inf on a sample of rows only when a matrix is over 256 MiB; one
    non-finite row would make every loss of a batch holding it NaN, so every row is checked here.
    """
    from features.snapshot import nonfinite_rows

    if len(bank.labels) and int(bank.labels.max()) >= num_classes:
        top = int(bank.labels.max())
        raise ConfigError(
            f"{where}: /{domain}/label goes up to {top}, but model.num_classes = {num_classes}; "
            f"set model.num_classes to at least {top + 1}"
        )
    for modality, x in bank.features.items():
        bad = nonfinite_rows(lambda rows, x=x: x[rows].numpy(), x.shape[0], x.shape[1] * x.element_size())
        if bad.size:
            raise ConfigError(
                f"{where}: /{domain}/features/{modality} has {bad.size} rows with NaN or inf values (e.g. rows "
                f"{bad[:5].tolist()}), which would make the loss NaN; fix or drop them before training"
            )


def negative_transfer_params(cfg: RunConfig) -> Any:
    """``cfg.feature_benchmark`` as the generator's parameters (the same fields)."""
    from dataclasses import asdict

    from features.data.negative_transfer import NegativeTransferParams

    try:
        return NegativeTransferParams(**asdict(cfg.feature_benchmark))
    except ValueError as err:
        raise ConfigError(f"feature_benchmark: {err}") from None


def feature_benchmark_datasets(cfg: RunConfig) -> dict[str, Any]:
    """The datasets of ``data.kind = "feature-benchmark"``: the generated negative-transfer benchmark.

    A pure function of ``[feature_benchmark]``, ``model.modalities`` and ``seed``
    (:mod:`features.data.negative_transfer`); ``model.num_classes`` must be
    ``feature_benchmark.classes + feature_benchmark.outlier_classes`` (the source's label space).
    """
    from features.data.negative_transfer import negative_transfer_datasets

    params = negative_transfer_params(cfg)
    if cfg.model.num_classes != params.num_classes:
        raise ConfigError(
            f"model.num_classes must be feature_benchmark.classes + outlier_classes = {params.num_classes} "
            f"for data.kind = 'feature-benchmark', got {cfg.model.num_classes}"
        )
    return negative_transfer_datasets(params, cfg.seed, cfg.model.modalities)


def _feature_widths(cfg: RunConfig) -> dict[str, int]:
    """Input width per modality of the adapters: the benchmark's ``feature_dim`` or the training snapshot's."""
    if cfg.data.kind == "feature-benchmark":
        return {m: cfg.feature_benchmark.feature_dim for m in cfg.model.modalities}
    if cfg.data.kind == "features":
        from features.snapshot import Snapshot, SnapshotError

        if not cfg.data.root or not Path(cfg.data.root).expanduser().is_file():
            what = (
                "is a folder; a snapshot file (.h5) is expected"
                if Path(cfg.data.root).expanduser().is_dir()
                else "no such snapshot file"
            )
            raise ConfigError(
                f"data.root {cfg.data.root!r}: {what} (model.backbone = 'adapter' reads its feature width)"
            )
        try:
            with Snapshot(Path(cfg.data.root).expanduser(), validate=False) as snap:
                return {m: snap.feature_dim for m in cfg.model.modalities}
        except SnapshotError as err:
            raise ConfigError(f"data.root: {err}") from None
    raise ConfigError(
        f"model.backbone = 'adapter' trains on stored features: data.kind must be 'features' or 'feature-benchmark', "
        f"got {cfg.data.kind!r}"
    )


def adapter_model(cfg: RunConfig) -> TwoStream:
    """``model.backbone = "adapter"``: a Linear-BatchNorm-ReLU-Linear adapter per modality over stored features.

    Hidden and output width ``round(64 * model.width)``; inputs as wide as the data's features.
    """
    from features.adapters import adapter_two_stream

    m = cfg.model
    width = max(4, round(64 * m.width))
    return adapter_two_stream(
        _feature_widths(cfg),
        m.num_classes,
        hidden_dim=width,
        feature_dim=width,
        dropout=m.dropout,
        fusion=m.fusion,
        modalities=m.modalities,
    )
