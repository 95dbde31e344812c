"""features.extract: a tiny backbone over synthetic clips writes a valid snapshot of exactly its features."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

from features.extract import extract_snapshot
from features.snapshot import Snapshot
from mmir_env.discriminator import seeded_discriminator

D = 16
CHANNELS = {"rgb": 3, "flow": 2}


def tiny_backbone(channels: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    # Dropout makes train and eval mode differ: the extractor must run in eval mode.
    return nn.Sequential(
        nn.Conv3d(channels, 4, 3), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, D)
    )


class Clips(torch.utils.data.Dataset):
    """Random 8-frame clips, alternating domains, with labels, uids and planted negatives."""

    def __init__(self, n: int = 26) -> None:
        gen = torch.Generator().manual_seed(0)
        self.clips = {m: torch.randn(n, c, 8, 12, 12, generator=gen) for m, c in CHANNELS.items()}
        self.domain = ["source" if i % 3 else "target" for i in range(n)]
        self.label = torch.randint(-1, 5, (n,), generator=gen).clamp(min=0) - (torch.arange(n) % 7 == 0).long()
        self.label = torch.where(
            torch.tensor([d == "source" for d in self.domain]), self.label.clamp(min=0), self.label
        )
        self.is_negative = torch.rand(n, generator=gen) < 0.3

    def __len__(self) -> int:
        return len(self.domain)

    def __getitem__(self, i: int) -> dict:
        return {
            **{m: x[i] for m, x in self.clips.items()},
            "label": self.label[i],
            "uid": f"clip{i:03d}",
            "domain": self.domain[i],
            "is_negative": self.is_negative[i],
        }


@pytest.fixture
def backbones() -> dict[str, nn.Module]:
    return {m: tiny_backbone(c, seed=i) for i, (m, c) in enumerate(CHANNELS.items())}


def test_extract_writes_exactly_the_backbone_features(tmp_path: Path, backbones: dict[str, nn.Module]) -> None:
    data = Clips()
    loader = torch.utils.data.DataLoader(data, batch_size=5)
    for b in backbones.values():
        b.train()
    buffer = io.StringIO()
    discs = {m: seeded_discriminator(D, 0) for m in CHANNELS}
    result = extract_snapshot(
        backbones,
        loader,
        tmp_path / "x.h5",
        num_classes=5,
        dtype="float32",
        discriminators=discs,
        console=Console(file=buffer, force_terminal=True, width=120),
        config={"backbone": "tiny"},
    )
    assert all(b.training for b in backbones.values()), "training mode must be restored"
    domains = np.array(data.domain)
    assert result.rows == {"source": int((domains == "source").sum()), "target": int((domains == "target").sum())}
    assert result.batches == 6 and result.feature_dim == D and result.clips_per_second > 0
    assert "clips/s" in buffer.getvalue()
    snap = Snapshot(result.path)
    assert snap.config == {"backbone": "tiny"} and snap.has_discriminator("flow")
    for name in ("source", "target"):
        rows = np.flatnonzero(domains == name)
        assert snap.uids(name).tolist() == [f"clip{i:03d}" for i in rows]
        np.testing.assert_array_equal(snap.labels(name), data.label.numpy()[rows])
        np.testing.assert_array_equal(snap.is_negative(name), data.is_negative.numpy()[rows])
        for m, backbone in backbones.items():
            backbone.eval()
            with torch.no_grad():
                expected = backbone(data.clips[m][rows]).numpy()
            np.testing.assert_allclose(snap.features(name, m), expected, rtol=1e-5, atol=1e-6)
    assert (snap.labels("target") == -1).any()  # outside-class target labels are kept


def test_float16_and_integer_domains_and_unlabelled_target(tmp_path: Path, backbones: dict[str, nn.Module]) -> None:
    gen = torch.Generator().manual_seed(1)
    batches = [
        {
            "rgb": torch.randn(4, 3, 8, 12, 12, generator=gen),
            "flow": torch.randn(4, 2, 8, 12, 12, generator=gen),
            "label": torch.tensor([0, 1, 2, 3]),
            "uid": torch.arange(4 * i, 4 * i + 4),
            "domain": torch.tensor([0, 1, 0, 1]),
        }
        for i in range(3)
    ]
    result = extract_snapshot(
        backbones, iter(batches), tmp_path / "h.h5", num_classes=4, target_labels=False, progress=False
    )
    snap = Snapshot(result.path)
    assert snap.dtype == np.float16 and snap.labels("target") is None and snap.is_negative("source") is None
    assert snap.uids("target").tolist() == ["1", "3", "5", "7", "9", "11"]


def test_failures_name_the_problem_and_leave_no_file(tmp_path: Path, backbones: dict[str, nn.Module]) -> None:
    batch = {
        "rgb": torch.randn(2, 3, 8, 12, 12),
        "flow": torch.randn(2, 2, 8, 12, 12),
        "label": torch.tensor([0, 1]),
        "uid": ["a", "b"],
        "domain": ["source", "elsewhere"],
    }
    with pytest.raises(ValueError, match=r"batch 0: 'domain' must be 'source'/'target' or 0/1, got \['elsewhere'\]"):
        extract_snapshot(backbones, [batch], tmp_path / "a.h5", num_classes=2, progress=False)
    bad = {**backbones, "flow": nn.Flatten(start_dim=2)}  # [B, C, T*H*W]: not [B, d]
    with pytest.raises(ValueError, match=r"backbone for 'flow' must map a batch of 2 clips to \[B, d\]"):
        extract_snapshot(
            bad, [{**batch, "domain": ["source", "target"]}], tmp_path / "b.h5", num_classes=2, progress=False
        )
    with pytest.raises(KeyError, match=r"no clips for modality 'flow'"):
        extract_snapshot(
            backbones,
            [{k: v for k, v in batch.items() if k != "flow"}],
            tmp_path / "c.h5",
            num_classes=2,
            progress=False,
        )
    with pytest.raises(ValueError, match=r"yielded no batches"):
        extract_snapshot(backbones, [], tmp_path / "d.h5", num_classes=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
