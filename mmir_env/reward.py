"""Relevance (eq. 3) and the refinement rewards, vectorised over any leading shape.

``threshold`` is the paper's eq. 4 (+1 below ``tau``, else -1); ``rank`` rewards the set's least
relevant row; ``margin`` is ``tau - relevance``, which keeps eq. 4's sign and says by how much.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from mmir_env.domains import SOURCE, TARGET

RewardKind = Literal["threshold", "rank", "margin"]
REWARD_KINDS: tuple[str, ...] = ("threshold", "rank", "margin")


def check_tau(tau: float, name: str = "tau") -> float:
    """Validate a relevance threshold: a float strictly inside (0, 1)."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)):
        raise TypeError(f"{name} must be a float in (0, 1), got {type(tau).__name__}")
    if not 0.0 < float(tau) < 1.0:
        raise ValueError(f"{name} must lie strictly inside (0, 1), got {tau}")
    return float(tau)


def relevance(logits: Tensor, domain: int | Tensor) -> Tensor:
    """Eq. 3: relevance of a sample to the *opposite* domain.

    ``sigmoid(D(f))`` for a source sample (domain 0), ``1 - sigmoid(D(f))`` for a target sample
    (domain 1). ``domain`` is an int or a tensor broadcastable against ``logits``.
    """
    p_target = torch.sigmoid(logits)
    if isinstance(domain, Tensor):
        is_target = domain.to(device=logits.device, dtype=torch.bool)
        return torch.where(is_target, 1.0 - p_target, p_target)
    if domain == SOURCE:
        return p_target
    if domain == TARGET:
        return 1.0 - p_target
    raise ValueError(f"domain must be {SOURCE} (source) or {TARGET} (target), got {domain!r}")


def refinement_reward(relevance: Tensor, tau: float | Tensor = 0.5) -> Tensor:
    """Eq. 4: +1 where ``relevance < tau`` (a negative sample was selected out), else -1."""
    if not isinstance(tau, Tensor):
        check_tau(tau)
    one = torch.ones((), dtype=relevance.dtype, device=relevance.device)
    return torch.where(relevance < tau, one, -one)


def rank_reward(relevance: Tensor, action: Tensor, selectable: Tensor) -> Tensor:
    """+1 where the chosen row has the lowest relevance among the rows still selectable, else -1.

    ``relevance: [..., n_c]``, ``action: [...]`` (int64), ``selectable: [..., n_c]`` bool mask of the
    rows available *before* this selection. Ties count as lowest.
    """
    masked = relevance.masked_fill(~selectable, float("inf"))
    chosen = masked.gather(-1, action.unsqueeze(-1)).squeeze(-1)
    lowest = masked.amin(dim=-1)
    one = torch.ones((), dtype=relevance.dtype, device=relevance.device)
    return torch.where(chosen <= lowest, one, -one)


def margin_reward(relevance: Tensor, tau: float | Tensor = 0.5) -> Tensor:
    """``tau - relevance``: eq. 4's sign with its size, so a row just under the threshold earns little."""
    if not isinstance(tau, Tensor):
        check_tau(tau)
    return tau - relevance


def row_rewards(kind: str, relevance_rows: Tensor, selectable: Tensor, tau: float | Tensor) -> Tensor:
    """The reward each row ``[..., n_c]`` would earn if it were the one selected (rows not selectable: -1).

    What an agent's choice is compared against in diagnostics: the greedy oracle's reward, a random
    pick's, and whether a set's rows are told apart at all.
    """
    if kind == "threshold":
        rewards = refinement_reward(relevance_rows, tau)
    elif kind == "margin":
        rewards = margin_reward(relevance_rows, tau)
    elif kind == "rank":
        lowest = relevance_rows.masked_fill(~selectable, float("inf")).amin(dim=-1, keepdim=True)
        one = torch.ones((), dtype=relevance_rows.dtype, device=relevance_rows.device)
        rewards = torch.where(relevance_rows <= lowest, one, -one)
    else:
        raise ValueError(f"reward must be one of {REWARD_KINDS}, got {kind!r}")
    return torch.where(selectable, rewards, torch.full_like(rewards, -1.0))


def compute_reward(
    kind: str,
    relevance_rows: Tensor,
    action: Tensor,
    selectable: Tensor,
    tau: float | Tensor,
) -> Tensor:
    """Reward of selecting ``action`` from rows with ``relevance_rows: [..., n_c]`` under ``kind``.

    ``tau`` is a float in (0, 1) (eq. 4), or a tensor, which skips that check: the threshold of a
    standardised signal combination is 0 (:class:`~mmir_env.signals.SignalReward`).
    """
    if kind == "threshold":
        chosen = relevance_rows.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        return refinement_reward(chosen, tau)
    if kind == "margin":
        chosen = relevance_rows.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        return margin_reward(chosen, tau)
    if kind == "rank":
        return rank_reward(relevance_rows, action, selectable)
    raise ValueError(f"reward must be one of {REWARD_KINDS}, got {kind!r}")
