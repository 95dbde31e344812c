"""Config -> the co-training loop's parts: the CoTrainModule, its objectives, the refiners, the step strategy.

(Datasets and models come from :mod:`experiments.builders`.)

Every part is looked up by name in its registry (:data:`experiments.objectives.OBJECTIVES`,
:data:`experiments.refiners.REFINERS`, :data:`experiments.steps.STRATEGIES`,
:data:`agents.stepwise.STEPWISE_AGENTS`), so a new method, refinement policy or RL algorithm is a
module plus its registration, never an edit of the loop. Initialisation is seeded per part (the
model by ``seed``, discriminators and objective modules by ``seed + 1``, a strategy's modules by
its own seed, each agent by ``100 seed + i``) so adding a part never shifts another's weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from experiments.config import ConfigError, RunConfig
from experiments.cotrain_module import CoTrainModule
from experiments.objectives import ObjectiveContext, build_objective
from experiments.refiners import Refiner, RefinerContext, build_refiner
from experiments.registries import OBJECTIVES
from experiments.steps import StepStrategy, build_strategy
from features.domain_discriminator import DomainDiscriminator
from features.domains import DOMAINS
from mmir_env.signals import resolve_signal


@dataclass
class Parts:
    """What :func:`build_parts` made: the module that trains, the refiners, the stage-2 step strategy."""

    module: CoTrainModule
    refiners: dict[tuple[str, str], Refiner]
    strategy: StepStrategy

    def agents_learning(self) -> bool:
        """Whether every Q-network the module holds gets a gradient from the step's joint backward now
        (each refiner with trainable modules learns through it: ``learns_in_backward``)."""
        trainers = [r for r in self.refiners.values() if r.trainable_modules()]
        return bool(trainers) and all(bool(getattr(r, "learns_in_backward", lambda: False)()) for r in trainers)

    def ddp_settings(self, stage: int, agents_learning: bool = False) -> dict[str, bool]:
        """DistributedDataParallel's graph settings for ``stage``.

        A stage whose step uses the same parameters every time runs with ``static_graph`` (DDP then
        learns once which parameters get no gradient: the discriminators in stage 1, say). In stage 2
        the agents' Q-networks get no gradient until their replays fill (``agents_learning`` false),
        and a strategy's phases train different parts (MCD): then ``find_unused_parameters``, which
        traces the graph every step. Once every agent learns, the set is the same every step again.
        """
        dynamic = stage == 2 and (self.strategy.replaces_step or (len(self.module.agents) > 0 and not agents_learning))
        return {"static_graph": not dynamic, "find_unused_parameters": dynamic}


def make_optimizer(
    params: list[nn.Parameter], optimizer: str, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")


def objective_weights(cfg: RunConfig) -> dict[int, dict[str, float]]:
    """Stage -> objective name -> weight: classification (eq. 1, always on) and the stage's ``objectives``.

    ``refinement.relevance = "critic"`` adds the relevance critic in stage 2: its BCE trains only the
    critic (features detached), whose relevance scores the refiners' rewards.
    """
    weights: dict[int, dict[str, float]] = {}
    for stage, sc in ((1, cfg.stage1), (2, cfg.stage2)):
        w = {"classification": 1.0, **{name: float(value) for name, value in sc.objectives.items()}}
        if stage == 2 and sc.refinement and cfg.refinement.relevance == "critic":
            w.setdefault("relevance-critic", 1.0)
        weights[stage] = w
    return weights


def refinement_pairs(cfg: RunConfig, modalities: tuple[str, ...]) -> list[tuple[int, str, str]]:
    """``(index, modality, domain)`` of every refiner the config enables (the index seeds it)."""
    if not cfg.stage2.refinement:
        return []
    pairs = []
    for i, (m, d) in enumerate((m, d) for m in modalities for d in DOMAINS):
        if m in (cfg.agents.s_agents if d == "source" else cfg.agents.t_agents):
            pairs.append((i, m, d))
    return pairs


def _check_ground_truth(cfg: RunConfig, datasets: Mapping[str, Any]) -> None:
    if not cfg.stage2.refinement:
        return
    if cfg.refinement.policy == "ground-truth":
        reader = "refinement.policy = 'ground-truth'"
    else:  # a signal of the reward or the state that reads the planted ground truth (the oracle)
        names = [*cfg.env.reward_signals, *cfg.env.observation_signals]
        oracles = [n for n in names if "is_negative" in resolve_signal(n).needs]
        if not oracles:
            return
        reader = f"the relevance signal {oracles[0]!r} (env.reward_signals / env.observation_signals)"
    for role in DOMAINS:
        ds = datasets[role]
        if len(ds) and "is_negative" not in ds[0]:
            raise ConfigError(
                f"{reader} needs planted negatives, but the {role} items of "
                f"data.kind = {cfg.data.kind!r} carry no 'is_negative'"
            )


def build_parts(cfg: RunConfig, model: nn.Module, datasets: Mapping[str, Any], device: torch.device) -> Parts:
    """The loop's parts for ``cfg`` around ``model``, on ``device``."""
    _check_ground_truth(cfg, datasets)
    model = model.to(device)
    modalities = tuple(model.modalities)
    dims = model.feature_dims
    weights = objective_weights(cfg)
    # in registration order (the built-ins in eq. 12's order, then plug-ins): the order their terms join the graph
    wanted = [n for n in OBJECTIVES.in_registration_order() if max(weights[s].get(n, 0.0) for s in (1, 2)) > 0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        discriminators = nn.ModuleDict(
            {
                m: DomainDiscriminator(
                    dims[m], cfg.discriminator.hidden_dim, negative_slope=cfg.discriminator.negative_slope
                )
                for m in modalities
            }
        ).to(device)
        context = ObjectiveContext(modalities, dims, cfg, discriminators)
        objectives = {}
        for name in wanted:
            try:
                objectives[name] = build_objective(name, context)
            except KeyError as err:
                raise ConfigError(str(err.args[0])) from None
    module = CoTrainModule(
        model, discriminators, objectives, weights, per_domain_bn=cfg.model.batchnorm == "per-domain"
    ).to(device)
    half = cfg.stage2.batch_size // 2
    refiners: dict[tuple[str, str], Refiner] = {}
    critic = objectives.get("relevance-critic") if cfg.refinement.relevance == "critic" else None
    for i, m, d in refinement_pairs(cfg, modalities):
        refiners[(m, d)] = build_refiner(
            cfg.refinement.policy,
            RefinerContext(
                m,
                d,
                discriminators[m],
                dims[m],
                half,
                cfg,
                seed=cfg.seed * 100 + i,
                device=device,
                relevance_model=None if critic is None else critic.critics[m],
            ),
        )
        for j, net in enumerate(refiners[(m, d)].trainable_modules()):
            module.agents[f"{m}_{d}_{j}"] = net
    strategy = build_strategy(cfg.stage2.strategy, cfg, model)
    for name, extra in strategy.modules().items():
        module.extras[name] = extra.to(device)
    module.refiners, module.strategy = refiners, strategy
    return Parts(module, refiners, strategy)
