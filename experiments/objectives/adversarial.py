"""Eq. 8: per-modality domain-adversarial loss through a gradient reversal layer, on the kept rows only.

As tllib's ``DomainAdversarialLoss`` the gradient reversal belongs to the loss, not to the
discriminator: the refinement env scores rows with the same discriminator without it. Rows a
refiner removed get no gradient (weights 0, as tllib's ``w_s``/``w_t``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from experiments.objectives import Objective, ObjectiveContext, StepOutputs
from mmir_env.discriminator import grad_reverse
from mmir_env.domains import SOURCE, TARGET


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


def grl_coefficient(schedule: str, scale: float, progress: float) -> float:
    """GRL lambda: ``"constant"`` (scale) or DANN's ramp ``(2 / (1 + exp(-10 p)) - 1) * scale``."""
    if schedule == "constant":
        return float(scale)
    if schedule == "dann":
        return float((2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0) * scale)
    raise ValueError(f"grl schedule must be 'constant' or 'dann', got {schedule!r}")


class AdversarialObjective(Objective):
    def __init__(self, context: ObjectiveContext) -> None:
        super().__init__()
        self.discriminators = context.discriminators  # shared with the refiners (rewards) and snapshots
        d = context.config.discriminator
        self.schedule, self.scale = d.grl_schedule, d.grl_scale

    def forward(self, outputs: StepOutputs) -> dict[str, Tensor]:
        assert outputs.target_features is not None
        coeff = grl_coefficient(self.schedule, self.scale, outputs.progress)
        total = torch.zeros((), device=outputs.labels.device)
        for m in outputs.modalities:
            total = total + adversarial_loss(
                self.discriminators[m],
                outputs.source_features[m],
                outputs.target_features[m],
                outputs.kept(m, "source"),
                outputs.kept(m, "target"),
                grl_coeff=coeff,
            )
        return {"adv": total}
