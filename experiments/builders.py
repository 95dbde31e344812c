"""What a run's config names, built: the datasets of ``data.kind`` and the model of ``model.backbone``.

The co-training loop asks these two registries and never names a data set or a backbone itself.
Entries are ``"module:function"`` strings, imported on first use, so that a video run does not
import the sensor code and the other way round. Third-party code can add entries with
:func:`register_datasets` / :func:`register_model`.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from torch import nn

from experiments.config import ConfigError, RunConfig

DatasetsBuilder = Callable[[RunConfig], dict[str, Any]]
ModelBuilder = Callable[[RunConfig], nn.Module]

# data.kind -> builder of {"source", "target", "test"} datasets (see CoTrainer for the item layout)
DATASETS: dict[str, str | DatasetsBuilder] = {
    "epic": "features.data.epic:epic_datasets",
    "watch": "features.data.watch:watch_datasets",
}
# model.backbone -> builder of a modality-keyed model (TwoStream API: modalities, feature_dims, extract_features, classify)
MODELS: dict[str, str | ModelBuilder] = {
    "i3d": "features.two_stream:i3d_model",
    "temporal-conv": "features.sensor_encoders:sensor_model",
}


def register_datasets(kind: str, builder: str | DatasetsBuilder) -> None:
    """Make ``data.kind = kind`` build its datasets with ``builder``."""
    DATASETS[kind] = builder


def register_model(backbone: str, builder: str | ModelBuilder) -> None:
    """Make ``model.backbone = backbone`` build its model with ``builder``."""
    MODELS[backbone] = builder


def _resolve(table: dict[str, Any], key: str, what: str) -> Callable[[RunConfig], Any]:
    if key not in table:
        raise ConfigError(f"{what} {key!r} is not known; choose one of {sorted(table)}")
    entry = table[key]
    if isinstance(entry, str):
        module, _, name = entry.partition(":")
        entry = getattr(importlib.import_module(module), name)
        table[key] = entry
    return entry


def build_datasets(cfg: RunConfig) -> dict[str, Any]:
    """``{"source", "target", "test"}`` datasets of ``cfg.data.kind``."""
    return _resolve(DATASETS, cfg.data.kind, "data.kind")(cfg)


def build_model(cfg: RunConfig) -> nn.Module:
    """The model of ``cfg.model.backbone`` (the caller seeds the RNG)."""
    return _resolve(MODELS, cfg.model.backbone, "model.backbone")(cfg)
