"""MM-SADA's self-supervised correspondence: do these RGB and flow features come from the same clip?

On the source half in stage 1, on both halves in stage 2 (Munro & Damen, CVPR 2020).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from experiments.objectives import Objective, ObjectiveContext, StepOutputs


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


class CorrespondenceObjective(Objective):
    stages = (1, 2)

    def __init__(self, context: ObjectiveContext) -> None:
        super().__init__()
        if len(context.modalities) < 2:
            raise ValueError("the correspondence objective needs at least two modalities")
        self.head = CorrespondenceHead([context.feature_dims[m] for m in context.modalities])

    def forward(self, outputs: StepOutputs) -> dict[str, Tensor]:
        total = torch.zeros((), device=outputs.labels.device)
        halves = [outputs.source_features] + ([outputs.target_features] if outputs.target_features is not None else [])
        for feats in halves:
            total = total + self.head([feats[m] for m in outputs.modalities])
        return {"corr": total}
