"""The loss terms of co-training (paper eq. 1, 8) and MM-SADA's optional correspondence term."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmir_env.discriminator import grad_reverse
from mmir_env.domains import SOURCE, TARGET


def classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Eq. 1: cross-entropy of the fused logits on labelled source clips."""
    return F.cross_entropy(logits, labels)


def adversarial_loss(
    discriminator: nn.Module,
    source: Tensor,
    target: Tensor,
    keep_source: Tensor,
    keep_target: Tensor,
    grl_coeff: float = 1.0,
) -> Tensor:
    """Eq. 8 for one modality, on the *kept* instances only (removed rows get no gradient).

    ``source: [B_s, d]``, ``target: [B_t, d]``; ``keep_*`` are bool masks of the rows the agents
    left in. The features pass a gradient reversal layer (lambda ``grl_coeff``) and the
    discriminator scores all rows in one forward; the binary cross-entropy averages over the kept
    rows of both domains.
    """
    logits = discriminator(grad_reverse(torch.cat([source, target]), grl_coeff))
    labels = torch.cat(
        [
            torch.full((source.shape[0],), float(SOURCE), device=logits.device),
            torch.full((target.shape[0],), float(TARGET), device=logits.device),
        ]
    )
    keep = torch.cat([keep_source, keep_target]).to(logits.device)
    per_row = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (per_row * keep).sum() / keep.sum().clamp_min(1)


class CorrespondenceHead(nn.Module):
    """MM-SADA's self-supervised head: do these RGB and flow features come from the same clip?

    Positives are aligned pairs; negatives pair each clip's first-modality features with another
    clip's second-modality features (a roll by one within the batch).
    """

    def __init__(self, feature_dims: list[int], hidden_dim: int = 100) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(sum(feature_dims), hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))

    def forward(self, features: list[Tensor]) -> Tensor:
        """Binary cross-entropy over aligned and shuffled pairs of ``features`` (one tensor per modality)."""
        aligned = torch.cat(features, dim=1)
        shuffled = torch.cat([features[0], *(f.roll(1, dims=0) for f in features[1:])], dim=1)
        logits = self.net(torch.cat([aligned, shuffled])).squeeze(-1)
        labels = torch.cat([torch.ones(aligned.shape[0]), torch.zeros(shuffled.shape[0])]).to(logits.device)
        return F.binary_cross_entropy_with_logits(logits, labels)


def grl_coefficient(schedule: str, scale: float, progress: float) -> float:
    """GRL lambda: ``"constant"`` (scale) or DANN's ramp ``(2 / (1 + exp(-10 p)) - 1) * scale``."""
    if schedule == "constant":
        return float(scale)
    if schedule == "dann":
        return float((2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0) * scale)
    raise ValueError(f"grl schedule must be 'constant' or 'dann', got {schedule!r}")
