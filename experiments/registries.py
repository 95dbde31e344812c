"""The tables of what a run config can name: datasets, models, objectives, refiners, step strategies, evaluation hooks.

Kept apart from :mod:`experiments.builders` so that :func:`experiments.config.validate` can check a
name against them without importing the builders (which import the config module, and torch).
Each table is a :class:`~features.registry.Registry`: entries are ``"module:function"`` strings,
imported on first use, or the functions themselves; a builder takes the
:class:`~experiments.config.RunConfig`. Third-party code adds entries with a table's ``register``
(or :func:`register_datasets` / :func:`register_model` and each package's ``register_*``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from features.registry import Registry, UnknownNameError

__all__ = [
    "DATASETS",
    "EVALUATION_HOOKS",
    "MODELS",
    "OBJECTIVES",
    "REFINERS",
    "STRATEGIES",
    "Registry",
    "UnknownNameError",
    "register_datasets",
    "register_model",
]

#: A builder takes the run config (typed loosely here: this module must not import the config).
Builder = Callable[..., Any]

# data.kind -> builder of {"source", "target", "test"} datasets (see CoTrainer for the item layout)
DATASETS: Registry[Builder] = Registry(
    "datasets builder",
    "data.kind",
    {
        "epic": "experiments.builders:epic_datasets",
        "watch": "experiments.builders:watch_datasets",
        "features": "experiments.builders:feature_datasets",
        "feature-benchmark": "experiments.builders:feature_benchmark_datasets",
    },
)
# model.backbone -> builder of a modality-keyed model (TwoStream API: modalities, feature_dims, extract_features, classify)
MODELS: Registry[Builder] = Registry(
    "model builder",
    "model.backbone",
    {
        "i3d": "experiments.builders:i3d_model",
        "temporal-conv": "experiments.builders:sensor_model",
        "adapter": "experiments.builders:adapter_model",
    },
)


def register_datasets(kind: str, builder: str | Builder, overwrite: bool = False) -> None:
    """Make ``data.kind = kind`` build its datasets with ``builder``; a taken kind needs ``overwrite=True``."""
    DATASETS.register(kind, builder, overwrite=overwrite)


def register_model(backbone: str, builder: str | Builder, overwrite: bool = False) -> None:
    """Make ``model.backbone = backbone`` build its model with ``builder``; a taken name needs ``overwrite=True``."""
    MODELS.register(backbone, builder, overwrite=overwrite)


# The loop's parts (docs/architecture.md, "Co-training as composable parts"); each package registers and builds its own (experiments.objectives,
# experiments.refiners, experiments.steps, experiments.evaluation), the config checks names here.
# [stage1.objectives] / [stage2.objectives] -> objective class, built with an ObjectiveContext; the order of
# registration is the order their terms join the graph (the built-ins in eq. 12's order): keep it
OBJECTIVES: Registry[Builder] = Registry(
    "objective",
    "objectives",
    {
        "classification": "experiments.objectives.classification:ClassificationObjective",
        "adversarial": "experiments.objectives.adversarial:AdversarialObjective",
        "correspondence": "experiments.objectives.correspondence:CorrespondenceObjective",
        "mmd": "experiments.objectives.mmd:MMDObjective",
        "relevance-critic": "experiments.objectives.relevance_critic:RelevanceCriticObjective",
    },
)
# refinement.policy -> refiner class, built with a RefinerContext
REFINERS: Registry[Builder] = Registry(
    "refiner",
    "refinement.policy",
    {
        "agent": "experiments.refiners.agent:AgentRefiner",
        "none": "experiments.refiners.controls:KeepAllRefiner",
        "random": "experiments.refiners.controls:RandomRefiner",
        "relevance": "experiments.refiners.controls:RelevanceRefiner",
        "ground-truth": "experiments.refiners.controls:GroundTruthRefiner",
    },
)
# stage2.strategy -> StepStrategy class, built with (config, model)
STRATEGIES: Registry[Builder] = Registry(
    "step strategy",
    "stage2.strategy",
    {"standard": "experiments.steps:StepStrategy", "mcd": "experiments.steps.mcd:MCDStrategy"},
)
# evaluation.hooks -> hook(model, datasets, cfg, device) -> model to test
EVALUATION_HOOKS: Registry[Builder] = Registry(
    "evaluation hook", "evaluation.hooks", {"adabn": "experiments.evaluation.adabn:adabn_hook"}
)
