"""MM-SADA's self-supervised correspondence: do these RGB and flow features come from the same clip?

On the source half in stage 1, on both halves in stage 2 (Munro & Damen, CVPR 2020).
"""

from __future__ import annotations

import torch
from torch import Tensor

from experiments.losses import CorrespondenceHead
from experiments.objectives import Objective, ObjectiveContext, StepOutputs


class CorrespondenceObjective(Objective):
    stages = (1, 2)

    def __init__(self, context: ObjectiveContext) -> None:
        super().__init__()
        if len(context.modalities) < 2:
            raise ValueError("the correspondence objective needs at least two modalities")
        head = context.shared.get("correspondence")
        self.head = (
            head if head is not None else CorrespondenceHead([context.feature_dims[m] for m in context.modalities])
        )

    def forward(self, outputs: StepOutputs) -> dict[str, Tensor]:
        total = torch.zeros((), device=outputs.labels.device)
        halves = [outputs.source_features] + ([outputs.target_features] if outputs.target_features is not None else [])
        for feats in halves:
            total = total + self.head([feats[m] for m in outputs.modalities])
        return {"corr": total}
