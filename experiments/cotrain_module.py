"""Everything that trains by gradient in co-training, as one ``nn.Module`` whose forward is a step's forward work.

:class:`CoTrainModule` holds the model (backbones ``F^k`` and heads ``C^k``), the per-modality
discriminators ``D^k``, the objectives' modules, the agents' Q-networks that learn through the
step's one backward, and a step strategy's extra modules (MCD's second heads). Optimizer parameter
groups, ``DistributedDataParallel``, ``.to(device)`` and checkpoints all derive from it.

Under DDP every parameter that gets a gradient must be used inside the wrapped forward, so
:meth:`CoTrainModule.forward` does all of a step's forward work, each piece a named method: features
of both halves (:meth:`~CoTrainModule.extract`), source logits, the refiners' keep masks
(:meth:`~CoTrainModule.refine`), the objectives' terms (:meth:`~CoTrainModule.loss_terms`) and
their sum in eq. 12's order. A step strategy whose step differs (MCD's three phases) names a phase
(``forward(batch, stage, phase="...")``) that the strategy's :meth:`forward_phase` computes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from experiments.objectives import Objective, StepOutputs
from experiments.refiners import RefinementResult, Refiner, RefinerInput, SignalRows, refine_all, signal_needs
from experiments.refiners.diagnostics import domain_auc
from experiments.steps import StepBatch, StepStrategy

PAPER_TERMS = ("cls", "adv", "dqn")  # eq. 12: L_cls + L_adv + L_dqn, summed first and in this order


@dataclass
class Refined:
    """What the refiners did to one batch: keep masks per (modality, domain), their results and loss terms."""

    keep: dict[tuple[str, str], Tensor] = field(default_factory=dict)
    results: dict[str, RefinementResult] = field(default_factory=dict)
    losses: list[Tensor] = field(default_factory=list)


class StepOutput(NamedTuple):
    """A step's forward result: the total loss, every term, and the refiners' results keyed ``modality/domain``.

    A tuple, not a dataclass: DistributedDataParallel looks for the output's tensors in tuples, lists
    and dicts only, and a loss it cannot see leaves its gradients unsynchronised.
    """

    loss: Tensor
    terms: dict[str, Tensor]
    refinement: dict[str, RefinementResult]


class CoTrainModule(nn.Module):
    """The trainable part of a co-training run (see the module docstring).

    :param model: modality-keyed model with ``modalities``, ``extract_features`` and ``classify``.
    :param discriminators: modality -> D^k (shared by the adversarial objective, the refiners' rewards, snapshots).
    :param objectives: name -> objective, in the order their terms join the graph.
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
        # not modules: policies with replay buffers and RNG; their trainable networks are in self.agents
        self.refiners: dict[tuple[str, str], Refiner] = {}
        self.strategy: StepStrategy | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.model.modalities)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter the loop's optimizers step (the agents' Q-networks have their own)."""
        agent_params = {id(p) for p in self.agents.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in agent_params]

    def forward(self, batch: StepBatch, stage: int = 2, phase: str | None = None) -> Any:
        """One step's forward work: a :class:`StepOutput` (or, with ``phase``, the strategy's phase loss)."""
        if phase is not None:
            assert self.strategy is not None
            return self.strategy.forward_phase(phase, self, batch)
        f_src, f_tgt = self.extract(batch.source, batch.target if stage == 2 else None)  # F^k of both halves
        logits = self.model.classify(f_src).logits  # C^k, fused (eq. 1)
        outputs = StepOutputs(
            self.modalities, f_src, f_tgt, logits, batch.labels, progress=batch.progress, classify=self.model.classify
        )
        refined = self.refine(f_src, f_tgt, batch) if stage == 2 and self.refiners else None  # keep masks
        if refined is not None:
            outputs.keep = refined.keep
        terms = self.loss_terms(outputs, stage)  # L_cls, L_adv on the kept rows, the other objectives
        if refined is not None:
            terms["dqn"] = (1.0, _sum(refined.losses, batch.labels.device))  # the agents' TD losses (eq. 7)
        total = _weighted_sum(terms)
        return StepOutput(total, {k: v for k, (_, v) in terms.items()}, refined.results if refined else {})

    def extract(
        self, source: Mapping[str, Tensor], target: Mapping[str, Tensor] | None
    ) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
        """Features of both halves: separate forwards (per-domain BatchNorm statistics, MM-SADA) or one joint forward."""
        return extract(self.model, source, target, self.per_domain_bn)

    def refine(self, f_src: dict[str, Tensor], f_tgt: dict[str, Tensor] | None, batch: StepBatch) -> Refined:
        """Every refiner on its half-batch of one modality (features detached inside): keep masks, results, losses.

        A refiner whose relevance signals read more than features (``signal_needs``) also gets them
        (:class:`~experiments.refiners.SignalRows`): its modality's classifier logits of its rows, the
        other modality's, and its modality's features of the other half (the other domain); logits
        are computed only for halves whose refiners ask for them.
        """
        assert f_tgt is not None, "refinement needs the target half (stage 2)"
        halves = {"source": (f_src, batch.source_negative), "target": (f_tgt, batch.target_negative)}
        keys = [(m, d) for m in f_src for d in ("source", "target") if (m, d) in self.refiners]
        needs = {key: signal_needs(self.refiners[key]) for key in keys}
        wanted = {d for (_, d), need in needs.items() if need & {"logits", "other_logits"}}
        logits = {d: self.signal_logits(halves[d][0]) for d in ("source", "target") if d in wanted}
        inputs: dict[tuple[str, str], tuple[Tensor, Tensor | None] | RefinerInput] = {}
        for modality, domain in keys:
            feats, negative = halves[domain]
            need = needs[(modality, domain)]
            if not need:  # the paper's refiners: features and ground truth only
                inputs[(modality, domain)] = (feats[modality], negative)
                continue
            other_half = halves["target" if domain == "source" else "source"][0]
            rows = SignalRows(
                logits=logits[domain][modality] if "logits" in need else None,
                other_logits=_other_logits(logits[domain], modality) if "other_logits" in need else None,
                reference=other_half[modality].detach() if "reference" in need else None,
            )
            inputs[(modality, domain)] = RefinerInput(feats[modality], negative, rows)
        out = Refined()
        for (modality, domain), result in refine_all(self.refiners, inputs).items():  # the agents as one group
            out.results[f"{modality}/{domain}"] = result
            out.keep[(modality, domain)] = result.keep
            if result.loss is not None:
                out.losses.append(result.loss)
        for modality in f_src:
            add_domain_aucs(out.results.get(f"{modality}/source"), out.results.get(f"{modality}/target"))
        return out

    @torch.no_grad()
    def signal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Per modality, the classifier's logits ``C^k(f^k)`` of detached features, as the relevance signals read them.

        In eval mode (no dropout draws: the run's random stream is untouched), every submodule put
        back in the mode it was in.
        """
        modes = [(module, module.training) for module in self.model.modules()]
        self.model.eval()
        try:
            out = self.model.classify({k: v.detach() for k, v in features.items()}).modality_logits
        finally:
            for module, mode in modes:
                module.training = mode
        return {k: v.detach().float() for k, v in out.items()}

    def loss_terms(self, outputs: StepOutputs, stage: int) -> dict[str, tuple[float, Tensor]]:
        """``term -> (weight, value)`` of the objectives that train in ``stage``, in the order they join the graph."""
        weights = self.weights.get(stage, {})
        terms: dict[str, tuple[float, Tensor]] = {}
        for name, objective in self.objectives.items():
            w = float(weights.get(name, 0.0))
            if w == 0.0 or stage not in objective.stages:
                continue
            for term, value in objective(outputs).items():
                terms[term] = (w, value)
        return terms


def _other_logits(logits: Mapping[str, Tensor], modality: str) -> Tensor | None:
    """The other modality's logits of the same rows; with more than two modalities the sum of the others' (their
    late fusion, eq. 1); None with one modality."""
    others = [v for k, v in logits.items() if k != modality]
    if not others:
        return None
    return others[0] if len(others) == 1 else torch.stack(others).sum(0)


def _sum(losses: list[Tensor], device: torch.device) -> Tensor:
    total = torch.zeros((), device=device)
    for loss in losses:
        total = total + loss
    return total


def _weighted_sum(terms: Mapping[str, tuple[float, Tensor]]) -> Tensor:
    """Eq. 9/12 in the paper's order (L_cls + L_adv + L_dqn), then the other terms: fixes the logged total's rounding."""
    order = [k for k in PAPER_TERMS if k in terms] + [k for k in terms if k not in PAPER_TERMS]
    total: Tensor | None = None
    for key in order:
        w, value = terms[key]
        term = value if w == 1.0 else w * value
        total = term if total is None else total + term
    assert total is not None, "no loss term: the classification objective is always configured"
    return total


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
