"""Adapters that turn a backbone into the ``clips -> [B, d]`` callable :mod:`features.extract` expects.

:class:`FeatureBackbone` wraps any module with an ``extract_features(x)`` method (such as
:class:`~features.i3d.InceptionI3d`, whose ``forward`` returns Kinetics logits instead), and also accepts
several windows per clip: an input ``[B, N, C, T, H, W]`` is run as ``B * N`` clips and the features of
each clip's ``N`` windows are averaged (the MM-SADA test protocol of 5 evenly spaced windows per segment,
one feature row per segment).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["FeatureBackbone", "i3d_feature_backbones", "kaiming_reinit"]


class FeatureBackbone(nn.Module):
    """``forward(clips) -> [B, d]`` through ``backbone.extract_features``.

    :param backbone: a module with ``extract_features(x) -> [B, d]`` (else its ``forward`` is used).
    :param chunk: run at most this many clips (windows) per backbone call, bounding peak memory when
        ``N`` windows multiply the batch; ``None`` runs them all at once.
    """

    def __init__(self, backbone: nn.Module, chunk: int | None = None) -> None:
        super().__init__()
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk must be >= 1 or None, got {chunk}")
        self.backbone = backbone
        self.chunk = chunk

    @property
    def feature_dim(self) -> int | None:
        """The wrapped backbone's ``feature_dim`` attribute, if it has one."""
        value = getattr(self.backbone, "feature_dim", None)
        return int(value) if isinstance(value, int) else None

    def _run(self, x: Tensor) -> Tensor:
        fn = getattr(self.backbone, "extract_features", None)
        if self.chunk is None or x.shape[0] <= self.chunk:
            return fn(x) if callable(fn) else self.backbone(x)
        parts = [fn(p) if callable(fn) else self.backbone(p) for p in torch.split(x, self.chunk)]
        return torch.cat(parts)

    def forward(self, clips: Tensor) -> Tensor:
        """``[B, C, T, H, W]`` -> ``[B, d]``; ``[B, N, C, T, H, W]`` -> window-averaged ``[B, d]``."""
        if clips.dim() == 6:
            b, n = clips.shape[:2]
            feats = self._run(clips.reshape(b * n, *clips.shape[2:]))
            if feats.dim() != 2 or feats.shape[0] != b * n:
                raise ValueError(f"backbone returned {tuple(feats.shape)} for {b * n} clips; expected [{b * n}, d]")
            return feats.reshape(b, n, -1).mean(dim=1)
        if clips.dim() != 5:
            raise ValueError(f"clips must be [B, C, T, H, W] or [B, N, C, T, H, W], got shape {tuple(clips.shape)}")
        return self._run(clips)


def i3d_feature_backbones(
    modalities: Sequence[str] = ("rgb", "flow"),
    *,
    width: float = 1.0,
    checkpoints: Mapping[str, str | os.PathLike[str]] | None = None,
    seed: int = 0,
    init: Literal["kaiming", "default"] = "kaiming",
    chunk: int | None = None,
) -> dict[str, FeatureBackbone]:
    """The I3D backbones of :meth:`features.TwoStream.i3d`, wrapped for feature extraction.

    Modalities named in ``checkpoints`` are loaded strictly from pytorch-i3d state dicts
    (:meth:`~features.i3d.InceptionI3d.from_checkpoint`, which raises
    :class:`~features.i3d.CheckpointMismatchError` naming missing/unexpected keys and shapes).
    The others are randomly initialised from ``torch.manual_seed(seed)`` inside a forked RNG state
    (the caller's global RNG is left untouched), so the same seed gives the same weights.

    :param init: weights of the random modalities. ``"kaiming"`` (default) redraws every convolution
        followed by BatchNorm + ReLU from He-normal (fan-in), see :func:`kaiming_reinit`: features
        extracted in eval mode keep an O(1) scale. ``"default"`` keeps PyTorch's default init (that
        of ``TwoStream.i3d``), whose activations shrink ~4x per layer when BatchNorm runs on its
        initial statistics: pooled features ~1e-6, mostly zero once stored as float16.
    """
    from features.two_stream import TwoStream

    if init not in ("kaiming", "default"):
        raise ValueError(f"init must be 'kaiming' or 'default', got {init!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TwoStream.i3d(1, tuple(modalities), width=width, checkpoints=checkpoints)
        if init == "kaiming":
            for name in model.modalities:
                if name not in (checkpoints or {}):
                    kaiming_reinit(model.backbones[name])
    return {name: FeatureBackbone(model.backbones[name], chunk=chunk) for name in model.modalities}


def kaiming_reinit(backbone: nn.Module) -> int:
    """Redraw the weight of every ``Unit3D`` convolution that feeds BatchNorm + ReLU, He-normal (fan-in).

    With BatchNorm at its initial statistics (identity in eval mode) this keeps the activation scale
    roughly constant through the depth of the network. Uses the global torch RNG; returns how many
    convolutions were redrawn.
    """
    from features.i3d import Unit3D

    count = 0
    for module in backbone.modules():
        if isinstance(module, Unit3D) and module.bn is not None and module.activation_fn is not None:
            nn.init.kaiming_normal_(module.conv3d.weight, mode="fan_in", nonlinearity="relu")
            count += 1
    return count
