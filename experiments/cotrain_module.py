"""Everything that trains by gradient in co-training, as one ``nn.Module``.

:class:`CoTrainModule` holds the model (backbones ``F^k`` and heads ``C^k``), the per-modality
discriminators ``D^k``, the objectives' modules, the agents' Q-networks that learn through the
step's one backward, and a step strategy's extra modules (MCD's second heads). Optimizer parameter
groups, ``DistributedDataParallel``, ``.to(device)`` and checkpoints all derive from it.

Its :meth:`~CoTrainModule.forward` does a step's forward work, so that under DDP every parameter
that gets a gradient is used inside the wrapped forward: features of both halves (per-domain or
joint BatchNorm), source logits, the refiners' keep masks (called back inside the forward), and the
objectives' weighted loss terms. A step strategy whose step differs (MCD's three phases) passes a
``closure`` that runs inside the forward instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from experiments.objectives import Objective, StepOutputs
from experiments.refiners import RefinementResult

# (f_src, f_tgt) -> (keep masks, results keyed "modality/domain", loss terms of learning refiners)
RefineFn = Callable[
    [dict[str, Tensor], dict[str, Tensor]],
    tuple[dict[tuple[str, str], Tensor], dict[str, RefinementResult], list[Tensor]],
]


class CoTrainModule(nn.Module):
    """The trainable part of a co-training run (see the module docstring).

    :param model: modality-keyed model with ``modalities``, ``extract_features`` and ``classify``.
    :param discriminators: modality -> D^k (shared by the adversarial objective, the refiners' rewards, snapshots).
    :param objectives: name -> objective, in the order their terms are summed.
    :param weights: stage (1, 2) -> objective name -> weight; a weight of 0 (or none) skips the objective in that stage.
    :param per_domain_bn: separate source and target forwards (per-domain BatchNorm statistics, MM-SADA) or one joint forward.
    """

    def __init__(
        self,
        model: nn.Module,
        discriminators: nn.ModuleDict,
        objectives: Mapping[str, Objective],
        weights: Mapping[int, Mapping[str, float]],
        per_domain_bn: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        self.discriminators = discriminators
        self.objectives = nn.ModuleDict(dict(objectives))
        self.agents = nn.ModuleDict()  # Q-networks trained through the joint backward (their own optimizers step them)
        self.extras = nn.ModuleDict()  # modules of a step strategy (MCD's second heads)
        self.weights = {int(s): dict(w) for s, w in weights.items()}
        self.per_domain_bn = bool(per_domain_bn)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.model.modalities)

    def extract(
        self, source: Mapping[str, Tensor], target: Mapping[str, Tensor] | None
    ) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
        """Features of both halves: separate forwards (per-domain BatchNorm) or one joint forward."""
        return extract(self.model, source, target, self.per_domain_bn)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter the loop's optimizers step (the agents' Q-networks have their own)."""
        agent_params = {id(p) for p in self.agents.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in agent_params]

    def forward(
        self,
        source: Mapping[str, Tensor],
        labels: Tensor | None = None,
        target: Mapping[str, Tensor] | None = None,
        *,
        stage: int = 2,
        refine: RefineFn | None = None,
        progress: float = 0.0,
        closure: Callable[..., Any] | None = None,
    ) -> Any:
        """One step's forward: ``(total loss, {term: tensor}, {"modality/domain": RefinementResult})``.

        With ``closure``, returns ``closure(self, source, labels, target)`` instead (a step strategy's
        own forward work, still inside DistributedDataParallel's forward).
        """
        if closure is not None:
            return closure(self, source, labels, target)
        assert labels is not None
        f_src, f_tgt = self.extract(source, target)
        outputs = StepOutputs(
            self.modalities,
            f_src,
            f_tgt,
            self.model.classify(f_src).logits,
            labels,
            progress=progress,
            classify=self.model.classify,
        )
        results: dict[str, RefinementResult] = {}
        refiner_losses: list[Tensor] = []
        if refine is not None and f_tgt is not None:
            outputs.keep, results, refiner_losses = refine(f_src, f_tgt)
        weights = self.weights.get(stage, {})
        terms: dict[str, tuple[float, Tensor]] = {}
        for name, objective in self.objectives.items():
            w = float(weights.get(name, 0.0))
            if w == 0.0 or stage not in objective.stages:
                continue
            for term, value in objective(outputs).items():
                terms[term] = (w, value)
        if refine is not None:
            dqn = torch.zeros((), device=labels.device)
            for loss in refiner_losses:
                dqn = dqn + loss
            terms["dqn"] = (1.0, dqn)
        total = _weighted_sum(terms)
        return total, {k: v for k, (_, v) in terms.items()}, results


def _weighted_sum(terms: Mapping[str, tuple[float, Tensor]]) -> Tensor:
    """Eq. 9/12 in the paper's order: L_cls + L_adv + L_dqn + the other terms (fixes the printed total's rounding)."""
    order = [k for k in ("cls", "adv", "dqn") if k in terms] + [k for k in terms if k not in ("cls", "adv", "dqn")]
    total: Tensor | None = None
    for key in order:
        w, value = terms[key]
        term = value if w == 1.0 else w * value
        total = term if total is None else total + term
    assert total is not None, "no loss term: the classification objective is always configured"
    return total


def extract(
    model: nn.Module, source: Mapping[str, Tensor], target: Mapping[str, Tensor] | None, per_domain_bn: bool
) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """Features of both halves: separate forwards (per-domain BatchNorm statistics, MM-SADA) or one joint forward."""
    if target is None:
        return model.extract_features(source), None
    if per_domain_bn:
        return model.extract_features(source), model.extract_features(target)
    n = next(iter(source.values())).shape[0]
    joint = model.extract_features({k: torch.cat([source[k], target[k]]) for k in source})
    return {k: v[:n] for k, v in joint.items()}, {k: v[n:] for k, v in joint.items()}
