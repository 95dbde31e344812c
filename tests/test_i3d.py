"""InceptionI3d: checkpoint compatibility with pytorch-i3d, shapes, width multiplier, errors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch
from video_helpers import i3d_reference

from features.i3d import (
    CheckpointMismatchError,
    InceptionI3d,
    MaxPool3dSamePadding,
    count_parameters,
    separable_max_pool3d,
)


@pytest.mark.parametrize("in_channels", [3, 2])
def test_state_dict_matches_port_exactly(in_channels: int) -> None:
    ref = i3d_reference(in_channels)
    model = InceptionI3d(num_classes=400, in_channels=in_channels)
    got = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    expected = [(e["key"], e["shape"]) for e in ref["state_dict"]]
    assert got == expected  # same keys, same order, same shapes
    dtypes = {k: str(v.dtype).removeprefix("torch.") for k, v in model.state_dict().items()}
    assert dtypes == {e["key"]: e["dtype"] for e in ref["state_dict"]}
    assert len(got) == ref["num_state_dict_entries"]
    assert count_parameters(model) == ref["total_parameters_num_classes_400"]
    assert sum(1 for _ in model.parameters()) == ref["num_parameter_tensors"]
    assert sum(v.numel() for v in model.state_dict().values()) == ref["state_dict_total_elements"]
    model.replace_logits(8)
    assert count_parameters(model) == ref["total_parameters_after_replace_logits_8"]


def test_batchnorm_hyperparameters() -> None:
    model = InceptionI3d(width=0.125)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.01 for m in bns)


@pytest.mark.parametrize("in_channels", [3, 2])
def test_full_width_shapes_match_port(in_channels: int) -> None:
    ref = i3d_reference(in_channels)
    torch.manual_seed(0)
    model = InceptionI3d(in_channels=in_channels).eval()
    x = torch.randn(ref["input_shape"])
    with torch.no_grad():
        end_points = model.end_point_features(x)
        pooled = model.extract_features(x, flatten=False)  # the pooled Mixed_5c map, [B, C, T', 1, 1]
        logits = model.logits(pooled).squeeze(3).squeeze(3)
    table = ref[f"end_point_output_shapes_for_input_1x{in_channels}x16x224x224"]
    for entry in table[:-1]:
        assert list(end_points[entry["end_point"]].shape) == entry["output_shape"], entry["end_point"]
    assert list(pooled.shape) == ref["extract_features_output_shape"] == table[-1]["output_shape"]
    assert list(logits.shape) == ref["forward_output_shape"]


def test_fused_padding_is_the_ports_function() -> None:
    # Odd sizes exercise the asymmetric (extra pixel at the end) SAME padding of the strided layers.
    torch.manual_seed(1)
    fused = InceptionI3d(num_classes=5, width=0.25).eval()
    literal = InceptionI3d(num_classes=5, width=0.25, fuse_padding=False, channels_last=False).eval()
    literal.load_state_dict(fused.state_dict())
    assert fused.channels_last and fused.Conv3d_1a_7x7.conv3d.weight.is_contiguous(memory_format=torch.channels_last_3d)
    x = torch.randn(2, 3, 9, 37, 45)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), literal(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fused.extract_features(x), literal.extract_features(x), rtol=1e-5, atol=1e-5)


def test_same_padding_puts_extra_pixel_at_end() -> None:
    # A 2x2 stride-2 max pool on a 3-wide input pads one column, which must be on the right.
    from features.i3d import MaxPool3dSamePadding

    pool = MaxPool3dSamePadding((1, 1, 2), (1, 1, 2))
    x = torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 1, 1, 3)
    assert pool(x).flatten().tolist() == [2.0, 3.0]


def test_width_quarter_forward_backward() -> None:
    torch.manual_seed(2)
    model = InceptionI3d(num_classes=8, in_channels=3, width=0.25)
    assert model.feature_dim == 256
    x = torch.randn(2, 3, 16, 64, 64)
    feats = model.extract_features(x)
    assert feats.shape == (2, 256)
    logits = model(x)
    assert logits.shape == (2, 8, 1)
    (logits.sum() + feats.sum()).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.Conv3d_1a_7x7.conv3d.weight.grad.abs().sum() > 0


def test_state_dict_round_trip_strict(tmp_path) -> None:
    torch.manual_seed(3)
    model = InceptionI3d(num_classes=400, in_channels=2, width=0.25).eval()
    path = tmp_path / "flow.pt"
    torch.save(model.state_dict(), path)
    loaded = InceptionI3d.from_checkpoint(path, "flow", width=0.25).eval()
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    x = torch.randn(1, 2, 8, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_full_width_checkpoint_without_num_batches_tracked(tmp_path) -> None:
    torch.manual_seed(4)
    model = InceptionI3d(num_classes=400, in_channels=3)
    old = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(old) == 344 - 57
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(old, path)
    loaded = InceptionI3d.from_checkpoint(path, "rgb")
    assert loaded.num_classes == 400
    assert torch.equal(loaded.Mixed_5c.b0.conv3d.weight, model.Mixed_5c.b0.conv3d.weight)
    assert int(loaded.Mixed_5c.b0.bn.num_batches_tracked) == 0


def test_checkpoint_errors_name_keys_and_shapes(tmp_path) -> None:
    model = InceptionI3d(num_classes=400, in_channels=3, width=0.25)
    state = model.state_dict()
    path = tmp_path / "rgb.pt"
    torch.save(state, path)
    # Loading RGB weights as flow: the first conv's input channels differ.
    with pytest.raises(
        CheckpointMismatchError, match=r"Conv3d_1a_7x7\.conv3d\.weight: checkpoint \(16, 3, 7, 7, 7\)"
    ) as err:
        InceptionI3d.from_checkpoint(path, "flow", width=0.25)
    assert "rgb.pt" in str(err.value) and "flow" in str(err.value)

    broken = dict(state)
    del broken["Mixed_4b.b0.bn.running_mean"]
    broken["Mixed_4b.extra.weight"] = torch.zeros(1)
    torch.save(broken, path)
    with pytest.raises(CheckpointMismatchError) as err:
        InceptionI3d.from_checkpoint(path, "rgb", width=0.25)
    message = str(err.value)
    assert "1 missing keys: Mixed_4b.b0.bn.running_mean" in message
    assert "1 unexpected keys: Mixed_4b.extra.weight" in message

    # Wrong width: every layer's shape differs, the message lists them.
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        InceptionI3d.from_checkpoint(path, "rgb", width=0.5)

    torch.save({"model": state}, path)
    with pytest.raises(CheckpointMismatchError, match=r"non-tensor values under \['model'\]"):
        InceptionI3d.from_checkpoint(path, "rgb", width=0.25)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        InceptionI3d.from_checkpoint(tmp_path / "nope.pt", "rgb")
    with pytest.raises(ValueError, match="modality"):
        InceptionI3d.from_checkpoint(path, "depth")  # type: ignore[arg-type]


def test_replace_logits_and_input_check() -> None:
    model = InceptionI3d(num_classes=400, width=0.125)
    model.replace_logits(8)
    assert model.logits.conv3d.weight.shape[:2] == (8, model.feature_dim)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 8, 32, 32)).shape == (1, 8, 1)
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        model(torch.randn(1, 2, 8, 32, 32))


# ---------------------------------------------------------------------- pools and BatchNorm kernels
Size3 = tuple[int, int, int]
# Every (kernel, stride) of the network's max pools: MaxPool3d_2a/3a, MaxPool3d_4a, MaxPool3d_5a, Mixed_*.b3a.
NETWORK_POOLS = {
    "MaxPool3d_2a_3x3/3a": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
    "Mixed.b3a": ((3, 3, 3), (1, 1, 1)),
}
# [T, H, W]: even sizes pad at the end only, odd ones at both ends, the last mixes them.
POOL_SIZES = [(4, 8, 10), (5, 7, 9), (4, 7, 8)]


def _same_pads(kernel: Size3, stride: Size3, size: Sequence[int]) -> list[int]:
    """TF SAME padding as F.pad takes it (last dim first; the odd pixel at the end), written out again."""
    pads: list[int] = []
    for k, s, n in zip(reversed(kernel), reversed(stride), reversed(size)):
        total = max(k - (s if n % s == 0 else n % s), 0)
        pads += [total // 2, total - total // 2]
    return pads


def _todays_pool(x: torch.Tensor, kernel: Size3, stride: Size3) -> torch.Tensor:
    """The pools as the network computed them before the padding fold and the separable kernels."""
    if all(s == 1 and k % 2 == 1 for k, s in zip(kernel, stride)):
        return torch.nn.functional.max_pool3d(x, kernel, stride, padding=tuple((k - 1) // 2 for k in kernel))
    return torch.nn.functional.max_pool3d(
        torch.nn.functional.pad(x, _same_pads(kernel, stride, x.shape[2:])), kernel, stride
    )


def _pool_input(kind: str, size: Size3, channels_last: bool, seed: int = 0) -> torch.Tensor:
    """Non-negative inputs, as after ReLU: distinct values, or ties (0/1/2 and all zeros)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (2, 3, *size)
    if kind == "unique":
        x = torch.randperm(int(torch.tensor(shape).prod()), generator=gen).float().view(shape) + 1
    elif kind == "ties":
        x = torch.randint(0, 3, shape, generator=gen).float()
    else:
        x = torch.zeros(shape)
    return x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x


def _routing(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The pool's Jacobian [outputs, inputs]: row o is 1 where output o's gradient goes (0/1 exactly)."""
    x = x.detach().requires_grad_()
    y = fn(x)
    eye = torch.eye(y.numel()).view(-1, *y.shape)
    (jac,) = torch.autograd.grad(y, x, eye, is_grads_batched=True)
    return jac.reshape(y.numel(), -1)


def _first_max_routing(x: torch.Tensor, kernel: Size3, stride: Size3, padding: Size3, ceil_mode: bool) -> torch.Tensor:
    """Brute force: each window's gradient to its first maximum in (t, h, w) order; padding never wins."""
    from itertools import product

    out_shape = torch.nn.functional.max_pool3d(x, kernel, stride, padding, ceil_mode=ceil_mode).shape
    jac = torch.zeros(int(torch.tensor(out_shape).prod()), x.numel())
    flat = x.contiguous().view(-1)
    n, c, t, h, w = x.shape
    row = 0
    for b, ch, ot, oh, ow in product(*(range(d) for d in out_shape)):
        best, where = None, None
        for dt, dh, dw in product(*(range(k) for k in kernel)):
            it, ih, iw = (
                ot * stride[0] - padding[0] + dt,
                oh * stride[1] - padding[1] + dh,
                ow * stride[2] - padding[2] + dw,
            )
            if 0 <= it < t and 0 <= ih < h and 0 <= iw < w:
                index = (((b * c + ch) * t + it) * h + ih) * w + iw
                if best is None or flat[index] > best:
                    best, where = flat[index], index
        jac[row, where] = 1.0
        row += 1
    return jac


def test_network_pools_are_the_listed_ones() -> None:
    model = InceptionI3d(width=0.125)
    found = {(m.kernel_size, m.stride) for m in model.modules() if isinstance(m, MaxPool3dSamePadding)}
    assert found == set(NETWORK_POOLS.values())


@pytest.mark.parametrize("kind", ["unique", "ties", "zeros"])
@pytest.mark.parametrize("pool", list(NETWORK_POOLS))
def test_separable_and_native_max_pool_route_each_window_to_its_first_maximum(pool: str, kind: str) -> None:
    # Padding and ceil_mode as MaxPool3dSamePadding hands them to the kernels (even sizes: ceil_mode).
    kernel, stride = NETWORK_POOLS[pool]
    padding = tuple((k - 1) // 2 for k in kernel) if stride == (1, 1, 1) else (0, 0, 0)
    ceil_mode = stride != (1, 1, 1)
    for channels_last in (True, False):
        x = _pool_input(kind, (4, 6, 8), channels_last)[:1, :2]
        expected = _first_max_routing(x, kernel, stride, padding, ceil_mode)
        native = _routing(lambda v: torch.nn.functional.max_pool3d(v, kernel, stride, padding, ceil_mode=ceil_mode), x)
        separable = _routing(lambda v: separable_max_pool3d(v, kernel, stride, padding, ceil_mode), x)
        assert torch.equal(native, expected)
        assert torch.equal(separable, expected)


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last_3d", "contiguous"])
@pytest.mark.parametrize("size", POOL_SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ["unique", "ties", "zeros"])
@pytest.mark.parametrize("pool", list(NETWORK_POOLS))
def test_pools_equal_todays_pools_outputs_and_gradients(pool: str, kind: str, size: Size3, channels_last: bool) -> None:
    kernel, stride = NETWORK_POOLS[pool]
    x = _pool_input(kind, size, channels_last)
    today = _routing(lambda v: _todays_pool(v, kernel, stride), x)
    grad_seed = torch.Generator().manual_seed(1)
    for impl in ("native", "separable"):
        module = MaxPool3dSamePadding(kernel, stride, pool=impl)  # type: ignore[arg-type]
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = _todays_pool(a, kernel, stride), module(b)
        assert torch.equal(ya, yb), impl
        assert yb.is_contiguous(memory_format=torch.channels_last_3d) == channels_last or ya.numel() == 0
        # Every window's gradient goes to the same input element, ties included.
        assert torch.equal(_routing(module, x), today), impl
        # Accumulated gradients: integer upstream gradients add exactly in any order ...
        whole = torch.randint(-64, 64, ya.shape, generator=grad_seed).float()
        (ga,) = torch.autograd.grad(ya, a, whole)
        (gb,) = torch.autograd.grad(yb, b, whole)
        assert torch.equal(ga, gb), impl
        # ... float ones too, except where separable sums one element's windows in another order:
        # windows overlapping in time and space (MaxPool3d_4a, b3a) may differ in the last bits.
        real = torch.randn(ya.shape, generator=grad_seed)
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        (ga,) = torch.autograd.grad(_todays_pool(a, kernel, stride), a, real)
        (gb,) = torch.autograd.grad(module(b), b, real)
        overlapping = kernel[0] > stride[0] and kernel[0] > 1
        if impl == "native" or not overlapping:
            assert torch.equal(ga, gb), impl
        else:
            torch.testing.assert_close(ga, gb, rtol=1e-6, atol=1e-6)


def test_separable_pool_on_channels_last_3d_makes_no_copies() -> None:
    from torch.profiler import ProfilerActivity, profile

    x = torch.rand(2, 8, 8, 28, 28).contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    for kernel, stride in NETWORK_POOLS.values():
        pool = MaxPool3dSamePadding(kernel, stride, pool="separable")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            y = pool(x)
            y.backward(torch.ones_like(y))
        ops = {e.name for e in prof.events()}
        assert not ops & {"aten::copy_", "aten::clone", "aten::contiguous", "aten::constant_pad_nd"}, ops
        assert y.is_contiguous(memory_format=torch.channels_last_3d)
        assert x.grad is not None and x.grad.is_contiguous(memory_format=torch.channels_last_3d)
        x.grad = None


@pytest.mark.parametrize("shape", [(2, 8, 4, 14, 13), (3, 16, 8, 28, 28), (2, 1, 3, 5, 5), (2, 16, 1, 1, 1)])
def test_channels_last_batch_norm_is_batch_norm_3d_bit_for_bit(shape: tuple[int, ...]) -> None:
    from features.i3d import ChannelsLastBatchNorm3d

    torch.manual_seed(5)
    plain = torch.nn.BatchNorm3d(shape[1], eps=1e-3, momentum=0.01)
    with torch.no_grad():
        plain.weight.normal_()
        plain.bias.normal_()
    folded = ChannelsLastBatchNorm3d(shape[1])
    folded.load_state_dict(plain.state_dict())
    assert list(folded.state_dict()) == list(plain.state_dict())
    seen: list[int] = []
    folded.register_forward_hook(lambda _m, inputs, out: seen.extend([inputs[0].dim(), out.dim()]))
    for threads in (1, 2):
        with _torch_threads(threads):
            for train in (True, False, True):
                plain.train(train)
                folded.train(train)
                x = (torch.randn(shape) * 3 + 1).contiguous(memory_format=torch.channels_last_3d)
                a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
                ya, yb = plain(a), folded(b)
                assert torch.equal(ya, yb)
                assert yb.is_contiguous(memory_format=torch.channels_last_3d)
                g = torch.randn(shape).contiguous(memory_format=torch.channels_last_3d)
                grads_a = torch.autograd.grad(ya, [a, plain.weight, plain.bias], g)
                grads_b = torch.autograd.grad(yb, [b, folded.weight, folded.bias], g)
                assert all(torch.equal(p, q) for p, q in zip(grads_a, grads_b))
                for key, value in plain.state_dict().items():
                    assert torch.equal(value, folded.state_dict()[key]), key
    assert set(seen) == {5}
    with pytest.raises(ValueError, match="expected 5D input"):
        folded(torch.randn(2, shape[1], 4, 4))


class _torch_threads:
    def __init__(self, n: int) -> None:
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self) -> None:
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.old)


class _TodaysPool(torch.nn.Module):
    def __init__(self, kernel: Size3, stride: Size3) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _todays_pool(x, self.kernel, self.stride)


def _with_todays_pools(model: InceptionI3d) -> InceptionI3d:
    for name, module in list(model.named_modules()):
        if isinstance(module, MaxPool3dSamePadding):
            parent, _, child = name.rpartition(".")
            setattr(
                model.get_submodule(parent) if parent else model, child, _TodaysPool(module.kernel_size, module.stride)
            )
    return model


def _flat_clip(size: Size3, seed: int) -> torch.Tensor:
    """Piecewise-constant clips: flat regions give equal positive activations and many zeros (ties)."""
    t, h, w = size
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(2, 3, (t + 1) // 2, (h + 7) // 8, (w + 7) // 8, generator=gen)
    return coarse.repeat_interleave(2, 2).repeat_interleave(8, 3).repeat_interleave(8, 4)[:, :, :t, :h, :w].contiguous()


def _train_step(model: InceptionI3d, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(7)  # the same dropout mask
    out = model(x)
    out.square().sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out.detach(), grads


@pytest.mark.parametrize(
    ("size", "width", "threads"),
    [((16, 64, 64), 0.25, 1), ((9, 37, 45), 0.25, 1), ((16, 32, 32), 0.125, 2)],
    ids=["even", "odd", "demo"],  # the demo: width 1/8, 16 x 32 x 32 clips, two threads
)
def test_default_network_trains_bit_for_bit_like_todays(size: Size3, width: float, threads: int) -> None:
    torch.manual_seed(6)
    model = InceptionI3d(num_classes=5, width=width)
    today = _with_todays_pools(InceptionI3d(num_classes=5, width=width, bn_as_2d=False))
    today.load_state_dict(model.state_dict())
    separable = InceptionI3d(num_classes=5, width=width, pool="separable")
    separable.load_state_dict(model.state_dict())
    with _torch_threads(threads):
        _train_like_today(model, today, separable, size)
    for key, value in today.state_dict().items():  # BatchNorm running statistics
        assert torch.equal(value, model.state_dict()[key]) and torch.equal(value, separable.state_dict()[key]), key


def _train_like_today(model: InceptionI3d, today: InceptionI3d, separable: InceptionI3d, size: Size3) -> None:
    for step in range(2):
        x = _flat_clip(size, seed=step)
        out_today, grads_today = _train_step(today, x)
        out, grads = _train_step(model, x)
        assert torch.equal(out, out_today)
        assert grads.keys() == grads_today.keys() and all(torch.equal(grads[k], grads_today[k]) for k in grads)
        # Separable pools: the same forward; gradients up to the order of a few additions (measured
        # ~6e-6 of each tensor's largest entry; elementwise tolerances fail near cancellations, and
        # the floor covers BatchNorm biases whose gradient is rounding noise around 0 before a BatchNorm).
        out_sep, grads_sep = _train_step(separable, x)
        assert torch.equal(out_sep, out_today)
        for k in grads:
            assert (grads_sep[k] - grads_today[k]).abs().max() <= 1e-4 * grads_today[k].abs().max() + 1e-5, k


def test_pool_switch_keeps_the_checkpoint_format() -> None:
    default = InceptionI3d(width=0.125)
    other = InceptionI3d(width=0.125, pool="separable", bn_as_2d=False)
    assert [(k, v.shape) for k, v in default.state_dict().items()] == [
        (k, v.shape) for k, v in other.state_dict().items()
    ]
    other.load_state_dict(default.state_dict(), strict=True)
    default.set_pool("separable")
    assert default.pool == "separable"
    assert {m.pool for m in default.modules() if isinstance(m, MaxPool3dSamePadding)} == {"separable"}
    with pytest.raises(ValueError, match="pool must be one of"):
        default.set_pool("cudnn")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pool must be one of"):
        InceptionI3d(width=0.125, pool="fast")  # type: ignore[arg-type]


def test_two_stream_i3d_passes_the_pool_choice_to_its_backbones() -> None:
    from features.two_stream import TwoStream

    model = TwoStream.i3d(4, width=0.125, pool="separable")
    pools = [m for b in model.backbones.values() for m in b.modules() if isinstance(m, MaxPool3dSamePadding)]
    assert pools and {m.pool for m in pools} == {"separable"}
    assert {b.pool for b in model.backbones.values()} == {"separable"}
