"""The co-training loop on a tiny modality-agnostic model (no video): the stage-2 step and resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from experiments.cotrain import CoTrainer
from experiments.objectives.adversarial import adversarial_loss
from experiments.steps import StepBatch

sys.path.insert(0, str(Path(__file__).parent))

from cotrain_helpers import MODALITIES, toy_config, toy_datasets, toy_model  # noqa: E402


def params(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_removed_instances_get_no_gradient_from_l_adv():
    torch.manual_seed(0)
    from mmir_env import DomainDiscriminator

    disc = DomainDiscriminator(8)
    src = torch.randn(10, 8, requires_grad=True)
    tgt = torch.randn(10, 8, requires_grad=True)
    keep_s = torch.ones(10, dtype=torch.bool)
    keep_t = torch.ones(10, dtype=torch.bool)
    keep_s[[1, 7]] = False
    keep_t[4] = False
    adversarial_loss(disc, src, tgt, keep_s, keep_t).backward()
    assert torch.all(src.grad[[1, 7]] == 0) and torch.all(tgt.grad[4] == 0)
    assert torch.all(src.grad[keep_s].abs().sum(1) > 0) and torch.all(tgt.grad[keep_t].abs().sum(1) > 0)


def test_stage2_step_losses_finite_agents_fill_replay_and_removed_rows_excluded(tmp_path):
    cfg = toy_config(tmp_path)
    trainer = CoTrainer(cfg, datasets=toy_datasets(), model=toy_model())
    ds_s, ds_t = trainer.datasets["source"], trainer.datasets["target"]
    batch_s = [ds_s[i] for i in range(10)]
    batch_t = [ds_t[i] for i in range(10)]
    source = {m: torch.stack([b[m] for b in batch_s]) for m in MODALITIES}
    target = {m: torch.stack([b[m] for b in batch_t]) for m in MODALITIES}
    labels = torch.tensor([b["label"] for b in batch_s])
    batch = StepBatch(source, labels, target, source_negative=torch.tensor([b["is_negative"] for b in batch_s]))
    out = trainer.module(batch, stage=2)
    loss, terms, results = out.loss, out.terms, out.refinement
    assert torch.isfinite(loss)
    assert set(terms) == {"cls", "adv", "dqn"} and all(torch.isfinite(v) for v in terms.values())
    assert set(results) == {f"{m}/{d}" for m in MODALITIES for d in ("source", "target")}
    for (m, d), refiner in trainer.refiners.items():
        assert len(refiner.agent.replay) == 2  # 10 clips = 2 candidate sets of 5, E = 1
        result = results[f"{m}/{d}"]
        assert result.removed == 2 and int((~result.keep).sum()) == 2
    loss.backward()
    assert all(p.grad is not None for p in trainer.discriminators.parameters())


def test_the_public_step_trains_what_run_trains(tmp_path):
    # CoTrainer's public calls (begin_stage, next_batch, training_step) are the steps run() takes
    cfg = toy_config(tmp_path / "run")
    cfg.evaluation.every = 10**6
    ran = CoTrainer(cfg, datasets=toy_datasets(), model=toy_model())
    ran.run()
    cfg2 = toy_config(tmp_path / "manual")
    manual = CoTrainer(cfg2, datasets=toy_datasets(), model=toy_model())
    torch.manual_seed(cfg2.seed + 2)  # as run() owns dropout's generator on a fresh start
    manual.module.train()
    for _ in range(cfg2.stage1.steps):
        manual.training_step(manual.next_batch())
        manual.step += 1
    manual.begin_stage(2)
    for _ in range(cfg2.stage2.steps):
        log = manual.training_step(manual.next_batch())
        manual.step += 1
    assert set(log.terms) >= {"loss", "cls", "adv", "dqn"}
    assert torch.equal(params(ran.model), params(manual.model))


def test_classifier_never_sees_target_labels(tmp_path):
    a = CoTrainer(toy_config(tmp_path / "a"), datasets=toy_datasets(), model=toy_model())
    b = CoTrainer(toy_config(tmp_path / "b"), datasets=toy_datasets(labels_scrambled=True), model=toy_model())
    a.run()
    b.run()
    assert torch.equal(params(a.model), params(b.model))


def test_ablation_switches_turn_agents_off(tmp_path):
    cfg = toy_config(tmp_path)
    cfg.agents.s_agents = ["beta"]
    cfg.agents.t_agents = []
    trainer = CoTrainer(cfg, datasets=toy_datasets(), model=toy_model())
    assert set(trainer.refiners) == {("beta", "source")}
    cfg2 = toy_config(tmp_path, refinement=False)
    assert CoTrainer(cfg2, datasets=toy_datasets(), model=toy_model()).refiners == {}


def test_run_logs_metrics_and_reports_mean_of_last_evaluations(tmp_path):
    cfg = toy_config(tmp_path)
    summary = CoTrainer(cfg, datasets=toy_datasets(), model=toy_model()).run()
    assert [e["step"] for e in summary["evaluations"]] == [5, 10]
    assert summary["top1_last"] == pytest.approx(np.mean([e["top1"] for e in summary["evaluations"]]))
    assert summary["evaluations"][0]["segments"] == 30  # the whole test split
    lines = [json.loads(x) for x in (tmp_path / "toy" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"]) for r in lines] == [(1, s) for s in range(1, 5)] + [(2, s) for s in range(1, 11)]
    assert all(np.isfinite(r["loss"]) for r in lines)


def prefetching(cfg, prefetch: str):
    cfg.data.prefetch = prefetch
    return cfg


@pytest.mark.parametrize("prefetch", ["off", "on"])
def test_resume_equals_uninterrupted(tmp_path, prefetch):
    """Also with the next batch finished in a prefetch thread: the same batches, and checkpoints record what was used."""
    full = CoTrainer(toy_config(tmp_path / "full"), datasets=toy_datasets(), model=toy_model())
    full_summary = full.run()

    class Interrupt(Exception):
        pass

    def stop_at(stage, step, metrics):
        if (stage, step) == (2, 6):  # checkpoints every 3 steps: the last one is at stage 2, step 6
            raise Interrupt

    cut = CoTrainer(
        prefetching(toy_config(tmp_path / "cut"), prefetch), datasets=toy_datasets(), model=toy_model(), on_step=stop_at
    )
    with pytest.raises(Interrupt):
        cut.run()
    resumed = CoTrainer(
        prefetching(toy_config(tmp_path / "cut"), prefetch), datasets=toy_datasets(), model=toy_model(seed=123)
    )
    resumed_summary = resumed.run(resume=True)
    assert torch.equal(params(full.model), params(resumed.model))
    assert torch.equal(params(full.discriminators), params(resumed.discriminators))
    for key in full.refiners:
        assert torch.equal(params(full.refiners[key].agent.q_net), params(resumed.refiners[key].agent.q_net))
    assert full_summary["evaluations"] == resumed_summary["evaluations"]
    full_log = (tmp_path / "full" / "toy" / "metrics.jsonl").read_text().splitlines()
    cut_log = (tmp_path / "cut" / "toy" / "metrics.jsonl").read_text().splitlines()
    # the cut run logged steps up to 6 of stage 2, then the resumed run re-logged from step 7
    assert cut_log[: 4 + 6] == full_log[: 4 + 6] and cut_log[4 + 6 :] == full_log[4 + 6 :]


def test_metrics_log_holds_one_run_after_a_rerun_or_a_resume_past_the_checkpoint(tmp_path):
    full = CoTrainer(toy_config(tmp_path / "full"), datasets=toy_datasets(), model=toy_model())
    full.run()
    full_log = (tmp_path / "full" / "toy" / "metrics.jsonl").read_text()

    class Interrupt(Exception):
        pass

    def stop_at(stage, step, metrics):
        if (stage, step) == (2, 7):  # logged, but the last checkpoint is at step 6
            raise Interrupt

    cut = CoTrainer(toy_config(tmp_path / "cut"), datasets=toy_datasets(), model=toy_model(), on_step=stop_at)
    with pytest.raises(Interrupt):
        cut.run()
    CoTrainer(toy_config(tmp_path / "cut"), datasets=toy_datasets(), model=toy_model()).run(resume=True)
    assert (tmp_path / "cut" / "toy" / "metrics.jsonl").read_text() == full_log  # step 7 logged once
    CoTrainer(
        toy_config(tmp_path / "full"), datasets=toy_datasets(), model=toy_model()
    ).run()  # a fresh run, same folder
    assert (tmp_path / "full" / "toy" / "metrics.jsonl").read_text() == full_log
