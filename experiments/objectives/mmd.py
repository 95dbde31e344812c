"""DAN: multi-kernel MMD between the halves' features, per modality (Long et al., ICML 2015)."""

from __future__ import annotations

import torch
from torch import Tensor

from experiments.methods.mmd import mk_mmd
from experiments.objectives import Objective, ObjectiveContext, StepOutputs


class MMDObjective(Objective):
    def __init__(self, context: ObjectiveContext) -> None:
        super().__init__()

    def forward(self, outputs: StepOutputs) -> dict[str, Tensor]:
        assert outputs.target_features is not None
        total = torch.zeros((), device=outputs.labels.device)
        for m in outputs.modalities:
            total = total + mk_mmd(outputs.source_features[m].float(), outputs.target_features[m].float())
        return {"mmd": total}
