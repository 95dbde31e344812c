"""Inception-v1 I3D (Carreira & Zisserman, 2017) with the module layout of the PyTorch port ``pytorch-i3d``.

The ``state_dict`` keys, their order and shapes match that port exactly, so its public checkpoints
``rgb_imagenet.pt`` (``in_channels=3``) and ``flow_imagenet.pt`` (``in_channels=2``) load strictly by
name through :meth:`InceptionI3d.from_checkpoint`. Paper section 4.1 uses it as ``F^rgb`` and ``F^flow``.

Faithfulness notes (``tests/data/i3d_state_dict_keys.json`` records the port's facts the tests check):

- TensorFlow "SAME" padding, computed from the input size at run time; when the total padding is odd
  the extra pixel goes at the end (TF convention).
- BatchNorm uses ``eps=1e-3`` and ``momentum=0.01`` (TF's decay 0.99).
- ``logits`` is registered before the end points, so ``logits.*`` come first in the state dict.

Speed: for a stride-1 layer with an odd kernel the SAME padding is always ``(k - 1) / 2`` on both
sides, so it can be handed to the convolution / pooling kernel itself instead of materialising a
padded copy with ``F.pad`` (``fuse_padding=True``, the default; bit-for-bit the same function, see
``tests/test_i3d.py``). Max pools only see ReLU outputs (>= 0), so padding them with ``-inf``
(PyTorch) instead of ``0`` (the port) gives the same maximum. ``fuse_padding=False`` reproduces the
port's per-layer ``F.pad`` and is what ``benchmarks/video_io.py`` measures as the reference.
The strided pools' SAME padding only ever adds one pixel at the end for even sizes (the published
16 x 224 x 224 input), and ``ceil_mode`` gives that last window without a padded copy; a trailing pad
never holds a window's first maximum on non-negative inputs, so outputs and gradients are the
port's bit for bit. Leading padding (odd sizes) stays an ``F.pad``: a zero there would take the
gradient of an all-zero window, an ignored pad would not. Convolution padding that depends on the
input size (``Conv3d_1a_7x7``) stays an ``F.pad`` too: folding it changes nothing in theory, but
oneDNN in torch 2.13 returns a garbage weight gradient for a 7x7x7 stride-2 convolution padded by 3
on a 7-frame input with one thread.
Weights and activations are kept in ``torch.channels_last_3d`` by default (``channels_last=True``):
on CPU that made full-width forward ~3x and forward+backward ~3x faster than contiguous fp32 in
``benchmarks/video_io.py``, and it is the layout cuDNN wants for bf16 on GPU. It changes strides
only, not keys, shapes or values.

GPU kernels (docs/gpu.md). ``pool="separable"`` computes every max pool as a 2-D pool over frames
then a 1-D pool over time (:func:`separable_max_pool3d`), which use PyTorch's channels-last 2-D
pooling kernels instead of the 3-D ones; it is off by default because its gradients differ from
``F.max_pool3d``'s in the last bits (see there). ``bn_as_2d=True`` (default) runs BatchNorm on
``channels_last_3d`` activations as a 2-D channels_last BatchNorm over ``[N, C, T*H, W]`` (a view):
the statistics are the same and on CPU every output, gradient and running statistic is bit for bit
that of ``nn.BatchNorm3d``, while on CUDA it takes the channels-last kernels that 5-D inputs miss.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "END_POINTS",
    "FEATURE_DIM",
    "MODALITY_CHANNELS",
    "POOL_KINDS",
    "ChannelsLastBatchNorm3d",
    "CheckpointMismatchError",
    "InceptionI3d",
    "InceptionModule",
    "MaxPool3dSamePadding",
    "PoolKind",
    "Unit3D",
    "count_parameters",
    "separable_max_pool3d",
]

Triple = tuple[int, int, int]

#: How the I3D's max pools are computed: ``F.max_pool3d`` or :func:`separable_max_pool3d`.
PoolKind = Literal["native", "separable"]
POOL_KINDS: tuple[str, ...] = ("native", "separable")

#: End points in forward order, as named by the published model.
END_POINTS: tuple[str, ...] = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
    "Logits",
)

#: Pooled feature size of the full-width model (``f^k`` in the paper).
FEATURE_DIM = 1024

#: Input channels per modality: RGB frames, and (u, v) optical flow.
MODALITY_CHANNELS: dict[str, int] = {"rgb": 3, "flow": 2}

# Branch widths of each Inception module: (b0, b1a, b1b, b2a, b2b, b3b), from the published model.
_MIXED_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

# Kernel [T, H, W] of the final average pool of the published model (for 16 x 224 x 224 inputs).
_AVG_POOL_KERNEL: Triple = (2, 7, 7)


def _triple(value: int | Sequence[int]) -> Triple:
    if isinstance(value, int):
        return (value, value, value)
    t = tuple(int(v) for v in value)
    if len(t) != 3:
        raise ValueError(f"expected an int or 3 ints, got {value!r}")
    return t  # type: ignore[return-value]


def _same_pad(kernel: Triple, stride: Triple, size: Sequence[int]) -> tuple[int, int, int, int, int, int]:
    """TF SAME padding for input sizes ``(T, H, W)``, as ``F.pad`` wants it (last dim first).

    The odd pixel of an odd total goes at the end, as in TensorFlow.
    """
    pads: list[int] = []
    for k, s, n in zip(reversed(kernel), reversed(stride), reversed(tuple(size))):
        total = max(k - (s if n % s == 0 else n % s), 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)  # type: ignore[return-value]


def _static_pad(kernel: Triple, stride: Triple) -> Triple | None:
    """Symmetric padding equal to SAME for every input size, or None when it depends on the size."""
    if all(s == 1 and k % 2 == 1 for k, s in zip(kernel, stride)):
        return tuple((k - 1) // 2 for k in kernel)  # type: ignore[return-value]
    return None


def _check_pool(pool: str) -> PoolKind:
    if pool not in POOL_KINDS:
        raise ValueError(f"pool must be one of {POOL_KINDS}, got {pool!r}")
    return pool  # type: ignore[return-value]


def _channels_last_3d(x: Tensor) -> bool:
    # Both layouts claim a tensor with C == 1 or T*H*W == 1; the contiguous path is a view then too.
    return x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()


def separable_max_pool3d(
    x: Tensor,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int],
    padding: int | Sequence[int] = 0,
    ceil_mode: bool = False,
) -> Tensor:
    """``F.max_pool3d`` as a 2-D max pool over every frame, then a 1-D max over time: the same values.

    A max over a ``t x h x w`` window is the max over ``t`` of the per-frame maxima over ``h x w``.
    Frames are folded into the batch by views: ``[N, C, T, H, W]`` in ``channels_last_3d`` is
    ``[N*T, C, H, W]`` in ``channels_last`` (and ``[N, C*T, H, W]`` when contiguous), and the time
    pass sees ``[N, C, T, H'*W']`` in the same layout, so both passes run PyTorch's 2-D kernels
    (channels-last ones on GPU) without copies. Padding is ignored by the max, as in ``F.max_pool3d``.

    Ties: each 2-D kernel keeps the first maximum of its window in scan order, so a window's
    gradient goes to the first frame holding the window's maximum and, in it, to the first
    ``(h, w)`` holding it: the lexicographically smallest ``(t, h, w)`` among the maxima, the element
    ``F.max_pool3d`` picks. Outputs are therefore equal to ``F.max_pool3d``'s, and so is every
    window's gradient routing; an input element that is the maximum of several windows sums their
    gradients in another order (per frame, then over frames), so with windows that overlap in time
    and space its gradient can differ in the last bits (on GPU, ``F.max_pool3d``'s own backward adds
    with atomics, in no fixed order).

    :param x: ``[N, C, T, H, W]``.
    :param kernel_size: window ``[T, H, W]``.
    :param stride: stride ``[T, H, W]``.
    :param padding: implicit padding on both sides ``[T, H, W]`` (never a window's maximum).
    :param ceil_mode: as in ``F.max_pool3d``.
    """
    (kt, kh, kw), (st, sh, sw), (pt, ph, pw) = _triple(kernel_size), _triple(stride), _triple(padding)
    n, c, t, h, w = x.shape
    if _channels_last_3d(x):
        frames = F.max_pool2d(x.transpose(1, 2).reshape(n * t, c, h, w), (kh, kw), (sh, sw), (ph, pw), 1, ceil_mode)
        y = frames.reshape(n, t, c, *frames.shape[2:]).transpose(1, 2)
    else:
        frames = F.max_pool2d(x.reshape(n, c * t, h, w), (kh, kw), (sh, sw), (ph, pw), 1, ceil_mode)
        y = frames.reshape(n, c, t, *frames.shape[2:])
    if kt == 1 and st == 1 and pt == 0:
        return y
    h2, w2 = y.shape[3:]
    z = F.max_pool2d(y.reshape(n, c, t, h2 * w2), (kt, 1), (st, 1), (pt, 0), 1, ceil_mode)
    return z.reshape(n, c, z.shape[2], h2, w2)


def _ceil_mode_is_same(kernel: Triple, stride: Triple, size: Sequence[int]) -> bool:
    """Whether ``ceil_mode`` without padding yields SAME's ``ceil(n / s)`` windows in every dim."""
    for k, s, n in zip(kernel, stride, size):
        out = -(-(n - k) // s) + 1
        if out >= 1 and (out - 1) * s >= n:  # PyTorch drops a last window that would start past the input
            out -= 1
        if out != -(-n // s):
            return False
    return True


class MaxPool3dSamePadding(nn.MaxPool3d):
    """3-D max pool with TF SAME padding (extra pixel at the end).

    :param kernel_size: pooling window ``[T, H, W]``.
    :param stride: pooling stride.
    :param fuse_padding: skip the padded copies, for non-negative inputs (all I3D feeds its pools):
        stride-1 padding goes to the kernel, which ignores it where the port pads zeros (the same
        maxima; an all-zero window's gradient lands on one of its zeros, which the ReLU that made it
        passes no further, instead of on the pad); a trailing SAME pixel becomes ``ceil_mode``, the
        port's computation bit for bit, gradients included; leading padding stays an ``F.pad``.
    :param pool: ``"native"`` (``F.max_pool3d``) or ``"separable"`` (:func:`separable_max_pool3d`).
    """

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int],
        fuse_padding: bool = True,
        pool: PoolKind = "native",
    ) -> None:
        k, s = _triple(kernel_size), _triple(stride)
        static = _static_pad(k, s) if fuse_padding else None
        super().__init__(kernel_size=k, stride=s, padding=static or 0)
        self._dynamic = static is None
        self.fuse_padding = fuse_padding
        self.pool = _check_pool(pool)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pool={self.pool!r}"

    def forward(self, x: Tensor) -> Tensor:  # x: [B, C, T, H, W]
        padding, ceil_mode = self.padding, False
        if self._dynamic:
            kernel: Triple = self.kernel_size  # type: ignore[assignment]
            stride: Triple = self.stride  # type: ignore[assignment]
            pads = _same_pad(kernel, stride, x.shape[2:])
            # A trailing pixel never holds a window's first maximum (the window starts inside the
            # input and values are >= 0), so ceil_mode's ignored pixel routes every gradient alike.
            if self.fuse_padding and not any(pads[0::2]) and _ceil_mode_is_same(kernel, stride, x.shape[2:]):
                ceil_mode = any(pads)
            elif any(pads):
                x = F.pad(x, pads)
        if self.pool == "separable":
            return separable_max_pool3d(x, self.kernel_size, self.stride, padding, ceil_mode)  # type: ignore[arg-type]
        return F.max_pool3d(x, self.kernel_size, self.stride, padding, ceil_mode=ceil_mode)


class ChannelsLastBatchNorm3d(nn.BatchNorm3d):
    """``nn.BatchNorm3d`` that normalises ``channels_last_3d`` inputs as a 2-D ``channels_last`` batch.

    ``[N, C, T, H, W]`` in ``channels_last_3d`` is ``[N, C, T*H, W]`` in ``channels_last`` (a view), and
    per-channel statistics over ``(N, T, H, W)`` are those over ``(N, T*H, W)``. PyTorch's CUDA
    BatchNorm picks its channels-last kernels for 4-D ``channels_last`` but not for
    ``channels_last_3d``, which falls to generic reductions and returns a contiguous input gradient
    (docs/gpu.md, "Why BatchNorm3d is slow in channels_last_3d"). On CPU both run the same
    channels-last kernel: outputs, gradients and running statistics are identical
    (``tests/test_i3d.py``). Same parameters and buffers as ``nn.BatchNorm3d``; hooks see 5-D tensors.

    :param as_2d: take the 2-D view for ``channels_last_3d`` inputs (``False``: plain ``nn.BatchNorm3d``).
    """

    def __init__(self, num_features: int, eps: float = 1e-3, momentum: float = 0.01, as_2d: bool = True) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.as_2d = as_2d

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in (4, 5):  # 4-D only as forward's own view of a 5-D input
            raise ValueError(f"expected 5D input (got {input.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5:
            raise ValueError(f"expected 5D input (got {x.dim()}D input)")
        if self.as_2d and _channels_last_3d(x):
            n, c, t, h, w = x.shape
            return super().forward(x.view(n, c, t * h, w)).view(n, c, t, h, w)
        return super().forward(x)


class Unit3D(nn.Module):
    """Conv3d (no bias unless asked) + BatchNorm3d(eps 1e-3, momentum 0.01) + activation, TF SAME padding.

    Submodule names ``conv3d`` and ``bn`` are those of the port's checkpoints.

    :param in_channels: input channels.
    :param output_channels: output channels.
    :param kernel_shape: ``[T, H, W]`` kernel.
    :param stride: convolution stride.
    :param activation_fn: applied last; ``None`` for the logits layer.
    :param use_batch_norm: add the BatchNorm (off for the logits layer).
    :param use_bias: convolution bias (on for the logits layer only).
    :param fuse_padding: see the module docstring.
    :param bn_as_2d: see :class:`ChannelsLastBatchNorm3d`.
    """

    def __init__(
        self,
        in_channels: int,
        output_channels: int,
        kernel_shape: int | Sequence[int] = (1, 1, 1),
        stride: int | Sequence[int] = (1, 1, 1),
        activation_fn: Callable[[Tensor], Tensor] | None = F.relu,
        use_batch_norm: bool = True,
        use_bias: bool = False,
        fuse_padding: bool = True,
        bn_as_2d: bool = True,
    ) -> None:
        super().__init__()
        self.kernel_shape = _triple(kernel_shape)
        self.stride = _triple(stride)
        static = _static_pad(self.kernel_shape, self.stride) if fuse_padding else None
        self._dynamic = static is None
        self.activation_fn = activation_fn
        self.conv3d = nn.Conv3d(
            in_channels,
            output_channels,
            kernel_size=self.kernel_shape,
            stride=self.stride,
            padding=static or 0,
            bias=use_bias,
        )
        self.bn: nn.BatchNorm3d | None = (
            ChannelsLastBatchNorm3d(output_channels, eps=1e-3, momentum=0.01, as_2d=bn_as_2d)
            if use_batch_norm
            else None
        )

    def forward(self, x: Tensor) -> Tensor:  # x: [B, C_in, T, H, W] -> [B, C_out, T', H', W']
        if self._dynamic:
            x = F.pad(x, _same_pad(self.kernel_shape, self.stride, x.shape[2:]))
        x = self.conv3d(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.activation_fn is not None:
            x = self.activation_fn(x)
        return x


class InceptionModule(nn.Module):
    """Four parallel branches (1x1; 1x1->3x3; 1x1->3x3; maxpool->1x1) concatenated on channels.

    :param in_channels: input channels.
    :param out_channels: ``(b0, b1a, b1b, b2a, b2b, b3b)`` widths; output has ``b0+b1b+b2b+b3b``.
    :param fuse_padding: see the module docstring.
    :param pool: see :class:`MaxPool3dSamePadding`.
    :param bn_as_2d: see :class:`ChannelsLastBatchNorm3d`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: Sequence[int],
        fuse_padding: bool = True,
        pool: PoolKind = "native",
        bn_as_2d: bool = True,
    ) -> None:
        super().__init__()
        if len(out_channels) != 6:
            raise ValueError(f"out_channels must have 6 entries (b0, b1a, b1b, b2a, b2b, b3b), got {out_channels!r}")
        c0, c1a, c1b, c2a, c2b, c3b = (int(c) for c in out_channels)
        opts = {"fuse_padding": fuse_padding, "bn_as_2d": bn_as_2d}
        self.b0 = Unit3D(in_channels, c0, 1, **opts)
        self.b1a = Unit3D(in_channels, c1a, 1, **opts)
        self.b1b = Unit3D(c1a, c1b, 3, **opts)
        self.b2a = Unit3D(in_channels, c2a, 1, **opts)
        self.b2b = Unit3D(c2a, c2b, 3, **opts)
        self.b3a = MaxPool3dSamePadding(3, 1, fuse_padding=fuse_padding, pool=pool)
        self.b3b = Unit3D(in_channels, c3b, 1, **opts)
        self.out_channels = c0 + c1b + c2b + c3b

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or shapes do not match the model it is loaded into."""


class InceptionI3d(nn.Module):
    """Inception-v1 I3D backbone ``F^k`` (paper section 4.1), checkpoint-compatible with pytorch-i3d.

    :param num_classes: width of the ``logits`` layer (400 for the Kinetics checkpoints).
    :param in_channels: 3 for RGB, 2 for optical flow (u, v).
    :param width: channel multiplier (same topology, every layer's channels scaled and rounded,
        at least 1); ``1.0`` is the published model, e.g. ``0.25`` gives a tiny CPU model.
    :param dropout: dropout before the logits layer (the port's ``dropout_keep_prob=0.5`` is used as
        the drop probability there, so 0.5 either way).
    :param spatial_squeeze: squeeze H and W of the logits, as the port does: ``[B, num_classes, T']``.
    :param fuse_padding: see the module docstring; ``False`` is the port's literal computation.
    :param final_endpoint: stop building after this end point (``"Logits"`` builds everything).
    :param channels_last: keep weights and activations in ``channels_last_3d`` (faster; see above).
    :param pool: ``"native"`` (default, ``F.max_pool3d``) or ``"separable"`` max pools; see
        :meth:`set_pool` and :func:`separable_max_pool3d`.
    :param bn_as_2d: BatchNorm of ``channels_last_3d`` activations through the 2-D kernels
        (:class:`ChannelsLastBatchNorm3d`; identical results on CPU).
    """

    VALID_ENDPOINTS = END_POINTS

    def __init__(
        self,
        num_classes: int = 400,
        in_channels: int = 3,
        width: float = 1.0,
        dropout: float = 0.5,
        spatial_squeeze: bool = True,
        fuse_padding: bool = True,
        final_endpoint: str = "Logits",
        channels_last: bool = True,
        pool: PoolKind = "native",
        bn_as_2d: bool = True,
    ) -> None:
        super().__init__()
        _check_pool(pool)
        if final_endpoint not in END_POINTS:
            raise ValueError(f"final_endpoint={final_endpoint!r} is not one of {END_POINTS}")
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width!r}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.width = float(width)
        self.spatial_squeeze = spatial_squeeze
        self.final_endpoint = final_endpoint
        self.channels_last = channels_last
        self.pool = pool
        self.bn_as_2d = bn_as_2d

        def w(c: int) -> int:
            return max(1, int(round(c * width)))

        # Built stage by stage so the feature width follows the scaled channels.
        unit = {"fuse_padding": fuse_padding, "bn_as_2d": bn_as_2d}
        stages: list[tuple[str, nn.Module]] = []
        stages.append(("Conv3d_1a_7x7", Unit3D(in_channels, w(64), 7, 2, **unit)))
        stages.append(("MaxPool3d_2a_3x3", MaxPool3dSamePadding((1, 3, 3), (1, 2, 2), fuse_padding, pool)))
        stages.append(("Conv3d_2b_1x1", Unit3D(w(64), w(64), 1, **unit)))
        stages.append(("Conv3d_2c_3x3", Unit3D(w(64), w(192), 3, **unit)))
        stages.append(("MaxPool3d_3a_3x3", MaxPool3dSamePadding((1, 3, 3), (1, 2, 2), fuse_padding, pool)))
        channels = w(192)
        for name in END_POINTS[5:16]:
            if name == "MaxPool3d_4a_3x3":
                stages.append((name, MaxPool3dSamePadding(3, 2, fuse_padding, pool)))
            elif name == "MaxPool3d_5a_2x2":
                stages.append((name, MaxPool3dSamePadding(2, 2, fuse_padding, pool)))
            else:
                module = InceptionModule(channels, [w(c) for c in _MIXED_CHANNELS[name]], fuse_padding, pool, bn_as_2d)
                channels = module.out_channels
                stages.append((name, module))
        self.feature_dim = channels

        # The port registers these before the end points: logits.* lead the state dict.
        self.dropout = nn.Dropout(dropout)
        self.logits = self._make_logits(self.num_classes)
        self._end_points: list[str] = []
        for name, module in stages:
            self.add_module(name, module)
            self._end_points.append(name)
            if name == final_endpoint:
                break
        if channels_last:
            self.to(memory_format=torch.channels_last_3d)

    def _make_logits(self, num_classes: int) -> Unit3D:
        return Unit3D(self.feature_dim, num_classes, 1, activation_fn=None, use_batch_norm=False, use_bias=True)

    def set_pool(self, pool: PoolKind) -> None:
        """Compute every max pool with ``pool`` from now on (no parameters change).

        ``"separable"`` runs the pools through 2-D kernels (faster layouts on GPU, see docs/gpu.md);
        its outputs equal ``"native"``'s, its gradients may differ in the last bits
        (:func:`separable_max_pool3d`), which is why ``"native"`` is the default.
        """
        self.pool = _check_pool(pool)
        for module in self.modules():
            if isinstance(module, MaxPool3dSamePadding):
                module.pool = pool

    def replace_logits(self, num_classes: int) -> None:
        """Swap the ``logits`` layer for a freshly initialised one with ``num_classes`` outputs."""
        device = self.logits.conv3d.weight.device
        self.num_classes = int(num_classes)
        self.logits = self._make_logits(self.num_classes).to(device)
        if self.channels_last:
            self.logits.to(memory_format=torch.channels_last_3d)

    def end_point_features(self, x: Tensor) -> dict[str, Tensor]:
        """Output of every built end point (before ``Logits``), for inspection and tests."""
        out: dict[str, Tensor] = {}
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        for name in self._end_points:
            x = self._modules[name](x)
            out[name] = x
        return out

    def _trunk(self, x: Tensor) -> Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"InceptionI3d expects input [B, {self.in_channels}, T, H, W], got {tuple(x.shape)}")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        for name in self._end_points:
            x = self._modules[name](x)
        return x

    def _avg_pool(self, x: Tensor) -> Tensor:
        # The published [2, 7, 7] window (stride 1); clamped to the map so smaller inputs
        # (tiny CPU models at 64x64) pool globally instead of failing.
        kernel = tuple(min(k, n) for k, n in zip(_AVG_POOL_KERNEL, x.shape[2:]))
        return F.avg_pool3d(x, kernel_size=kernel, stride=1)

    def extract_features(self, x: Tensor, flatten: bool = True) -> Tensor:
        """Pooled ``Mixed_5c`` features ``f^k``.

        :param x: clip ``[B, C, T, H, W]`` scaled to [-1, 1].
        :param flatten: return ``[B, feature_dim]`` (averaged over the remaining time steps, one
            per clip); ``False`` returns the port's ``[B, feature_dim, T', 1, 1]``.
        """
        if self.final_endpoint != "Logits" and self.final_endpoint != "Mixed_5c":
            raise RuntimeError(f"model was built up to {self.final_endpoint!r}; features need Mixed_5c")
        pooled = self._avg_pool(self._trunk(x))
        if not flatten:
            return pooled
        return pooled.mean(dim=(2, 3, 4))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes, T']`` (``T' = 1`` for 16 frames), as the port returns them."""
        if self.final_endpoint != "Logits":
            return self._trunk(x)
        logits = self.logits(self.dropout(self._avg_pool(self._trunk(x))))
        if self.spatial_squeeze:
            logits = logits.squeeze(3).squeeze(3)
        return logits

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        modality: Literal["rgb", "flow"],
        *,
        map_location: str | torch.device = "cpu",
        **kwargs: object,
    ) -> InceptionI3d:
        """Build a model for ``modality`` and strictly load a pytorch-i3d state dict from ``path``.

        ``num_classes`` is taken from the checkpoint's ``logits`` layer. The file is read with
        ``torch.load(weights_only=True)`` (never unpickles code). The one tolerated difference is
        that checkpoints written by old PyTorch lack BatchNorm ``num_batches_tracked`` counters:
        when those are the only missing keys they are set to 0. Anything else raises
        :class:`CheckpointMismatchError` listing missing and unexpected keys and differing shapes.
        """
        if modality not in MODALITY_CHANNELS:
            raise ValueError(f"modality must be one of {sorted(MODALITY_CHANNELS)}, got {modality!r}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"I3D checkpoint not found: {os.fspath(path)}")
        state = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
            found = (
                f"a mapping with non-tensor values under {[k for k, v in state.items() if not isinstance(v, Tensor)][:5]}"
                if isinstance(state, Mapping)
                else type(state).__name__
            )
            raise CheckpointMismatchError(
                f"{os.fspath(path)}: expected a state dict (mapping of name -> tensor), found {found}"
            )
        bias = state.get("logits.conv3d.bias")
        num_classes = int(bias.shape[0]) if isinstance(bias, Tensor) and bias.dim() == 1 else 400
        model = cls(num_classes=num_classes, in_channels=MODALITY_CHANNELS[modality], **kwargs)  # type: ignore[arg-type]
        model.load_checkpoint_state(state, source=f"{os.fspath(path)} (modality={modality!r})")
        return model

    def load_checkpoint_state(self, state: Mapping[str, Tensor], source: str = "state dict") -> None:
        """Strict load with the ``num_batches_tracked`` tolerance of :meth:`from_checkpoint`."""
        expected = self.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        mismatched = [
            f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
            for k in expected
            if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
        ]
        tolerated = [k for k in missing if k.endswith(".num_batches_tracked")]
        missing = [k for k in missing if k not in tolerated]
        if missing or unexpected or mismatched:
            lines = [
                f"{source} does not match InceptionI3d(in_channels={self.in_channels}, "
                f"num_classes={self.num_classes}, width={self.width}):"
            ]
            for title, items in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", mismatched),
            ):
                if items:
                    lines.append(
                        f"  {len(items)} {title}: " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else "")
                    )
            if any(k.startswith("Conv3d_1a_7x7.conv3d.weight") for k in mismatched):
                lines.append(
                    "  (Conv3d_1a_7x7 input channels differ: is this an RGB checkpoint loaded "
                    "as flow or the other way round?)"
                )
            if any(k.startswith("module.") for k in unexpected):
                lines.append("  (keys start with 'module.': saved from DataParallel; strip the prefix first)")
            raise CheckpointMismatchError("\n".join(lines))
        full = dict(state)
        for k in tolerated:
            full[k] = torch.zeros((), dtype=torch.long)
        self.load_state_dict(full, strict=True)


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (comparable with the port's total, e.g. 12,697,264 for 400 RGB classes)."""
    return sum(p.numel() for p in model.parameters())
