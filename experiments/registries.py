"""The tables of what a run config can name: datasets, models, objectives, refiners, step strategies, evaluation hooks.

Kept apart from :mod:`experiments.builders` so that :func:`experiments.config.validate` can check a
name against them without importing the builders (which import the config module, and torch).
Entries are ``"module:function"`` strings, imported on first use, or the functions themselves; a
builder takes the :class:`~experiments.config.RunConfig`. Third-party code adds entries with
:func:`register_datasets` / :func:`register_model`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "DATASETS",
    "EVALUATION_HOOKS",
    "MODELS",
    "OBJECTIVES",
    "REFINERS",
    "STRATEGIES",
    "register_datasets",
    "register_entry",
    "register_model",
    "resolve_entry",
]

#: A builder takes the run config (typed loosely here: this module must not import the config).
Builder = Callable[..., Any]

# data.kind -> builder of {"source", "target", "test"} datasets (see CoTrainer for the item layout)
DATASETS: dict[str, str | Builder] = {
    "epic": "experiments.builders:epic_datasets",
    "watch": "experiments.builders:watch_datasets",
    "features": "experiments.builders:feature_datasets",
    "feature-benchmark": "experiments.builders:feature_benchmark_datasets",
}
# model.backbone -> builder of a modality-keyed model (TwoStream API: modalities, feature_dims, extract_features, classify)
MODELS: dict[str, str | Builder] = {
    "i3d": "experiments.builders:i3d_model",
    "temporal-conv": "experiments.builders:sensor_model",
    "adapter": "experiments.builders:adapter_model",
}


def register_datasets(kind: str, builder: str | Builder) -> None:
    """Make ``data.kind = kind`` build its datasets with ``builder``."""
    DATASETS[kind] = builder


def register_model(backbone: str, builder: str | Builder) -> None:
    """Make ``model.backbone = backbone`` build its model with ``builder``."""
    MODELS[backbone] = builder


# The loop's parts (DESIGN.md 7); each package registers and builds its own (experiments.objectives,
# experiments.refiners, experiments.steps, experiments.evaluation), the config checks names here.
# [stage2.objectives] / built-in switches -> objective class, built with an ObjectiveContext
OBJECTIVES: dict[str, str | Builder] = {
    "classification": "experiments.objectives.classification:ClassificationObjective",
    "adversarial": "experiments.objectives.adversarial:AdversarialObjective",
    "mmd": "experiments.objectives.mmd:MMDObjective",
    "correspondence": "experiments.objectives.correspondence:CorrespondenceObjective",
    "relevance-critic": "experiments.objectives.relevance_critic:RelevanceCriticObjective",
}
# refinement.policy -> refiner class, built with a RefinerContext
REFINERS: dict[str, str | Builder] = {
    "agent": "experiments.refiners.agent:AgentRefiner",
    "none": "experiments.refiners.controls:KeepAllRefiner",
    "random": "experiments.refiners.controls:RandomRefiner",
    "relevance": "experiments.refiners.controls:RelevanceRefiner",
    "ground-truth": "experiments.refiners.controls:GroundTruthRefiner",
}
# stage2.strategy -> StepStrategy class, built with (config, model)
STRATEGIES: dict[str, str | Builder] = {
    "standard": "experiments.steps:StepStrategy",
    "mcd": "experiments.steps.mcd:MCDStrategy",
}
# evaluation.hooks (and evaluation.adabn) -> hook(model, datasets, cfg, device) -> model to test
EVALUATION_HOOKS: dict[str, str | Builder] = {"adabn": "experiments.methods.adabn:adabn_hook"}


def register_entry(
    table: dict[str, str | Builder], name: str, entry: str | Builder, what: str, overwrite: bool = False
) -> None:
    """``table[name] = entry``; registering a taken name needs ``overwrite=True`` (a plugin imported twice says so)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} name must be a non-empty string, got {name!r}")
    if name in table and not overwrite:
        raise ValueError(f"a {what} named {name!r} is already registered (pass overwrite=True to replace it)")
    table[name] = entry


def resolve_entry(table: dict[str, str | Builder], name: str, key: str) -> Builder:
    """``table[name]``, importing a ``"module:attribute"`` entry on first use; a KeyError names ``key`` and the choices."""
    import importlib

    if name not in table:
        raise KeyError(f"{key} {name!r} is not known; choose one of {', '.join(sorted(table))}")
    entry = table[name]
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
        table[name] = entry
    return entry
