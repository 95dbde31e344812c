"""Small temporal convolution encoders for wearable-sensor windows: the role I3D plays for video.

One :class:`TemporalConvEncoder` per modality (accelerometer, gyroscope) maps a window
``[B, C, T]`` to features ``[B, d]``: ``len(channels)`` blocks of Conv1d (kernel 5, same padding,
no bias) + BatchNorm + ReLU, each block but the last followed by max-pooling by 2, then global average
pooling over time. With ``width = 1`` the blocks have 32, 64, 128 channels (d = 128; about 52k
parameters for 3 input channels). :func:`sensor_two_stream` puts one per modality into a
:class:`~features.two_stream.TwoStream` (what ``model.backbone = "temporal-conv"`` builds) and
:func:`load_encoder_state` loads a saved encoder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from features.two_stream import TwoStream

__all__ = ["BASE_CHANNELS", "SENSOR_CHANNELS", "TemporalConvEncoder", "load_encoder_state", "sensor_two_stream"]

#: Channels of the conv blocks at ``width = 1``.
BASE_CHANNELS: tuple[int, ...] = (32, 64, 128)
#: Input channels of the known sensor modalities.
SENSOR_CHANNELS: dict[str, int] = {"acc": 3, "gyro": 3}


class TemporalConvEncoder(nn.Module):
    """Conv1d-BN-ReLU blocks and global average pooling: ``[B, in_channels, T]`` -> ``[B, feature_dim]``.

    :param in_channels: channels of the input window (3 for a tri-axial sensor).
    :param width: multiplier of :data:`BASE_CHANNELS` (each block keeps at least 4 channels).
    :param kernel_size: temporal kernel of every conv (odd; same padding).
    :param channels: explicit block channels (overrides ``width``).
    """

    def __init__(
        self, in_channels: int = 3, width: float = 1.0, kernel_size: int = 5, channels: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        chans = list(channels) if channels is not None else [max(4, round(c * width)) for c in BASE_CHANNELS]
        if not chans or min(chans) < 1:
            raise ValueError(f"channels must be a non-empty list of positive ints, got {chans}")
        layers: list[nn.Module] = []
        prev = in_channels
        for i, c in enumerate(chans):
            layers += [
                nn.Conv1d(prev, c, kernel_size, padding=kernel_size // 2, bias=False),
                nn.BatchNorm1d(c),
                nn.ReLU(inplace=True),
            ]
            if i < len(chans) - 1:
                layers.append(nn.MaxPool1d(2, ceil_mode=True))
            prev = c
        self.in_channels = in_channels
        self.features = nn.Sequential(*layers)
        self.feature_dim: int = chans[-1]

    def extract_features(self, x: Tensor) -> Tensor:
        """``[B, in_channels, T]`` -> ``[B, feature_dim]`` (time-averaged last block)."""
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected a window batch [B, {self.in_channels}, T], got {tuple(x.shape)}")
        return self.features(x).mean(dim=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.extract_features(x)


def sensor_two_stream(
    modalities: Sequence[str],
    num_classes: int,
    *,
    width: float = 1.0,
    dropout: float = 0.5,
    fusion: str = "sum",
) -> TwoStream:
    """One freshly initialised :class:`TemporalConvEncoder` of ``width`` per modality, in a :class:`TwoStream`.

    :param modalities: sensor modalities, keys of :data:`SENSOR_CHANNELS` (``"acc"``, ``"gyro"``).
    :param num_classes: classes of every head.
    """
    unknown = [name for name in modalities if name not in SENSOR_CHANNELS]
    if unknown:
        raise ValueError(f"temporal-conv modalities are {sorted(SENSOR_CHANNELS)}, got {unknown}")
    backbones: dict[str, nn.Module] = {
        name: TemporalConvEncoder(SENSOR_CHANNELS[name], width=width) for name in modalities
    }
    return TwoStream(backbones, num_classes, dropout=dropout, fusion=fusion)  # type: ignore[arg-type]


def load_encoder_state(encoder: nn.Module, path: str | os.PathLike[str], what: str = "encoder checkpoint") -> None:
    """Load ``torch.save(encoder.state_dict(), path)`` into ``encoder`` (``strict=True``, no unpickling).

    :param what: how error messages name the file's origin (a config passes its key).
    :raises FileNotFoundError: no file at ``path``.
    :raises ValueError: the file holds no state dict, or one that does not fit ``encoder``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: no file at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{what}: {path} does not hold a state_dict")
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{what}: {path} does not fit a temporal-conv encoder of this width: {err}") from err
