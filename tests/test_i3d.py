"""InceptionI3d: checkpoint compatibility with pytorch-i3d, shapes, width multiplier, errors."""

from __future__ import annotations

import pytest
import torch
from video_helpers import i3d_reference

from features.i3d import CheckpointMismatchError, InceptionI3d, count_parameters


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
