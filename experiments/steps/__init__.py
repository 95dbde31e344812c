"""How one stage-2 batch trains: a step strategy chosen by name (``stage2.strategy``).

``standard`` (the default) runs the :class:`~experiments.cotrain_module.CoTrainModule` forward with
the refiners, one backward and one step of every optimizer; methods whose step differs are their own
strategy (``mcd``: three phases with two optimizers, Saito et al. 2018). A strategy owns any extra
modules it needs (added to the CoTrainModule, so optimizers, DDP and checkpoints see them) and the
optimizer parameter groups of stage 2.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from experiments.refiners import RefinementResult
from experiments.registries import STRATEGIES

__all__ = [
    "STRATEGIES",
    "StepBatch",
    "StepLog",
    "StepStrategy",
    "build_strategy",
    "register_strategy",
    "resolve_strategy",
]


@dataclass
class StepBatch:
    """One step's data on the device: modality -> clips per half, source labels, planted ground truth (or None)."""

    source: dict[str, Tensor]
    labels: Tensor
    target: dict[str, Tensor] | None = None
    source_negative: Tensor | None = None
    target_negative: Tensor | None = None
    progress: float = 0.0  # position in the stage, [0, 1)
    # the raw labels of both halves, for the refinement statistics of reports only: never passed to a loss
    stats_labels: dict[str, Tensor | None] = field(default_factory=dict)


@dataclass
class StepLog:
    """Losses and refinement results of one step (floats for logs and progress)."""

    terms: dict[str, float]
    refinement: dict[str, RefinementResult] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        out = {"loss": self.terms["loss"], "cls": self.terms.get("cls", 0.0)}
        for key in ("adv", "dqn", "corr"):  # always logged: reports plot them for every method
            out[key] = self.terms.get(key, 0.0)
        out.update({k: v for k, v in self.terms.items() if k not in out and v})
        for key, r in self.refinement.items():
            out[f"reward/{key}"] = r.mean_reward
            out[f"removed/{key}"] = r.removed
            out[f"removal_rate/{key}"] = r.removed / max(1, r.keep.numel())
            out[f"negatives_removed/{key}"] = r.negatives_removed
            out[f"negatives_present/{key}"] = r.negatives_present
            for name, value in r.stats.items():
                out[f"{name}/{key}"] = value
        return out


@dataclass
class StepContext:
    """What a strategy's step may use: the (possibly DDP-wrapped) forward, the optimizers, the refiners."""

    forward: Callable[
        ..., Any
    ]  # the CoTrainModule, or its DistributedDataParallel wrapper: forward(batch, stage, phase)
    optimizers: Mapping[str, torch.optim.Optimizer]
    refiners: Mapping[tuple[str, str], Any]
    autocast: Callable[[], AbstractContextManager[Any]]


class StepStrategy:
    """How stage 2 trains: the standard step, or a subclass whose step differs (``experiments/steps/mcd.py``).

    The standard strategy adds nothing: :meth:`experiments.cotrain.CoTrainer.training_step` runs the
    standard step. A subclass with ``replaces_step = True`` trains stage 2 with its own :meth:`step`,
    whose forward work runs inside the (DDP-wrapped) module through named phases
    (``ctx.forward(batch, 2, phase=NAME)`` -> :meth:`forward_phase`).
    """

    replaces_step = False  # True: :meth:`step` trains stage 2 instead of the standard step
    uses_objectives = True  # False: the strategy trains its own losses; stage2.objectives must be empty

    def __init__(self, config: Any, model: nn.Module) -> None:
        self.config = config

    def modules(self) -> dict[str, nn.Module]:
        """Extra trainable modules, added to ``CoTrainModule.extras`` (built under the caller's seed)."""
        return {}

    def param_groups(self, module: nn.Module) -> dict[str, list[nn.Parameter]]:
        """Optimizer name -> parameters, for stage 2."""
        return {"main": module.trainable_parameters()}

    def step(self, ctx: StepContext, batch: StepBatch) -> StepLog:
        """A stage-2 step of a strategy with ``replaces_step = True``."""
        raise NotImplementedError(f"{type(self).__name__} trains with the standard step")

    def forward_phase(self, phase: str, module: nn.Module, batch: StepBatch) -> Tensor:
        """The forward work of one phase of :meth:`step`, inside the module's forward."""
        raise NotImplementedError(f"{type(self).__name__} has no phase {phase!r}")


StrategyFactory = Callable[[Any, nn.Module], StepStrategy]


def register_strategy(name: str, factory: str | StrategyFactory, overwrite: bool = False) -> None:
    """Make ``stage2.strategy = name`` train stage 2 with ``factory(config, model)``."""
    STRATEGIES.register(name, factory, overwrite=overwrite)


def resolve_strategy(name: str) -> StrategyFactory:
    return STRATEGIES.resolve(name, "stage2.strategy")


def build_strategy(name: str, config: Any, model: nn.Module) -> StepStrategy:
    return resolve_strategy(name)(config, model)
