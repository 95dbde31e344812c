"""Refiners that do not learn: the controls and bounds every refinement table needs.

``none`` keeps every row; ``random`` removes ``env.E`` uniformly random rows per candidate set (the
agents' removal rate); ``relevance`` removes the ``env.E`` least relevant rows per set under the
reward's relevance: the live discriminator (eq. 3), or the ``env.reward_signals`` combination (the
reward's own greedy oracle; with e.g. ``{density = 1.0}`` a label-free design that removes the rows
least like the other domain); ``ground-truth`` removes exactly the planted negatives. ``random`` and
``relevance`` run through the same batched env as the agents, so their rewards and relevance
statistics are comparable with the agents'.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from experiments.refiners import RefinementResult, RefinerContext, SignalRows
from experiments.refiners.agent import SignalDiagnostics, refinement_env
from experiments.refiners.diagnostics import set_diagnostics
from mmir_env.domains import SOURCE
from mmir_env.scoring import discriminator_relevance


class _Stateless:
    modality: str
    domain: str

    def __init__(self, context: RefinerContext) -> None:
        self.modality, self.domain = context.modality, context.domain

    def after_backward(self) -> None:
        return None

    def trainable_modules(self) -> list[nn.Module]:
        return []

    def state_dict(self, include_replay: bool = True) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class KeepAllRefiner(_Stateless):
    """``none``: every row stays in L_adv (adversarial-only with the refinement bookkeeping on)."""

    def refine(self, features: Tensor, is_negative: Tensor | None = None) -> RefinementResult:
        keep = torch.ones(features.shape[0], dtype=torch.bool, device=features.device)
        return RefinementResult(
            keep=keep,
            mean_reward=0.0,
            removed=0,
            negatives_removed=0,
            negatives_present=0 if is_negative is None else int(is_negative.sum()),
        )


class _SetwiseRefiner(_Stateless):
    """Removes ``env.E`` rows per candidate set, chosen by :meth:`choose`, through the agents' env."""

    def __init__(self, context: RefinerContext) -> None:
        super().__init__(context)
        self.n_c, self.E = context.config.env.n_c, context.config.env.E
        self.env = refinement_env(context)
        self.discriminator = context.scorer  # the relevance the rewards use
        self.gan_discriminator = context.discriminator
        self.calls = 0  # refine() calls so far: the diagnostics' clock, kept in checkpoints
        self.generator = torch.Generator(device=context.device).manual_seed(int(context.seed))
        self.signals = SignalDiagnostics(context, self.env)

    def choose(self, obs: Tensor, mask: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def signal_needs(self) -> frozenset[str]:
        """The relevance signals' inputs (``logits``, ``other_logits``, ``reference``) the next call reads."""
        return self.signals.needs(self.calls)

    def refine(
        self, features: Tensor, is_negative: Tensor | None = None, signals: SignalRows | None = None
    ) -> RefinementResult:
        b, d = features.shape
        sets = features.detach().float().reshape(b // self.n_c, self.n_c, d)
        negatives = None if is_negative is None else is_negative.reshape(b // self.n_c, self.n_c)
        obs = self.env.load_candidate_sets(sets, negatives, **({} if signals is None else signals.env_inputs()))
        first_mask = self.env.mask.clone()
        diagnose = self.signals.diagnoses(self.calls)
        stats = self.signals.aucs_now(negatives) if diagnose else {}
        report = self.signals.report_relevance(self.discriminator, sets)  # eq. 3 where the reward's is not
        relevance, total_reward, negatives_removed = None, 0.0, 0
        for _ in range(self.E):
            obs, rewards, _, _, info = self.env.step(self.choose(obs, self.env.mask.clone()))
            if relevance is None:
                relevance = info["relevance_rows"].reshape(-1)
            total_reward += float(rewards.sum())
            if "is_negative" in info:
                negatives_removed += int(info["is_negative"].sum())
        keep = self.env.mask.reshape(-1).clone()
        assert relevance is not None
        p_target = None
        self.calls += 1
        if diagnose:
            diag = set_diagnostics(
                relevance.reshape(sets.shape[0], self.n_c),
                first_mask,
                None,
                ~self.env.mask,
                negatives,
                self.env.reward_kind,
                self.env.reward_threshold,
            )
            stats.update({f"diag/{k}": v for k, v in diag.items()})
        if report is not None:
            relevance = report
        if diagnose:
            p_target = relevance if self.env.domain == SOURCE else 1.0 - relevance
        return RefinementResult(
            keep=keep,
            mean_reward=total_reward / (sets.shape[0] * self.E),
            removed=int((~keep).sum()),
            negatives_removed=negatives_removed,
            negatives_present=0 if is_negative is None else int(is_negative.sum()),
            relevance=relevance,
            p_target=p_target if self.discriminator is self.gan_discriminator else None,
            stats=stats,
        )

    def state_dict(self, include_replay: bool = True) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "refiner_calls": torch.tensor(self.calls)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" in state and self.generator.device.type == "cpu":
            self.generator.set_state(state["generator"])
        self.calls = int(state.get("refiner_calls", 0))


class RandomRefiner(_SetwiseRefiner):
    """``random``: ``env.E`` uniformly random selectable rows per set (the agents' removal rate, no learning)."""

    def choose(self, obs: Tensor, mask: Tensor) -> Tensor:
        keys = torch.rand(mask.shape, generator=self.generator, device=mask.device).masked_fill(~mask, -1.0)
        return keys.argmax(dim=-1)


class RelevanceRefiner(_SetwiseRefiner):
    """``relevance``: the row of lowest relevance in each set, ``env.E`` times (greedy on the reward): eq. 3, or
    the ``env.reward_signals`` combination over the rows still selectable."""

    @torch.no_grad()
    def choose(self, obs: Tensor, mask: Tensor) -> Tensor:
        if self.env.signals.signal_reward is not None:
            rel = self.env.reward_relevance()
        else:
            feats = obs if obs.shape[-1] == self.env.feature_dim else obs[..., : self.env.feature_dim]
            rel = discriminator_relevance(self.discriminator, feats, self.env.domain)
        return rel.masked_fill(~mask, float("inf")).argmin(dim=-1)


class GroundTruthRefiner(_Stateless):
    """``ground-truth``: removes exactly the rows the data marks ``is_negative`` (the upper bound of refinement)."""

    def refine(self, features: Tensor, is_negative: Tensor | None = None) -> RefinementResult:
        if is_negative is None:
            raise ValueError(
                "refinement.policy = 'ground-truth' needs data whose items carry 'is_negative' (planted negatives); "
                "this batch has none"
            )
        negative = is_negative.to(features.device, torch.bool).reshape(-1)
        keep = ~negative
        n = int(negative.sum())
        return RefinementResult(keep=keep, mean_reward=0.0, removed=n, negatives_removed=n, negatives_present=n)
