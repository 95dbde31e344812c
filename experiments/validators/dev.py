"""Deep Embedded Validation (``dev``): the source validation loss reweighted to the target, with a control variate.

You, Wang, Long and Jordan, "Towards Accurate Model Selection in Deep Unsupervised Domain
Adaptation", ICML 2019. Under covariate shift the target risk is the source risk weighted by the
density ratio ``w(x) = p_t(x) / p_s(x)``. DEV estimates ``w`` with a domain classifier on the
model's features and, since importance weighting has a large variance, adds the control variate
``eta (mean(w) - 1)`` (``E[w] = 1`` under the source):

    L_i = w_i l_i,    eta = -Cov(L, w) / Var(w),    R_DEV = mean(L) + eta mean(w) - eta

``l_i`` is row ``i``'s cross-entropy loss; Cov and Var are the unbiased sample estimates. The
validator returns ``-R_DEV`` (higher is better).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from experiments.validators.inputs import ValidationInputs, log_probabilities

__all__ = ["deep_embedded_validation", "dev_risk", "domain_importance_weights"]

# log-ratios beyond this are clamped: a perfectly separated row would otherwise get an infinite weight
_MAX_LOG_RATIO = 20.0


def dev_risk(weights: Tensor, losses: Tensor) -> Tensor:
    """``R_DEV`` of per-row ``losses`` under importance ``weights`` (module docstring); a 0-d float64 tensor.

    Equal weights carry no information on the shift (``Var(w) = 0``): ``eta`` is then 0 and the
    risk is ``mean(w l)``, which for ``w = 1`` is the plain source loss.
    """
    w, loss = weights.detach().double().flatten(), losses.detach().double().flatten()
    if w.shape != loss.shape or w.numel() == 0:
        raise ValueError(f"dev needs as many weights as losses (>= 1), got {w.numel()} and {loss.numel()}")
    weighted = w * loss
    if w.numel() < 2:
        return weighted.mean()
    variance = w.var()
    covariance = ((weighted - weighted.mean()) * (w - w.mean())).sum() / (w.numel() - 1)
    eta = -covariance / variance if variance > 1e-12 else torch.zeros((), dtype=w.dtype)
    return weighted.mean() + eta * w.mean() - eta


def domain_importance_weights(
    source: Tensor, target: Tensor, seed: int = 0, folds: int = 2, l2: float = 1e-2, max_iter: int = 100
) -> Tensor:
    """``w_i = (n_s / n_t) P(target | x_i) / P(source | x_i)`` for each source row ``x_i`` (``[Ns]``, float64).

    The domain classifier is a logistic regression in torch on standardised features (target = 1,
    source = 0), full-batch L-BFGS from zero with an L2 penalty ``l2 / 2 ||w||^2`` (features often
    outnumber rows, and separable domains would drive an unpenalised fit to infinite weights).
    Cross-fitted: rows are split into ``folds`` seeded folds and a source row is scored by the
    classifier trained on the other folds, as DEV scores validation rows with a classifier trained
    on other rows; with fewer than ``2 * folds`` rows in a domain one classifier is trained on
    everything. ``n_s / n_t`` is the class ratio of the rows each classifier was trained on.
    Deterministic given ``seed``.
    """
    source, target = source.detach().double().flatten(1), target.detach().double().flatten(1)
    if source.shape[1] != target.shape[1]:
        raise ValueError(f"source and target features differ in width: {source.shape[1]} vs {target.shape[1]}")
    n_s, n_t = source.shape[0], target.shape[0]
    if min(n_s, n_t) < 2 * folds:
        folds = 1
    generator = torch.Generator().manual_seed(seed)
    source_fold = torch.empty(n_s, dtype=torch.long)
    source_fold[torch.randperm(n_s, generator=generator)] = torch.arange(n_s) % folds
    target_fold = torch.empty(n_t, dtype=torch.long)
    target_fold[torch.randperm(n_t, generator=generator)] = torch.arange(n_t) % folds
    log_ratio = torch.empty(n_s, dtype=torch.float64)
    for k in range(folds):  # a handful of folds, each one batched fit
        train_s = source[source_fold != k] if folds > 1 else source
        train_t = target[target_fold != k] if folds > 1 else target
        scored = source_fold == k if folds > 1 else torch.ones(n_s, dtype=torch.bool)
        logits = _logistic_regression(train_s, train_t, source[scored], l2, max_iter)
        log_ratio[scored] = logits.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO) + math.log(len(train_s) / len(train_t))
    return log_ratio.exp()


def _logistic_regression(source: Tensor, target: Tensor, scored: Tensor, l2: float, max_iter: int) -> Tensor:
    """Fit ``P(target | x) = sigmoid(a . x + b)`` on ``source`` (0) and ``target`` (1); the logits of ``scored``."""
    x = torch.cat([source, target])
    y = torch.cat([torch.zeros(len(source)), torch.ones(len(target))]).double()
    mean, std = x.mean(0), x.std(0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))  # a constant feature carries nothing: leave it at 0
    x = (x - mean) / std
    a = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([a, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ a + b, y) + 0.5 * l2 * a.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():  # evaluation runs under no_grad
        optimizer.step(closure)
    with torch.no_grad():
        return ((scored - mean) / std) @ a + b


def deep_embedded_validation(inputs: ValidationInputs) -> float:
    """``dev``: ``-R_DEV`` of the source validation rows' cross-entropy (module docstring; higher is better).

    Weights: ``inputs.dev_weights`` when given, else :func:`domain_importance_weights` on
    ``inputs.source_features`` and ``inputs.target_features`` seeded by ``inputs.seed``.
    """
    if inputs.source_labels.numel() == 0:
        raise ValueError("dev needs source validation rows, got none")
    labels = inputs.source_labels.long().to(inputs.source_logits.device)
    losses = -log_probabilities(inputs.source_logits).gather(1, labels[:, None])[:, 0]
    if inputs.dev_weights is not None:
        weights = inputs.dev_weights
    else:
        source, target = inputs.features()
        weights = domain_importance_weights(source.cpu(), target.cpu(), seed=inputs.seed)
    return -float(dev_risk(weights.cpu(), losses.cpu()))
