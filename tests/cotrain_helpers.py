"""A tiny modality-agnostic co-training setup (no video), shared by the co-training tests and the DDP worker."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from experiments.config import RunConfig, validate
from features.two_stream import TwoStream

MODALITIES = ("alpha", "beta")  # the loop must not care what modalities are called

# A feature-benchmark run small enough for a unit test: every stage, evaluation and agent update still happens.
TINY_FEATURE_BENCHMARK = {
    "feature_benchmark.source_size": 100,
    "feature_benchmark.target_size": 100,
    "feature_benchmark.test_size": 500,
    "stage1.steps": 5,
    "stage2.steps": 6,
    "evaluation.every": 3,
    "evaluation.last": 2,
    "agents.learning_starts": 4,
    "agents.batch_size": 4,
}


class ToyClips(Dataset):
    """Clips of a 2-modality toy domain: class-dependent means, a domain offset, planted negatives."""

    def __init__(
        self, n: int, role: str, seed: int, num_classes: int = 3, shift: float = 0.5, labels_scrambled: bool = False
    ) -> None:
        rng = np.random.default_rng(seed)
        self.labels = rng.integers(0, num_classes, n)
        self.negative = rng.random(n) < 0.2
        means = np.random.default_rng(99).normal(size=(num_classes, 2, 6)).astype(np.float32)
        x = (
            means[self.labels]
            + (shift if role == "target" else 0.0)
            + 0.3 * rng.normal(size=(n, 2, 6)).astype(np.float32)
        )
        x[self.negative] += 2.0 * (1 if role == "target" else -1)
        self.x = torch.from_numpy(x.astype(np.float32))
        self.role = role
        self.reported = rng.integers(0, num_classes, n) if labels_scrambled else self.labels
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        noise = torch.from_numpy(np.random.default_rng((self.epoch, i)).normal(0, 0.05, size=(2, 6)).astype(np.float32))
        x = self.x[i] + noise  # per-(epoch, item) augmentation, as EpicClips
        return {
            "alpha": x[0],
            "beta": x[1],
            "label": int(self.reported[i]),
            "uid": i,
            "domain": self.role,
            "is_negative": bool(self.negative[i]),
        }


def toy_model(seed: int = 0, batchnorm: bool = False, dropout: float = 0.5, bias_before_norm: bool = True) -> TwoStream:
    """``bias_before_norm=False``: no bias under the BatchNorm (its gradient is zero up to rounding, which
    Adam would amplify into noise; I3D's units have none either)."""
    torch.manual_seed(seed)
    norm = (lambda: nn.BatchNorm1d(16)) if batchnorm else nn.Identity
    bias = bias_before_norm or not batchnorm
    backbones = {m: nn.Sequential(nn.Linear(6, 16, bias=bias), norm(), nn.ReLU(), nn.Linear(16, 8)) for m in MODALITIES}
    return TwoStream(backbones, num_classes=3, feature_dims={m: 8 for m in MODALITIES}, dropout=dropout)


def equivalence_config(tmp_path, world_size: int, sync_batchnorm: bool) -> RunConfig:
    """Adversarial-only on the toy domains with per-process batches of a global batch split over ``world_size``.

    No agents (each process's replay holds its own sets, so agents are not expected to match a single
    process) and no dropout (each process draws its own masks): what DDP must then reproduce exactly.
    """
    cfg = toy_config(tmp_path, refinement=False)
    cfg.stage1.batch_size = 16 // world_size
    cfg.stage2.batch_size = 20 // world_size
    cfg.stage2.steps = 6
    cfg.model.dropout = 0.0
    cfg.distributed.backend = "gloo"
    cfg.distributed.sync_batchnorm = sync_batchnorm
    return validate(cfg)


def toy_config(tmp_path, **stage2) -> RunConfig:
    cfg = RunConfig(name="toy", output_dir=str(tmp_path), seed=0, device="cpu")
    cfg.model.modalities = list(MODALITIES)
    cfg.model.num_classes = 3
    cfg.agents.s_agents = list(MODALITIES)
    cfg.agents.t_agents = list(MODALITIES)
    cfg.agents.learning_starts = 8
    cfg.agents.batch_size = 8
    cfg.data.num_workers = 0
    cfg.stage1.steps, cfg.stage1.batch_size = 4, 16
    cfg.stage2.steps, cfg.stage2.batch_size = 10, 20
    for k, v in stage2.items():
        setattr(cfg.stage2, k, v)
    cfg.evaluation.every = 5
    cfg.refinement.diagnostics_every = 1  # the diagnostics of every step (tests read them)
    cfg.checkpoints.every = 3
    cfg.snapshots.enabled = False
    return validate(cfg)


def toy_datasets(labels_scrambled: bool = False) -> dict:
    return {
        "source": ToyClips(60, "source", 1),
        "target": ToyClips(60, "target", 2, labels_scrambled=labels_scrambled),
        "test": ToyClips(30, "target", 3),
    }
