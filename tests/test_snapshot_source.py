"""mmir_env.sources.snapshot: SnapshotSource in both modes and parity with the in-memory synthetic source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from snapshot_helpers import D, make_data, write_snapshot

from agents.heuristics import OracleAgent, RandomAgent
from experiments.study import evaluate_selection
from features.snapshot import Snapshot
from mmir_env import InstanceRefinementEnv, make_synthetic_source
from mmir_env.discriminator import DomainDiscriminator
from mmir_env.sources.base import CandidateSource
from mmir_env.sources.snapshot import SnapshotSource, write_synthetic_snapshot

SYNTH = dict(feature_dim=32, num_source=300, num_target=300)


@pytest.fixture(scope="module")
def data() -> dict:
    return make_data(seed=3, rows={"source": 120, "target": 90})


@pytest.fixture(scope="module")
def snap_path(tmp_path_factory: pytest.TempPathFactory, data: dict) -> Path:
    return write_snapshot(tmp_path_factory.mktemp("snap") / "s.h5", data, dtype="float32")


@pytest.mark.parametrize("backend", ["ram", "memmap", "hdf5"])
@pytest.mark.parametrize("mode", ["random", "epoch"])
def test_sets_are_deterministic_distinct_and_carry_ground_truth(
    snap_path: Path, data: dict, mode: str, backend: str
) -> None:
    snap = Snapshot(snap_path, memory_map=backend != "hdf5")
    source = SnapshotSource(snap, "flow", mode=mode, batch_size=20, in_memory=backend == "ram")
    assert isinstance(source, CandidateSource) and source.in_memory is (backend == "ram") and source.has_ground_truth
    assert (snap.memmap("source", "flow") is None) is (backend == "hdf5")
    for domain in ("source", "target"):
        a = source.sample(np.random.default_rng(5), domain, 37, 5)
        b = source.sample(np.random.default_rng(5), domain, 37, 5)
        c = source.sample(np.random.default_rng(6), domain, 37, 5)
        assert torch.equal(a.index, b.index) and torch.equal(a.features, b.features)
        assert not torch.equal(a.index, c.index)
        assert a.features.shape == (37, 5, D) and a.features.dtype == torch.float32
        assert (a.index.sort(dim=1).values.diff(dim=1) > 0).all(), "rows repeat within a set"
        expected = torch.from_numpy(data[domain]["features"]["flow"])[a.index]
        assert torch.equal(a.features, expected)
        assert torch.equal(a.is_negative, torch.from_numpy(data[domain]["is_negative"])[a.index])
        assert torch.equal(a.labels, torch.from_numpy(data[domain]["label"])[a.index])


def test_epoch_mode_is_the_cotraining_layout(snap_path: Path) -> None:
    source = SnapshotSource(snap_path, "rgb", mode="epoch", batch_size=20)
    rng = np.random.default_rng(0)
    # 120 source clips: 6 batches of 20, each cut into 4 sets of 5 -> 24 sets cover the epoch once.
    epoch = source.sample(rng, "source", 24, 5).index
    assert sorted(epoch.flatten().tolist()) == list(range(120))
    reference = np.random.default_rng(0).permutation(120).reshape(6, 20).reshape(24, 5)
    np.testing.assert_array_equal(epoch.numpy(), reference)
    # Batches of 20 with n_c = 6 hold 3 sets each; the 2 leftover rows of each batch are not shown.
    source6 = SnapshotSource(snap_path, "rgb", mode="epoch", batch_size=20)
    sets = source6.sample(np.random.default_rng(1), "target", 12, 6).index.numpy()  # 90 target -> 4 batches
    order = np.random.default_rng(1).permutation(90)[:80].reshape(4, 20)[:, :18].reshape(12, 6)
    np.testing.assert_array_equal(sets, order)
    # The next call starts a new epoch drawn from the same generator.
    rng = np.random.default_rng(2)
    first = source.sample(rng, "source", 24, 5).index
    second = source.sample(rng, "source", 24, 5).index
    assert sorted(second.flatten().tolist()) == list(range(120)) and not torch.equal(first, second)


def test_epoch_mode_follows_env_reseeding(snap_path: Path) -> None:
    source = SnapshotSource(snap_path, "rgb", mode="epoch", batch_size=20)
    env = InstanceRefinementEnv(source, domain="target", n_c=5)

    def episodes(seed: int) -> list[list[int]]:
        _, info = env.reset(seed=seed)
        out = [info["candidate_index"].tolist()]
        for _ in range(30):  # crosses the 16-set epoch boundary of the 90-clip target pool
            out.append(env.reset()[1]["candidate_index"].tolist())
        return out

    first = episodes(11)
    assert episodes(3) != first
    assert episodes(11) == first
    assert sorted(sum(first[:16], [])) == sorted(set(sum(first[:16], [])))  # an epoch never repeats a clip


def test_default_and_user_discriminator(snap_path: Path) -> None:
    stored = SnapshotSource(snap_path, "flow")
    assert isinstance(stored.discriminator, DomainDiscriminator)
    assert torch.equal(stored.discriminator.net[0].weight, Snapshot(snap_path).load_discriminator("flow").net[0].weight)
    mine = DomainDiscriminator(D, hidden_dim=8)
    env = InstanceRefinementEnv(SnapshotSource(snap_path, "flow", discriminator=mine), domain="source")
    assert env.discriminator is mine


def test_bad_arguments_are_named(snap_path: Path) -> None:
    with pytest.raises(ValueError, match=r"modality must be one of \('rgb', 'flow'\)"):
        SnapshotSource(snap_path, "audio")
    with pytest.raises(ValueError, match=r"mode must be one of"):
        SnapshotSource(snap_path, "rgb", mode="sequential")
    with pytest.raises(ValueError, match=r"at least batch_size=100 clips per domain.*'target': 90"):
        SnapshotSource(snap_path, "rgb", mode="epoch", batch_size=100)
    with pytest.raises(ValueError, match=r"n_c=8 exceeds batch_size=6"):
        SnapshotSource(snap_path, "rgb", mode="epoch", batch_size=6).sample(np.random.default_rng(0), "source", 1, 8)


def test_synthetic_snapshot_matches_the_in_memory_source(tmp_path: Path) -> None:
    path = write_synthetic_snapshot(tmp_path / "synth.h5", seed=4, pretrain_steps=60, **SYNTH)
    memories = {m: make_synthetic_source(seed=4, modality=m, pretrain_steps=60, **SYNTH) for m in ("rgb", "flow")}
    for modality, memory in memories.items():
        snap = SnapshotSource(path, modality)
        assert snap.negative_fraction == memory.negative_fraction
        for domain in ("source", "target"):
            assert torch.equal(snap.features(domain), memory.features(domain))
            assert torch.equal(snap.is_negative(domain), memory.is_negative(domain))
        for key, value in memory.discriminator.state_dict().items():
            assert torch.equal(snap.discriminator.state_dict()[key], value), (modality, key)
    # Same seeds -> same candidate sets -> identical random/oracle selections and precision.
    memory = memories["rgb"]
    cases = [(True, "source", "oracle"), (True, "target", "random"), (False, "target", "oracle")]
    for in_memory, domain, agent in cases:
        snap = SnapshotSource(path, "rgb", in_memory=in_memory)
        envs = (InstanceRefinementEnv(memory, domain=domain), InstanceRefinementEnv(snap, domain=domain))
        make = (lambda env: RandomAgent(env, seed=0)) if agent == "random" else OracleAgent
        stats = [evaluate_selection(make(env), env, 100, seed=9) for env in envs]
        assert stats[0].precision == stats[1].precision and stats[0].recall == stats[1].recall
        assert stats[0].mean_episode_reward == stats[1].mean_episode_reward


def test_float16_synthetic_snapshot_stays_close(tmp_path: Path) -> None:
    path = write_synthetic_snapshot(tmp_path / "synth16.h5", seed=4, dtype="float16", pretrain_steps=60, **SYNTH)
    memory = make_synthetic_source(seed=4, pretrain_steps=60, **SYNTH)
    snap = SnapshotSource(path, "rgb")
    torch.testing.assert_close(snap.features("target"), memory.features("target"), rtol=2**-10, atol=1e-4)
    envs = [InstanceRefinementEnv(s, domain="target") for s in (memory, snap)]
    stats = [evaluate_selection(OracleAgent(env), env, 200, seed=1) for env in envs]
    assert abs(stats[0].precision - stats[1].precision) <= 0.03
