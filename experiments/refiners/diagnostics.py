"""What an agent's choices say about refinement: per-step diagnostics computed on the batch at hand.

All functions take tensors of one half-batch's candidate sets (``S`` sets of ``n_c`` rows) and
return plain floats, or None where a quantity is undefined for the batch (no planted negatives, an
empty replay); the co-training loop logs them per agent as ``diag/NAME/modality/domain``
(docs/results-refinement.md explains each). They draw no random numbers, so switching them on
never changes a run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from mmir_env.reward import row_rewards
from mmir_env.signals import SignalInputs, negative_auc, resolve_signal


def auc(positive: Tensor, negative: Tensor) -> float | None:
    """P(a positive scores above a negative), ties counted half (Mann-Whitney); None when a side is empty."""
    positive, negative = positive.reshape(-1).float(), negative.reshape(-1).float()
    if positive.numel() == 0 or negative.numel() == 0:
        return None
    diff = positive.unsqueeze(1) - negative.unsqueeze(0)
    return float((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean())


def domain_auc(p_target_source: Tensor, p_target_target: Tensor) -> float | None:
    """AUC of a domain classifier on a batch: target rows should score a higher P(target) than source rows."""
    return auc(p_target_target, p_target_source)


def set_diagnostics(
    relevance: Tensor,
    selectable: Tensor,
    greedy: Tensor | None,
    selected: Tensor,
    is_negative: Tensor | None,
    reward: str,
    tau: float | Tensor,
) -> dict[str, float]:
    """Diagnostics of one half-batch's candidate sets before the agent's first selection.

    :param relevance: ``[S, n_c]`` relevance of every row as the reward sees it: eq. 3 under the reward's
        relevance model, or the ``env.reward_signals`` combination.
    :param selectable: ``[S, n_c]`` rows that could be selected.
    :param greedy: ``[S]`` the agent's greedy choice (no exploration), or None for a policy without one.
    :param selected: ``[S, n_c]`` rows the agent actually selected (over all ``E`` selections).
    :param is_negative: ``[S, n_c]`` planted ground truth, or None.
    :param reward: the env's reward kind; ``tau`` its threshold (the env's ``reward_threshold``).

    Returns ``spread`` (mean max-min relevance within a set), ``uniform_reward`` (share of sets
    whose selectable rows would all earn a reward of one sign: the agent cannot learn from them),
    ``agreement`` (greedy choice = the set's least relevant row) with ``agreement_chance``,
    ``greedy_reward`` and ``random_reward`` (the mean reward of the greedy and of a uniform pick),
    and with ground truth ``precision`` / ``recall`` of the selected rows against the planted
    negatives beside their chance levels (the base rate; the selection rate) and
    ``negative_auc`` (P(a negative is rated less relevant than a clean row); 0.5 is chance).
    """
    relevance, selectable, selected = relevance.float(), selectable.bool(), selected.bool()
    count = selectable.sum(-1).clamp(min=1)
    inf = torch.full_like(relevance, float("inf"))
    high = torch.where(selectable, relevance, -inf).amax(-1)
    low = torch.where(selectable, relevance, inf).amin(-1)
    rewards = row_rewards(reward, relevance, selectable, tau)
    signs = torch.sign(rewards)
    same = ((signs == signs.amax(-1, keepdim=True)) | ~selectable).all(-1) & (
        (signs == signs.amin(-1, keepdim=True)) | ~selectable
    ).all(-1)
    out = {
        "spread": float((high - low).mean()),
        "uniform_reward": float(same.float().mean()),
        "agreement_chance": float((1.0 / count).mean()),
        "random_reward": float(((rewards * selectable).sum(-1) / count).mean()),
    }
    if greedy is not None:
        argmin = torch.where(selectable, relevance, inf).argmin(-1)
        greedy = greedy.reshape(-1).long().to(relevance.device)
        out["agreement"] = float((greedy == argmin).float().mean())
        out["greedy_reward"] = float(rewards.gather(-1, greedy.unsqueeze(-1)).mean())
    if is_negative is not None:
        negative = is_negative.bool().to(relevance.device)
        hits = int((selected & negative).sum())
        n_selected, n_negative, rows = int(selected.sum()), int(negative.sum()), negative.numel()
        out["precision_chance"] = n_negative / rows
        out["recall_chance"] = n_selected / rows
        if n_selected:
            out["precision"] = hits / n_selected
        if n_negative:
            out["recall"] = hits / n_negative
        negative_auc = auc(-relevance[negative & selectable], -relevance[~negative & selectable])
        if negative_auc is not None:
            out["negative_auc"] = negative_auc
    return out


@torch.no_grad()
def signal_aucs(
    names: Iterable[str],
    inputs: SignalInputs,
    is_negative: Tensor,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, float]:
    """``auc/NAME``: how well each signal sees the planted negatives of the candidate sets ``inputs``.

    :func:`~mmir_env.signals.negative_auc` of the signal's relevance over all (negative, clean) pairs
    of the batch's rows, as ``negative_auc`` of :func:`set_diagnostics`; a batch without both kinds
    of row gives none. ``options``: ``{signal: {option: value}}`` (the env's ``signal_options``).
    """
    options = options or {}
    out: dict[str, float] = {}
    for name in names:
        value = negative_auc(resolve_signal(name)(inputs, **options.get(name, {})), is_negative)
        if not math.isnan(value):
            out[f"auc/{name}"] = value
    return out


def staleness(stored: Tensor, current: Tensor) -> float:
    """Share of replayed rewards whose sign the relevance model as it is now would flip."""
    return float((torch.sign(stored.float()) != torch.sign(current.float())).float().mean())
