"""A relevance critic per modality: a domain classifier on detached features, trained on every row.

The GRL discriminator ``D^k`` is what the features are trained to fool, and it never sees the rows
the refiners removed, so as a relevance model for rewards it moves with the features and against
the agents' choices (measured: docs/results-refinement.md). The critic is a plain BCE domain classifier of the
same shape on *detached* features of both halves, all rows included: it does not shape the backbone
and is not steered by the removals. With ``refinement.relevance = "critic"`` the refiners score
relevance (eq. 3) with it while ``D^k`` keeps aligning the kept rows (eq. 8).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from experiments.objectives import Objective, ObjectiveContext, StepOutputs
from features.domain_discriminator import DomainDiscriminator


class RelevanceCriticObjective(Objective):
    """Term ``critic``: BCE of each modality's critic on all rows (source 0, target 1), features detached."""

    def __init__(self, context: ObjectiveContext) -> None:
        super().__init__()
        d = context.config.discriminator
        self.critics = nn.ModuleDict(
            {
                m: DomainDiscriminator(context.feature_dims[m], d.hidden_dim, negative_slope=d.negative_slope)
                for m in context.modalities
            }
        )

    def forward(self, outputs: StepOutputs) -> dict[str, Tensor]:
        assert outputs.target_features is not None
        total = torch.zeros((), device=outputs.labels.device)
        for m in outputs.modalities:
            src, tgt = outputs.source_features[m].detach(), outputs.target_features[m].detach()
            logits = self.critics[m](torch.cat([src, tgt])).reshape(-1)
            labels = torch.cat(
                [torch.zeros(src.shape[0], device=logits.device), torch.ones(tgt.shape[0], device=logits.device)]
            )
            total = total + F.binary_cross_entropy_with_logits(logits.float(), labels)
        return {"critic": total}
