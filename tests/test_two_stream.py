"""features.TwoStream: per-modality features and heads, late fusion (eq. 1), pluggable backbones."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from features import InceptionI3d, TwoStream
from features.two_stream import TwoStreamOutput


def test_public_names_import_lazily() -> None:
    import features

    assert features.TwoStream is TwoStream and features.InceptionI3d is InceptionI3d
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        features.Nope  # noqa: B018


def test_i3d_two_stream_forward_backward() -> None:
    torch.manual_seed(0)
    model = TwoStream.i3d(num_classes=8, width=0.125)
    inputs = {"rgb": torch.randn(2, 3, 16, 32, 32), "flow": torch.randn(2, 2, 16, 32, 32)}
    out = model(inputs)
    assert isinstance(out, TwoStreamOutput)
    assert out.logits.shape == (2, 8)
    assert {k: tuple(v.shape) for k, v in out.features.items()} == {"rgb": (2, 128), "flow": (2, 128)}
    out.logits.sum().backward()
    assert model.backbones["flow"].Conv3d_1a_7x7.conv3d.weight.grad is not None
    assert model.backbones["rgb"].logits.conv3d.weight.grad is None  # Kinetics logits unused and frozen
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)


def test_late_fusion_sums_modality_logits_eq1() -> None:
    torch.manual_seed(1)
    model = TwoStream.i3d(num_classes=5, width=0.125).eval()
    inputs = {"rgb": torch.randn(3, 3, 8, 32, 32), "flow": torch.randn(3, 2, 8, 32, 32)}
    with torch.no_grad():
        out = model(inputs)
        expected = model.heads["rgb"](out.features["rgb"]) + model.heads["flow"](out.features["flow"])
    torch.testing.assert_close(out.logits, expected)
    torch.testing.assert_close(out.logits, out.modality_logits["rgb"] + out.modality_logits["flow"])
    mean_model = TwoStream(dict(model.backbones), 5, fusion="mean").eval()
    mean_model.heads.load_state_dict(model.heads.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(mean_model(inputs).logits, out.logits / 2)


def test_dropout_before_heads_only_in_training() -> None:
    torch.manual_seed(2)
    feats = {"a": torch.randn(64, 16)}
    model = TwoStream({"a": nn.Identity()}, 3, feature_dims={"a": 16})
    assert model.heads["a"][0].p == 0.5
    model.train()
    assert not torch.equal(model.classify(feats).logits, model.classify(feats).logits)
    model.eval()
    torch.testing.assert_close(model.classify(feats).logits, model.classify(feats).logits)


def test_any_backbone_plugs_in() -> None:
    class SensorEncoder(nn.Module):
        feature_dim = 12

        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(6 * 20, 12))

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 6, 20] -> [B, 12]
            return self.net(x)

    model = TwoStream({"acc": SensorEncoder(), "gyro": SensorEncoder()}, 4)
    out = model({"acc": torch.randn(5, 6, 20), "gyro": torch.randn(5, 6, 20)})
    assert out.logits.shape == (5, 4) and out.features["gyro"].shape == (5, 12)


def test_errors_name_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="backbone 'x' .*feature_dim"):
        TwoStream({"x": nn.Identity()}, 3)
    model = TwoStream({"x": nn.Identity()}, 3, feature_dims={"x": 4})
    with pytest.raises(KeyError, match=r"lack modalities \['x'\]"):
        model({"y": torch.zeros(1, 4)})
    with pytest.raises(ValueError, match=r"returned features \(1, 5\), expected \[B, 4\]"):
        model({"x": torch.zeros(1, 5)})
    with pytest.raises(ValueError, match="I3D modalities"):
        TwoStream.i3d(3, modalities=("depth",))


def test_i3d_factory_loads_checkpoints(tmp_path) -> None:
    torch.manual_seed(3)
    flow = InceptionI3d(in_channels=2, width=0.125)
    torch.save(flow.state_dict(), tmp_path / "flow.pt")
    model = TwoStream.i3d(8, modalities=("flow",), width=0.125, checkpoints={"flow": tmp_path / "flow.pt"})
    assert torch.equal(model.backbones["flow"].Mixed_5c.b0.conv3d.weight, flow.Mixed_5c.b0.conv3d.weight)
    assert model.modalities == ("flow",)
