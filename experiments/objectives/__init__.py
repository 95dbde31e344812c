"""Domain-adaptation methods as loss modules composed by the one co-training loop.

An :class:`Objective` is an ``nn.Module`` that returns its named loss terms from the step's
:class:`StepOutputs` (features of both halves, source logits and labels) and the refiners' keep
masks; the loop sums ``weight * term`` over the configured objectives, in order, and backpropagates
once. Parameters an objective owns (a discriminator, a correspondence head) live in the
:class:`~experiments.cotrain_module.CoTrainModule`, so optimizers, DistributedDataParallel and
checkpoints see them without any list kept by hand.

Built in, one module each with its maths: ``classification`` (eq. 1, always on), ``adversarial``
(eq. 8 on the kept rows), ``correspondence`` (MM-SADA's self-supervised RGB/flow correspondence),
``mmd`` (DAN's MK-MMD), ``relevance-critic``. A built-in is registered exactly as a plug-in is: a
module with an :class:`Objective` subclass, a registry entry and a TOML overlay
``[stage2] objectives = {NAME = WEIGHT}`` (docs/add-your-own-method.md). Their terms join the graph
in registration order (the built-ins in eq. 12's order, then plug-ins).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from experiments.registries import OBJECTIVES

__all__ = ["OBJECTIVES", "Objective", "ObjectiveContext", "StepOutputs", "build_objective", "register_objective"]


@dataclass
class StepOutputs:
    """What the step's forward computed, for the objectives.

    ``target_features`` is None in stage 1 (source only). ``keep`` maps ``(modality, domain)`` to the
    refiners' bool masks; a pair without a refiner keeps every row.
    """

    modalities: tuple[str, ...]
    source_features: dict[str, Tensor]
    target_features: dict[str, Tensor] | None
    source_logits: Tensor
    labels: Tensor
    keep: dict[tuple[str, str], Tensor] = field(default_factory=dict)
    progress: float = 0.0  # stage-2 progress in [0, 1] (GRL ramps)
    classify: Callable[[dict[str, Tensor]], Any] | None = None  # the model's heads (for target_logits)
    _target_logits: Tensor | None = None

    def target_logits(self) -> Tensor:
        """Fused logits of the target half, computed on first use (objectives that need them: entropy, MCC, ...)."""
        if self.target_features is None or self.classify is None:
            raise ValueError("target logits need the target half (stage 2)")
        if self._target_logits is None:
            self._target_logits = self.classify(self.target_features).logits
        return self._target_logits

    def kept(self, modality: str, domain: str) -> Tensor:
        feats = (self.source_features if domain == "source" else self.target_features)[modality]  # type: ignore[index]
        mask = self.keep.get((modality, domain))
        if mask is None:
            return torch.ones(feats.shape[0], dtype=torch.bool, device=feats.device)
        return mask


class Objective(nn.Module):
    """A loss module: ``forward(outputs) -> {term name: scalar tensor}``.

    ``stages`` says in which stages it contributes (stage 1 is source-only: ``target_features`` is
    None there).
    """

    stages: tuple[int, ...] = (2,)

    def forward(self, outputs: StepOutputs) -> dict[str, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class ObjectiveContext:
    """What an objective factory may use: the model's modalities and feature widths, the run's config
    and the modules shared with the rest of the loop (the per-modality discriminators)."""

    modalities: tuple[str, ...]
    feature_dims: Mapping[str, int]
    config: Any  # RunConfig
    discriminators: nn.ModuleDict


ObjectiveFactory = Callable[[ObjectiveContext], Objective]


def register_objective(name: str, factory: str | ObjectiveFactory, overwrite: bool = False) -> None:
    """Make ``[stage2.objectives] name = weight`` add ``factory(context)``'s terms to the loss."""
    OBJECTIVES.register(name, factory, overwrite=overwrite)


def resolve_objective(name: str) -> ObjectiveFactory:
    return OBJECTIVES.resolve(name, "objective")


def build_objective(name: str, context: ObjectiveContext) -> Objective:
    return resolve_objective(name)(context)
