"""Two-stream (multi-modal) action model: one backbone ``F^k`` and one classifier ``C^k`` per modality,
late fusion by summing logits (paper eq. 1).

The model is modality-agnostic: it takes a mapping ``modality name -> backbone``, so RGB and flow
I3Ds, or any other backbone (e.g. a wearable-sensor encoder) plug in the same way. A backbone is an
``nn.Module`` that maps its input to ``[B, d_k]`` features, through ``extract_features(x)`` when it has
one (as :class:`~features.i3d.InceptionI3d`) or else its ``forward``; ``d_k`` is its ``feature_dim``
attribute unless given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
from torch import Tensor

from features.i3d import MODALITY_CHANNELS, InceptionI3d, PoolKind

__all__ = ["TwoStream", "TwoStreamOutput"]


@dataclass
class TwoStreamOutput:
    """What one forward pass gives the training loop.

    :ivar logits: fused class scores ``[B, num_classes]`` (eq. 1: sum over modalities).
    :ivar modality_logits: ``C^k(f^k)`` per modality, ``[B, num_classes]`` each.
    :ivar features: ``f^k`` per modality, ``[B, d_k]`` each (for discriminators ``D^k`` and agents).
    """

    logits: Tensor
    modality_logits: dict[str, Tensor]
    features: dict[str, Tensor]


class TwoStream(nn.Module):
    """Per-modality backbones ``F^k`` and heads ``C^k`` with late fusion (paper eq. 1).

    :param backbones: modality name -> backbone module (order = modality order).
    :param num_classes: classes of every head ``C^k`` (8 verbs on EPIC).
    :param dropout: dropout before each head (0.5, as the I3D logits layer of MM-SADA).
    :param fusion: ``"sum"`` of modality logits (the paper, default) or ``"mean"`` (the released
        code's training-time choice; same argmax, a different scale for the loss).
    :param feature_dims: ``d_k`` per modality where a backbone has no ``feature_dim`` attribute.
    """

    def __init__(
        self,
        backbones: Mapping[str, nn.Module],
        num_classes: int,
        *,
        dropout: float = 0.5,
        fusion: Literal["sum", "mean"] = "sum",
        feature_dims: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        if not backbones:
            raise ValueError("backbones must name at least one modality")
        if fusion not in ("sum", "mean"):
            raise ValueError(f"fusion must be 'sum' or 'mean', got {fusion!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        dims: dict[str, int] = {}
        for name, backbone in backbones.items():
            given = (feature_dims or {}).get(name, getattr(backbone, "feature_dim", None))
            if not isinstance(given, int) or given < 1:
                raise ValueError(
                    f"backbone {name!r} ({type(backbone).__name__}) has no int feature_dim: pass feature_dims={{{name!r}: d}}"
                )
            dims[name] = given
        self.modalities: tuple[str, ...] = tuple(backbones)
        self.num_classes = int(num_classes)
        self.fusion = fusion
        self.feature_dims = dims
        self.backbones = nn.ModuleDict(dict(backbones))
        self.heads = nn.ModuleDict(
            {name: nn.Sequential(nn.Dropout(dropout), nn.Linear(dims[name], num_classes)) for name in self.modalities}
        )

    @classmethod
    def i3d(
        cls,
        num_classes: int,
        modalities: Sequence[str] = ("rgb", "flow"),
        *,
        width: float = 1.0,
        checkpoints: Mapping[str, str | os.PathLike[str]] | None = None,
        pool: PoolKind = "native",
        **kwargs: object,
    ) -> TwoStream:
        """RGB/flow I3D backbones (random init, or pytorch-i3d ``checkpoints`` per modality).

        The backbones' own Kinetics ``logits`` layers are frozen (``requires_grad=False``): the
        heads ``C^k`` classify, and frozen unused parameters keep DDP from complaining. ``pool``
        chooses the backbones' max-pool kernels (:meth:`features.i3d.InceptionI3d.set_pool`).
        """
        backbones: dict[str, nn.Module] = {}
        for name in modalities:
            if name not in MODALITY_CHANNELS:
                raise ValueError(f"I3D modalities are {sorted(MODALITY_CHANNELS)}, got {name!r}")
            path = (checkpoints or {}).get(name)
            if path is not None:
                backbone = InceptionI3d.from_checkpoint(path, name, width=width, pool=pool)  # type: ignore[arg-type]
            else:
                backbone = InceptionI3d(in_channels=MODALITY_CHANNELS[name], width=width, pool=pool)
            backbone.logits.requires_grad_(False)
            backbones[name] = backbone
        return cls(backbones, num_classes, **kwargs)  # type: ignore[arg-type]

    def _check(self, inputs: Mapping[str, Tensor]) -> None:
        missing = [m for m in self.modalities if m not in inputs]
        if missing:
            raise KeyError(f"TwoStream inputs lack modalities {missing}; got {sorted(inputs)}")

    def extract_features(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``f^k = F^k(x^k)`` per modality, ``[B, d_k]``."""
        self._check(inputs)
        out: dict[str, Tensor] = {}
        for name in self.modalities:
            backbone = self.backbones[name]
            x = inputs[name]
            f = backbone.extract_features(x) if hasattr(backbone, "extract_features") else backbone(x)
            if f.dim() != 2 or f.shape[1] != self.feature_dims[name]:
                raise ValueError(
                    f"backbone {name!r} returned features {tuple(f.shape)}, expected [B, {self.feature_dims[name]}]"
                )
            out[name] = f
        return out

    def classify(self, features: Mapping[str, Tensor]) -> TwoStreamOutput:
        """Heads ``C^k`` and late fusion on given features (e.g. after instance refinement)."""
        self._check(features)
        per = {name: self.heads[name](features[name]) for name in self.modalities}
        fused = torch.stack(list(per.values())).sum(0)
        if self.fusion == "mean":
            fused = fused / len(per)
        return TwoStreamOutput(logits=fused, modality_logits=per, features=dict(features))

    def forward(self, inputs: Mapping[str, Tensor]) -> TwoStreamOutput:
        """``inputs``: modality -> clip batch (e.g. ``rgb`` ``[B, 3, T, H, W]``, ``flow`` ``[B, 2, T, H, W]``)."""
        return self.classify(self.extract_features(inputs))
