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
from experiments.refiners.diagnostics import domain_auc
from experiments.registries import STRATEGIES, register_entry, resolve_entry

__all__ = ["STRATEGIES", "StepBatch", "StepLog", "StepStrategy", "build_strategy", "register_strategy"]


@dataclass
class StepBatch:
    """One step's data on the device: modality -> clips per half, source labels, planted ground truth (or None)."""

    source: dict[str, Tensor]
    labels: Tensor
    target: dict[str, Tensor] | None = None
    source_negative: Tensor | None = None
    target_negative: Tensor | None = None
    progress: float = 0.0  # position in the stage, [0, 1)


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

    forward: Callable[..., Any]  # the CoTrainModule, or its DistributedDataParallel wrapper
    optimizers: Mapping[str, torch.optim.Optimizer]
    refiners: Mapping[tuple[str, str], Any]
    autocast: Callable[[], AbstractContextManager[Any]]


class StepStrategy:
    """Standard stage-2 step; subclasses override what differs (see ``experiments/steps/mcd.py``)."""

    def __init__(self, config: Any, model: nn.Module) -> None:
        self.config = config

    def modules(self) -> dict[str, nn.Module]:
        """Extra trainable modules, added to ``CoTrainModule.extras`` (built under the caller's seed)."""
        return {}

    def param_groups(self, module: nn.Module) -> dict[str, list[nn.Parameter]]:
        """Optimizer name -> parameters, for stage 2."""
        return {"main": module.trainable_parameters()}

    def step(self, ctx: StepContext, batch: StepBatch) -> StepLog:
        """Zero gradients, forward (with refinement), one backward, step every optimizer and the refiners."""
        for opt in ctx.optimizers.values():
            opt.zero_grad(set_to_none=True)
        for refiner in ctx.refiners.values():
            for m in refiner.trainable_modules():
                m.zero_grad(set_to_none=True)
        refine = make_refine(ctx.refiners, batch) if ctx.refiners else None
        with ctx.autocast():
            loss, terms, results = ctx.forward(
                batch.source, batch.labels, batch.target, stage=2, refine=refine, progress=batch.progress
            )
        loss.backward()
        for opt in ctx.optimizers.values():
            opt.step()
        for refiner in ctx.refiners.values():
            refiner.after_backward()
        return StepLog({"loss": _f(loss), **{k: _f(v) for k, v in terms.items()}}, results)


def make_refine(refiners: Mapping[tuple[str, str], Any], batch: StepBatch) -> Callable[..., Any]:
    """The callback the CoTrainModule's forward calls with both halves' features: keep masks, results, loss terms."""

    def refine(f_src: dict[str, Tensor], f_tgt: dict[str, Tensor]):
        keep: dict[tuple[str, str], Tensor] = {}
        results: dict[str, RefinementResult] = {}
        losses: list[Tensor] = []
        for modality in f_src:
            for domain, feats, negative in (
                ("source", f_src[modality], batch.source_negative),
                ("target", f_tgt[modality], batch.target_negative),
            ):
                refiner = refiners.get((modality, domain))
                if refiner is None:
                    continue
                result = refiner.refine(feats, negative)
                results[f"{modality}/{domain}"] = result
                keep[(modality, domain)] = result.keep
                if result.loss is not None:
                    losses.append(result.loss)
            add_domain_aucs(results.get(f"{modality}/source"), results.get(f"{modality}/target"))
        return keep, results, losses

    return refine


def add_domain_aucs(source: RefinementResult | None, target: RefinementResult | None) -> None:
    """A modality's batch AUC, source vs target, of the GRL discriminator (``disc_auc``) and of the rewards'
    relevance model (``relevance_auc``), logged under both of its agents (a diagnostic: near 0.5 the rewards are noise)."""
    if source is None or target is None or source.relevance is None or target.relevance is None:
        return
    if not any(k.startswith("diag/") for k in source.stats):  # refinement.diagnostics = false
        return
    values = {"diag/relevance_auc": domain_auc(source.relevance, 1.0 - target.relevance)}
    if source.p_target is not None and target.p_target is not None:
        values["diag/disc_auc"] = domain_auc(source.p_target, target.p_target)
    for result in (source, target):
        result.stats.update({k: v for k, v in values.items() if v is not None})


def _f(t: Tensor) -> float:
    return float(t.detach())


StrategyFactory = Callable[[Any, nn.Module], StepStrategy]


def register_strategy(name: str, factory: str | StrategyFactory, overwrite: bool = False) -> None:
    """Make ``stage2.strategy = name`` train stage 2 with ``factory(config, model)``."""
    register_entry(STRATEGIES, name, factory, "step strategy", overwrite)


def build_strategy(name: str, config: Any, model: nn.Module) -> StepStrategy:
    return resolve_entry(STRATEGIES, name, "stage2.strategy")(config, model)
