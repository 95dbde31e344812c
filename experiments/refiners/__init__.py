"""Refinement policies: which rows of one modality's half-batch the adversarial loss keeps.

A refiner gets one modality's features of one domain half (detached), the modality's live domain
discriminator and the batch's planted ground truth when the data carries it, and returns a
:class:`RefinementResult`: the keep mask, its loss term if it learns by gradient (attached to a
graph that the step's one backward trains) and per-step statistics. Built in (``refinement.policy``):

- ``agent``: an S-/T-agent of ``agents.algorithm`` (any step-wise agent of
  :mod:`agents.stepwise`) selecting ``env.E`` rows per candidate set (the paper's MMIR);
- ``none``: keeps every row;
- ``random``: removes ``env.E`` uniformly random rows per candidate set (the agents' removal
  rate: the control every table needs);
- ``relevance``: removes the ``env.E`` rows of lowest relevance per set (eq. 3, or the
  ``env.reward_signals`` combination): the reward's own greedy oracle;
- ``ground-truth``: removes exactly the planted negatives (``is_negative``): the bound.

A new policy is one module with a class satisfying :class:`Refiner` and a call of
:func:`register_refiner`; ``refinement.policy = "NAME"`` selects it.

Refiners whose reward, observation or diagnostics use relevance signals (:mod:`mmir_env.signals`)
say which inputs their next call reads with ``signal_needs() -> frozenset`` (of
:data:`SIGNAL_ROW_INPUTS`); the co-training module then computes them (:class:`SignalRows`) and
calls ``refine(features, is_negative, signals)``. A refiner without ``signal_needs`` is called as
``refine(features, is_negative)``, as ever.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from experiments.registries import REFINERS

__all__ = [
    "REFINERS",
    "SIGNAL_ROW_INPUTS",
    "Refiner",
    "RefinerInput",
    "RefinerContext",
    "RefinementResult",
    "SignalRows",
    "after_backward_all",
    "build_refiner",
    "refine_all",
    "register_refiner",
    "signal_needs",
]

#: The relevance signals' inputs a refiner may ask the co-training module for (the fields of :class:`SignalRows`).
SIGNAL_ROW_INPUTS: frozenset[str] = frozenset({"logits", "other_logits", "reference"})


@dataclass(frozen=True)
class RefinementResult:
    """What a refiner did to one half-batch of one modality."""

    keep: Tensor  # [B] bool: rows left in for L_adv
    mean_reward: float  # eq. 4 reward of the removals, averaged over sets and selections
    removed: int
    negatives_removed: int  # planted ground truth, when the batch carries it (else 0)
    negatives_present: int  # planted negatives in the batch (0 without ground truth)
    relevance: Tensor | None = None  # [B] eq. 3 relevance of every row before selection (for reports)
    p_target: Tensor | None = None  # [B] the GRL discriminator's P(target) of every row (diagnostics: its AUC)
    loss: Tensor | None = (
        None  # the policy's loss term for the step's backward (None: it learns otherwise or not at all)
    )
    stats: dict[str, float] = field(default_factory=dict)  # extra per-step statistics (logged as NAME/modality/domain)


@dataclass(frozen=True)
class SignalRows:
    """The relevance signals' inputs of one modality's half-batch (all detached; None: not asked for)."""

    logits: Tensor | None = None  # [B, C] this modality's classifier logits of the half's rows
    other_logits: Tensor | None = None  # [B, C] the other modality's logits of the same rows
    reference: Tensor | None = None  # [R, d] this modality's features of the other domain's half

    def env_inputs(self) -> dict[str, Tensor]:
        """The given inputs as keyword arguments of ``BatchedRefinementEnv.load_candidate_sets``."""
        given = {"logits": self.logits, "other_logits": self.other_logits, "reference": self.reference}
        return {key: value for key, value in given.items() if value is not None}


class RefinerInput(NamedTuple):
    """One refiner's input: unpacks as ``refine(*input)``; ``signals`` only for refiners that asked for them."""

    features: Tensor
    is_negative: Tensor | None
    signals: SignalRows | None = None


def signal_needs(refiner: object) -> frozenset[str]:
    """The signal inputs (of :data:`SIGNAL_ROW_INPUTS`) that ``refiner``'s next call reads; none without ``signal_needs``."""
    asks = getattr(refiner, "signal_needs", None)
    return frozenset() if asks is None else frozenset(asks()) & SIGNAL_ROW_INPUTS


@dataclass(frozen=True)
class RefinerContext:
    """Everything a refiner factory may use to build one refiner."""

    modality: str
    domain: str  # "source" or "target"
    discriminator: nn.Module  # the modality's live D^k (rewards and relevance)
    feature_dim: int
    batch_size: int  # rows of the half-batch
    config: Any  # the run's RunConfig (agents, env and refinement sections)
    seed: int
    device: torch.device
    relevance_model: nn.Module | None = (
        None  # scores relevance for rewards instead of D^k (refinement.relevance = "critic")
    )

    @property
    def scorer(self) -> nn.Module:
        """The module whose eq. 3 relevance the rewards use: the relevance critic when there is one, else D^k."""
        return self.discriminator if self.relevance_model is None else self.relevance_model


@runtime_checkable
class Refiner(Protocol):
    """One refinement policy for one (modality, domain)."""

    modality: str
    domain: str

    def refine(self, features: Tensor, is_negative: Tensor | None = None) -> RefinementResult:
        """Keep mask (and loss, statistics) for ``features: [B, d]``; ``is_negative``: ``[B]`` bool or None."""
        ...

    def after_backward(self) -> None:
        """Called after the step's backward (e.g. an agent's optimizer step)."""
        ...

    def trainable_modules(self) -> list[nn.Module]:
        """Modules the step's joint backward trains through :attr:`RefinementResult.loss` (held by the CoTrainModule)."""
        ...

    def state_dict(self, include_replay: bool = True) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


RefinerFactory = Callable[[RefinerContext], Refiner]


def register_refiner(name: str, factory: str | RefinerFactory, overwrite: bool = False) -> None:
    """Make ``refinement.policy = name`` build its refiners with ``factory(context)``."""
    REFINERS.register(name, factory, overwrite=overwrite)


def resolve_refiner(name: str) -> RefinerFactory:
    return REFINERS.resolve(name, "refinement.policy")


def build_refiner(name: str, context: RefinerContext) -> Refiner:
    """The refiner registered as ``name`` for one (modality, domain)."""
    return resolve_refiner(name)(context)


def refine_all(
    refiners: Mapping[Hashable, Refiner], inputs: Mapping[Hashable, tuple[Tensor, Tensor | None] | RefinerInput]
) -> dict[Hashable, RefinementResult]:
    """Every refiner on its ``(features, is_negative)`` input (or a :class:`RefinerInput` with the signal inputs
    it asked for), results in the order of ``inputs``.

    Refiners whose class offers ``refine_together(refiners, inputs) -> results`` run through it in
    one call per class (the agents of :class:`~experiments.refiners.agent.AgentRefiner` then act and
    learn as one batched network); the others run their own :meth:`Refiner.refine`.
    """
    results: dict[Hashable, RefinementResult] = {}
    together: dict[Callable[..., list[RefinementResult]], list[Hashable]] = {}
    for key, given in inputs.items():
        runner = getattr(type(refiners[key]), "refine_together", None)
        if runner is None:
            results[key] = refiners[key].refine(*given)
        else:
            together.setdefault(runner, []).append(key)
    for runner, keys in together.items():
        results.update(zip(keys, runner([refiners[k] for k in keys], [inputs[k] for k in keys])))
    return {key: results[key] for key in inputs}


def after_backward_all(refiners: Sequence[Refiner]) -> None:
    """Every refiner's :meth:`Refiner.after_backward`; refiners whose class offers
    ``after_backward_together(refiners)`` run through it in one call per class (the agents of
    :class:`~experiments.refiners.agent.AgentRefiner` then step their optimizers as one fused call)."""
    together: dict[Callable[..., None], list[Refiner]] = {}
    for refiner in refiners:
        runner = getattr(type(refiner), "after_backward_together", None)
        if runner is None:
            refiner.after_backward()
        else:
            together.setdefault(runner, []).append(refiner)
    for runner, members in together.items():
        runner(members)
