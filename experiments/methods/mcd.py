"""Maximum Classifier Discrepancy.

Saito, Watanabe, Ushiku, Harada. "Maximum Classifier Discrepancy for Unsupervised Domain
Adaptation", CVPR 2018. A feature generator G and two classifiers C1, C2. Each batch takes three
steps: (A) G, C1, C2 learn the labelled source; (B) with G fixed, C1 and C2 keep the source loss
and *maximise* their discrepancy on target features; (C) with C1, C2 fixed, G *minimises* that
discrepancy ``k`` times. The discrepancy is the mean absolute difference of the two softmax outputs.

For a multi-modal model C1 is the model's own heads ``C^k`` with late fusion (eq. 1) and C2 a second
set of heads of the same shape; the discrepancy is taken on the fused outputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def classifier_discrepancy(logits_1: Tensor, logits_2: Tensor) -> Tensor:
    """``mean |softmax(p1) - softmax(p2)|`` over the batch and the classes (Saito et al., eq. 1)."""
    return (F.softmax(logits_1, dim=1) - F.softmax(logits_2, dim=1)).abs().mean()


def second_heads(model: nn.Module, dropout: float) -> nn.ModuleDict:
    """C2: one ``Dropout -> Linear(d_k, classes)`` head per modality, like the model's own."""
    return nn.ModuleDict(
        {m: nn.Sequential(nn.Dropout(dropout), nn.Linear(d, model.num_classes)) for m, d in model.feature_dims.items()}
    )


def fused_logits(heads: nn.ModuleDict, features: Mapping[str, Tensor], fusion: str = "sum") -> Tensor:
    """Late fusion of ``heads`` over modalities (eq. 1)."""
    logits = torch.stack([heads[m](f) for m, f in features.items()]).sum(0)
    return logits / len(features) if fusion == "mean" else logits


def mcd_losses(
    model: nn.Module,
    heads_2: nn.ModuleDict,
    f_src: Mapping[str, Tensor],
    labels: Tensor,
    f_tgt: Mapping[str, Tensor] | None,
) -> tuple[Tensor, Tensor]:
    """Source cross-entropy of both classifiers, and their discrepancy on target features (0 without them)."""
    fusion = getattr(model, "fusion", "sum")
    cls = F.cross_entropy(model.classify(f_src).logits, labels) + F.cross_entropy(
        fused_logits(heads_2, f_src, fusion), labels
    )
    if f_tgt is None:
        return cls, torch.zeros((), device=labels.device)
    disc = classifier_discrepancy(model.classify(f_tgt).logits, fused_logits(heads_2, f_tgt, fusion))
    return cls, disc
