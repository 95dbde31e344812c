"""The refinement diagnostics on hand-made batches, and the refinement designs' wiring."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from cotrain_helpers import MODALITIES, toy_config, toy_datasets, toy_model  # noqa: E402

from experiments.config import ConfigError, validate  # noqa: E402
from experiments.cotrain import CoTrainer  # noqa: E402
from experiments.diagnostics_report import method_diagnostics, run_diagnostics  # noqa: E402
from experiments.refiners import RefinerContext, build_refiner  # noqa: E402
from experiments.refiners.diagnostics import auc, domain_auc, set_diagnostics, staleness  # noqa: E402
from mmir_env.reward import compute_reward, row_rewards  # noqa: E402

REL = torch.tensor([[0.2, 0.6, 0.7], [0.4, 0.45, 0.3]])
ALL = torch.ones(2, 3, dtype=torch.bool)
NEG = torch.tensor([[True, False, False], [False, False, True]])
SELECTED = torch.tensor([[True, False, False], [False, True, False]])


def test_auc_counts_pairs_and_half_the_ties():
    assert auc(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.8])) == pytest.approx(3.5 / 4)
    assert auc(torch.tensor([0.1]), torch.tensor([0.9])) == 0.0
    assert auc(torch.tensor([]), torch.tensor([0.5])) is None
    # a domain classifier: target rows should get the higher P(target)
    assert domain_auc(torch.tensor([0.1, 0.2]), torch.tensor([0.8, 0.15])) == pytest.approx(3 / 4)


def test_set_diagnostics_on_a_hand_made_batch():
    d = set_diagnostics(REL, ALL, torch.tensor([0, 1]), SELECTED, NEG, "threshold", 0.5)
    assert d["spread"] == pytest.approx((0.5 + 0.15) / 2)
    assert d["uniform_reward"] == 0.5  # set 1: every row under tau, all +1
    assert d["agreement"] == 0.5 and d["agreement_chance"] == pytest.approx(1 / 3)  # argmin rows: 0 and 2
    assert d["greedy_reward"] == 1.0 and d["random_reward"] == pytest.approx((-1 / 3 + 1) / 2)
    assert d["precision"] == 0.5 and d["precision_chance"] == pytest.approx(2 / 6)
    assert d["recall"] == 0.5 and d["recall_chance"] == pytest.approx(2 / 6)
    assert d["negative_auc"] == 1.0  # both negatives are rated below every clean row
    bare = set_diagnostics(REL, ALL, None, SELECTED, None, "threshold", 0.5)
    assert not {"agreement", "precision", "recall", "negative_auc"} & set(bare)
    ranked = set_diagnostics(REL, ALL, torch.tensor([0, 1]), SELECTED, NEG, "rank", 0.5)
    assert ranked["uniform_reward"] == 0.0 and ranked["greedy_reward"] == 0.0  # one +1 and one -1


def test_row_rewards_match_the_reward_of_each_choice():
    for kind in ("threshold", "rank", "margin"):
        every = row_rewards(kind, REL, ALL, 0.5)
        for a in range(3):
            chosen = compute_reward(kind, REL, torch.full((2,), a), ALL, 0.5)
            assert torch.allclose(every[:, a], chosen), kind
    assert torch.allclose(row_rewards("margin", REL, ALL, 0.5), 0.5 - REL)


def test_staleness_is_the_share_of_flipped_signs():
    assert staleness(torch.tensor([1.0, -1, 1, 1]), torch.tensor([1.0, 1, -1, 1])) == 0.5
    assert staleness(torch.tensor([0.2, -0.1]), torch.tensor([0.05, -0.3])) == 0.0  # margin rewards: signs only


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def agent_context(tmp_path, **refinement) -> RefinerContext:
    cfg = toy_config(tmp_path)
    for k, v in refinement.items():
        setattr(cfg.refinement, k, v)
    return RefinerContext("alpha", "source", Linear(), 8, 20, validate(cfg), seed=3, device=torch.device("cpu"))


def test_a_discriminator_that_flips_makes_every_replayed_reward_stale(tmp_path):
    ctx = agent_context(tmp_path)
    refiner = build_refiner("agent", ctx)
    feats = torch.randn(20, 8)
    first = refiner.refine(feats)
    assert "diag/staleness" not in first.stats  # empty replay
    assert refiner.refine(feats).stats["diag/staleness"] == 0.0  # same discriminator: nothing stale
    with torch.no_grad():
        ctx.discriminator.w.neg_()  # relevance r -> 1 - r: every threshold reward changes sign
    assert refiner.refine(feats).stats["diag/staleness"] == 1.0


def test_relabelling_trains_on_the_current_reward(tmp_path):
    ctx = agent_context(tmp_path, relabel=True)
    refiner = build_refiner("agent", ctx)
    agent = refiner.agent
    feats = torch.randn(4, 5, 8)
    actions = torch.zeros(4, dtype=torch.long)
    mask = torch.ones(4, 5, dtype=torch.bool)
    for _ in range(3):  # 12 identical-looking transitions stored with reward +1
        agent.observe(
            feats,
            actions,
            torch.ones(4),
            None,
            torch.ones(4, dtype=torch.bool),
            mask & (torch.arange(5) != 0),
            obs_masks=mask,
        )
    now = refiner.current_reward(feats, mask, actions)
    batch = agent.replay.sample(agent.batch_size, torch.Generator().manual_seed(0))
    agent.generator.manual_seed(0)
    q = agent.q_net(batch.obs, batch.mask).gather(1, batch.actions.unsqueeze(1)).squeeze(1)
    expected = torch.mean(
        (q - compute_reward("threshold", refiner.scorer(batch.obs).sigmoid(), batch.actions, batch.mask, 0.5)) ** 2
    )
    assert torch.allclose(agent.td_loss(), expected)
    assert now.shape == (4,)
    agent.reward_relabel = None
    agent.generator.manual_seed(0)
    assert torch.allclose(agent.td_loss(), torch.mean((q - 1.0) ** 2))  # the stored rewards


def test_warm_up_learns_but_removes_nothing_then_removes_and_survives_a_checkpoint(tmp_path):
    refiner = build_refiner("agent", agent_context(tmp_path, warmup_steps=2))
    feats = torch.randn(20, 8)
    results = [refiner.refine(feats) for _ in range(2)]
    assert all(bool(r.keep.all()) and r.stats["selected"] == 4 for r in results)
    state = refiner.state_dict()
    assert state["refiner_calls"] == 2
    fresh = build_refiner("agent", agent_context(tmp_path, warmup_steps=2))
    fresh.load_state_dict(state)
    assert int((~fresh.refine(feats).keep).sum()) == 4  # one row of each of the 4 sets
    assert fresh.agent.replay_size() == 12


def test_relabel_needs_an_agent_that_can_re_score_its_replay(tmp_path):
    cfg = toy_config(tmp_path)
    cfg.refinement.relabel = True
    cfg.agents.algorithm = "dqn"
    with pytest.raises(ConfigError, match="refinement.relabel"):
        validate(cfg)
    cfg.agents.algorithm = "mmir-dqn"
    cfg.refinement.warmup_steps = -1
    with pytest.raises(ConfigError, match="warmup_steps"):
        validate(cfg)


def test_an_mmir_run_logs_every_diagnostic_and_the_report_reads_them(tmp_path):
    cfg = toy_config(tmp_path)
    cfg.refinement.relevance = "critic"
    cfg.refinement.relabel = True
    cfg.env.reward = "margin"
    trainer = CoTrainer(validate(cfg), datasets=toy_datasets(), model=toy_model())
    # the refiners score rewards with the critic; the adversarial loss keeps the GRL discriminators
    critic = trainer.module.objectives["relevance-critic"].critics
    for (m, _), refiner in trainer.refiners.items():
        assert refiner.env.discriminator is critic[m] and refiner.discriminator is trainer.discriminators[m]
    trainer.run()
    rows = [json.loads(x) for x in (tmp_path / "toy" / "metrics.jsonl").read_text().splitlines()]
    stage2 = [r for r in rows if r["stage"] == 2]
    assert all(r["critic"] > 0 for r in stage2)
    names = (
        "disc_auc",
        "relevance_auc",
        "spread",
        "uniform_reward",
        "agreement",
        "agreement_chance",
        "greedy_reward",
        "random_reward",
        "precision",
        "precision_chance",
        "recall",
        "recall_chance",
        "negative_auc",
        "staleness",
    )
    for m in MODALITIES:
        for d in ("source", "target"):
            assert {f"diag/{n}/{m}/{d}" for n in names} <= set().union(*map(set, stage2)), (m, d)
    means = run_diagnostics(rows)
    assert set(names) <= set(means) and 0.0 <= means["staleness"] <= 1.0

    class Record:
        path, method, pair = tmp_path / "toy", "mmir", "S→T"

    (row,) = method_diagnostics([Record()])
    assert row.seeds == 1 and row.precision_excess is not None
    assert row.precision_excess[0] == pytest.approx(means["precision"] - means["precision_chance"])


def test_diagnostics_never_change_a_run_and_can_be_switched_off(tmp_path):
    lines = {}
    for on in (True, False):
        cfg = toy_config(tmp_path / str(on))
        cfg.refinement.diagnostics = on
        CoTrainer(validate(cfg), datasets=toy_datasets(), model=toy_model()).run()
        lines[on] = [json.loads(x) for x in (tmp_path / str(on) / "toy" / "metrics.jsonl").read_text().splitlines()]
    assert not any(k.startswith("diag/") for r in lines[False] for k in r)
    assert any(k.startswith("diag/") for r in lines[True] for k in r)
    stripped = [{k: v for k, v in r.items() if not k.startswith("diag/") and k != "time"} for r in lines[True]]
    assert stripped == [{k: v for k, v in r.items() if k != "time"} for r in lines[False]]


@pytest.mark.parametrize("policy", ["agent", "random"])
def test_diagnostics_are_taken_every_nth_step_from_the_first(tmp_path, policy):
    cfg = toy_config(tmp_path)
    cfg.refinement.policy, cfg.refinement.diagnostics_every = policy, 3
    CoTrainer(validate(cfg), datasets=toy_datasets(), model=toy_model()).run()
    rows = [json.loads(x) for x in (tmp_path / "toy" / "metrics.jsonl").read_text().splitlines()]
    diagnosed = [r["step"] for r in rows if r["stage"] == 2 and any(k.startswith("diag/") for k in r)]
    assert diagnosed == [1, 4, 7, 10]  # stage 2 has 10 steps


def test_the_diagnostics_plot_draws_the_diagnosed_steps_only(tmp_path):
    pytest.importorskip("matplotlib")
    from experiments.diagnostics_report import write_diagnostics_plot

    cfg = toy_config(tmp_path)
    cfg.refinement.diagnostics_every = 2
    CoTrainer(validate(cfg), datasets=toy_datasets(), model=toy_model()).run()

    class Record:
        path, method = tmp_path / "toy", "mmir"

    path = write_diagnostics_plot([Record()], tmp_path / "plots")
    assert path is not None and path.stat().st_size > 0
