"""Eq. 1: cross-entropy of the fused logits on labelled source clips (stages 1 and 2)."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

from experiments.objectives import Objective, ObjectiveContext, StepOutputs


def classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Eq. 1: cross-entropy of the fused logits on labelled source clips."""
    return F.cross_entropy(logits, labels)


class ClassificationObjective(Objective):
    stages = (1, 2)

    def __init__(self, context: ObjectiveContext) -> None:
        super().__init__()

    def forward(self, outputs: StepOutputs) -> dict[str, Tensor]:
        return {"cls": classification_loss(outputs.source_logits, outputs.labels)}
