"""Eq. 8: per-modality domain-adversarial loss through a gradient reversal layer, on the kept rows only.

As tllib's ``DomainAdversarialLoss`` the gradient reversal belongs to the loss, not to the
discriminator: the refinement env scores rows with the same discriminator without it. Rows a
refiner removed get no gradient (weights 0, as tllib's ``w_s``/``w_t``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from experiments.losses import adversarial_loss, grl_coefficient
from experiments.objectives import Objective, ObjectiveContext, StepOutputs


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
