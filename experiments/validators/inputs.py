"""What a validator sees: :class:`ValidationInputs`, and the arithmetic several validators share."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ValidationInputs", "log_probabilities", "row_entropy"]


@dataclass
class ValidationInputs:
    """Model outputs on labelled source validation rows and on unlabelled target rows (no target label anywhere).

    :ivar source_logits: fused class scores of the source validation rows, ``[Ns, C]``.
    :ivar source_labels: their labels, ``[Ns]`` (int).
    :ivar target_logits: fused class scores of target rows, ``[Nt, C]`` (the target training split
        as :func:`~experiments.validators.collect.collect_validation_inputs` collects it).
    :ivar source_features: features of the source rows, ``[Ns, d]``: the concatenation of the
        per-modality penultimate features ``f^k`` in the model's modality order (``[f^rgb, f^flow]``),
        i.e. everything the fused classifier sees. ``None`` when no validator needs them.
    :ivar target_features: the same for the target rows, ``[Nt, d]``.
    :ivar dev_weights: importance weights ``p_t(x) / p_s(x)`` of the source rows, ``[Ns]``, for
        ``dev``; ``None``: ``dev`` estimates them with a domain classifier on the features.
    :ivar seed: seeds what a validator draws (``dev``'s cross-fitting folds), so a score is a function of its inputs.
    """

    source_logits: Tensor
    source_labels: Tensor
    target_logits: Tensor
    source_features: Tensor | None = None
    target_features: Tensor | None = None
    dev_weights: Tensor | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("source_logits", "target_logits"):
            value = getattr(self, name)
            if value.dim() != 2:
                raise ValueError(f"{name} must be [rows, classes], got shape {tuple(value.shape)}")
        if self.target_logits.shape[0] == 0:
            raise ValueError("target_logits has no rows: every target validator needs some")
        if self.source_logits.shape[1] != self.target_logits.shape[1]:
            raise ValueError(
                f"source and target logits disagree on the classes: {self.source_logits.shape[1]} vs {self.target_logits.shape[1]}"
            )
        if self.source_labels.shape != self.source_logits.shape[:1]:
            raise ValueError(
                f"source_labels must be [{self.source_logits.shape[0]}], got shape {tuple(self.source_labels.shape)}"
            )
        if self.dev_weights is not None and self.dev_weights.shape != self.source_logits.shape[:1]:
            raise ValueError(
                f"dev_weights must be [{self.source_logits.shape[0]}], got shape {tuple(self.dev_weights.shape)}"
            )

    def features(self) -> tuple[Tensor, Tensor]:
        """``(source_features, target_features)``; :class:`ValueError` when either was not collected."""
        if self.source_features is None or self.target_features is None:
            raise ValueError("this validator needs source_features and target_features; collect them")
        return self.source_features, self.target_features


def log_probabilities(logits: Tensor) -> Tensor:
    """``log softmax`` of ``logits`` in float64: entropies of near one-hot rows stay exact (no ``0 * log 0``)."""
    return torch.log_softmax(logits.detach().double(), dim=1)


def row_entropy(log_p: Tensor) -> Tensor:
    """Shannon entropy (nats) of each row of log-probabilities: ``H(p) = -sum_c p_c log p_c``; ``-inf`` entries count 0."""
    p = log_p.exp()
    return -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(dim=1)
