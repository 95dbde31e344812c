"""Refinement policies in co-training: every registered refiner runs, controls do what they say, agents learn."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from cotrain_helpers import MODALITIES, ToyClips, toy_config, toy_datasets, toy_model  # noqa: E402

from experiments.config import ConfigError  # noqa: E402
from experiments.cotrain import CoTrainer  # noqa: E402
from experiments.refiners import REFINERS, RefinerContext, build_refiner  # noqa: E402
from mmir_env import DomainDiscriminator  # noqa: E402


def context(tmp_path, domain="source", **env):
    cfg = toy_config(tmp_path)
    for k, v in env.items():
        setattr(cfg.env, k, v)
    torch.manual_seed(0)
    return RefinerContext("alpha", domain, DomainDiscriminator(8), 8, 20, cfg, seed=3, device=torch.device("cpu"))


def test_ground_truth_removes_exactly_the_planted_rows(tmp_path):
    refiner = build_refiner("ground-truth", context(tmp_path))
    negative = torch.zeros(20, dtype=torch.bool)
    negative[[0, 3, 4, 17]] = True
    result = refiner.refine(torch.randn(20, 8), negative)
    assert torch.equal(result.keep, ~negative)
    assert (result.removed, result.negatives_removed, result.negatives_present) == (4, 4, 4)
    with pytest.raises(ValueError, match="is_negative"):
        refiner.refine(torch.randn(20, 8), None)


@pytest.mark.parametrize("E", [1, 2])
def test_random_and_relevance_remove_E_rows_per_set(tmp_path, E):
    ctx = context(tmp_path, E=E)
    feats = torch.randn(20, 8)
    rel = build_refiner("relevance", ctx).refine(feats)
    rnd = build_refiner("random", ctx).refine(feats)
    for result in (rel, rnd):
        assert (~result.keep).reshape(4, 5).sum(1).tolist() == [E] * 4  # E rows of every candidate set of n_c = 5
    # relevance removes the E least relevant rows of every set under the discriminator (eq. 3)
    from mmir_env.scoring import discriminator_relevance

    scores = discriminator_relevance(ctx.discriminator, feats.reshape(4, 5, 8), 0)  # 0: source
    lowest = torch.zeros(4, 5, dtype=torch.bool)
    lowest.scatter_(1, scores.argsort(dim=1)[:, :E], True)
    assert torch.equal(~rel.keep, lowest.reshape(-1))
    draws = {tuple(build_refiner("random", context(tmp_path, E=E)).refine(feats).keep.tolist()) for _ in range(2)}
    assert len(draws) == 1  # seeded: the same context gives the same draws


def test_none_keeps_everything(tmp_path):
    result = build_refiner("none", context(tmp_path)).refine(torch.randn(20, 8))
    assert bool(result.keep.all()) and result.removed == 0


@pytest.mark.parametrize("policy", sorted(set(REFINERS) - {"agent"}))
def test_every_control_runs_in_co_training(tmp_path, policy):
    cfg = toy_config(tmp_path)
    cfg.refinement.policy = policy
    trainer = CoTrainer(cfg, datasets=toy_datasets(), model=toy_model())
    trainer.run()
    lines = [json.loads(x) for x in (tmp_path / "toy" / "metrics.jsonl").read_text().splitlines() if '"stage": 2' in x]
    assert len(lines) == cfg.stage2.steps
    for m in MODALITIES:
        for d in ("source", "target"):
            rates = [r[f"removal_rate/{m}/{d}"] for r in lines]
            if policy in ("random", "relevance"):
                assert rates == [0.2] * len(lines)  # E = 1 of n_c = 5, the agents' rate
            elif policy == "none":
                assert rates == [0.0] * len(lines)
            else:
                assert all(
                    r[f"removed/{m}/{d}"] == r[f"negatives_present/{m}/{d}"] == r[f"negatives_removed/{m}/{d}"]
                    for r in lines
                )
    assert not trainer.module.agents  # nothing learns by gradient


class NoGroundTruth(ToyClips):
    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        del item["is_negative"]
        return item


def test_ground_truth_policy_on_data_without_ground_truth_names_the_key(tmp_path):
    cfg = toy_config(tmp_path)
    cfg.refinement.policy = "ground-truth"
    data = {
        "source": NoGroundTruth(60, "source", 1),
        "target": NoGroundTruth(60, "target", 2),
        "test": NoGroundTruth(30, "target", 3),
    }
    with pytest.raises(ConfigError, match=r"refinement\.policy = 'ground-truth'.*is_negative"):
        CoTrainer(cfg, datasets=data, model=toy_model())


@pytest.mark.parametrize("algorithm", ["mmir-dqn", "dqn", "qrdqn"])
def test_agents_of_every_algorithm_learn_in_co_training(tmp_path, algorithm):
    cfg = toy_config(tmp_path)
    cfg.agents.algorithm = algorithm
    trainer = CoTrainer(cfg, datasets=toy_datasets(), model=toy_model())
    trainer.run()
    lines = [json.loads(x) for x in (tmp_path / "toy" / "metrics.jsonl").read_text().splitlines() if '"stage": 2' in x]
    for key, refiner in trainer.refiners.items():
        name = "/".join(key)
        assert refiner.agent.replay_size() == 2 * cfg.stage2.steps  # 2 candidate sets per half-batch per step
        td = [r[f"td_loss/{name}"] for r in lines if f"td_loss/{name}" in r]
        assert len(td) >= cfg.stage2.steps - 4 and all(math.isfinite(v) for v in td)  # from the 4th step: replay >= 8
    assert bool(len(trainer.module.agents)) == (algorithm == "mmir-dqn")  # only it learns through the joint backward


def test_learn_only_agents_learn_but_remove_nothing(tmp_path):
    cfg = toy_config(tmp_path)
    cfg.refinement.learn_only = True
    trainer = CoTrainer(cfg, datasets=toy_datasets(), model=toy_model())
    trainer.run()
    lines = [json.loads(x) for x in (tmp_path / "toy" / "metrics.jsonl").read_text().splitlines() if '"stage": 2' in x]
    for m, d in trainer.refiners:
        key = f"{m}/{d}"
        assert all(
            r[f"removed/{key}"] == 0 and r[f"selected/{key}"] == 2 for r in lines
        )  # chose 1 row of each of 2 sets, kept all
        assert any(math.isfinite(r.get(f"td_loss/{key}", math.nan)) and r[f"td_loss/{key}"] > 0 for r in lines)
    assert len(trainer.module.agents) == 4  # they still learn through the joint backward
