"""The baselines and ablations: each method's loss against a hand-computed value, its overlay, tiny runs."""

from __future__ import annotations

import math
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from torch import nn

from experiments.config import ConfigError, load_config
from experiments.cotrain import CoTrainer
from experiments.evaluation.adabn import adapt_batchnorm
from experiments.methods import METHODS, apply_method, get_method
from experiments.objectives.adversarial import adversarial_loss
from experiments.objectives.classification import classification_loss
from experiments.objectives.correspondence import CorrespondenceHead
from experiments.objectives.mmd import kernel_bandwidths, mk_mmd
from experiments.steps.mcd import classifier_discrepancy, fused_logits, second_heads

sys.path.insert(0, str(Path(__file__).parent))
from cotrain_helpers import MODALITIES, toy_config, toy_datasets, toy_model

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "experiments" / "configs" / "paper" / "D2-D1.toml"
OVERLAYS = ROOT / "experiments" / "configs" / "methods"


# -- losses against hand-computed values ---------------------------------------------------------
def test_source_only_and_supervised_cross_entropy_by_hand():
    logits = torch.tensor([[math.log(3.0), 0.0]])  # softmax (0.75, 0.25)
    assert classification_loss(logits, torch.tensor([0])).item() == pytest.approx(-math.log(0.75))
    assert classification_loss(logits, torch.tensor([1])).item() == pytest.approx(-math.log(0.25))


class _Fixed(nn.Module):
    """A 'discriminator' whose logit is the feature's first coordinate."""

    def forward(self, x):
        return x[:, 0]


def test_adversarial_loss_averages_kept_rows_only_by_hand():
    source = torch.tensor([[0.0], [5.0]])  # logits 0 and 5; label 0 (source)
    target = torch.tensor([[0.0]])  # logit 0; label 1 (target)
    keep_s, keep_t = torch.tensor([True, False]), torch.tensor([True])
    # kept rows: BCE(0, 0) = log 2 and BCE(0, 1) = log 2; the removed row (huge loss) must not count
    assert adversarial_loss(_Fixed(), source, target, keep_s, keep_t).item() == pytest.approx(math.log(2.0))
    all_rows = adversarial_loss(_Fixed(), source, target, torch.tensor([True, True]), keep_t).item()
    assert all_rows == pytest.approx((2 * math.log(2.0) + 5.0 + math.log1p(math.exp(-5.0))) / 3)


def test_mk_mmd_by_hand():
    s, t = torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0]])
    # one Gaussian exp(-(a-b)^2 / 1): mean K_ss = (2 + 2/e)/4, K_tt = 1, mean K_st = (e^-4 + e^-1)/2
    expected = (2 + 2 / math.e) / 4 + 1 - (math.exp(-4) + math.exp(-1))
    assert mk_mmd(s, t, bandwidths=torch.tensor([1.0])).item() == pytest.approx(expected, rel=1e-6)
    # bandwidth base: pairwise squared distances of {0, 1, 2} off the diagonal sum to 12 over 6 pairs = 2
    assert kernel_bandwidths(s, t, kernel_mul=2.0, kernel_num=3).tolist() == pytest.approx([1.0, 2.0, 4.0])
    same = torch.randn(6, 4)
    assert mk_mmd(same, same).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"\[n_s, d\] and \[n_t, d\]"):
        mk_mmd(torch.zeros(2, 3), torch.zeros(2, 4))


def test_mcd_discrepancy_by_hand():
    p1 = torch.tensor([[0.0, 0.0]])  # (0.5, 0.5)
    p2 = torch.tensor([[math.log(3.0), 0.0]])  # (0.75, 0.25)
    assert classifier_discrepancy(p1, p2).item() == pytest.approx(0.25)
    assert classifier_discrepancy(p2, p2).item() == 0.0


def test_mcd_second_heads_fuse_like_the_model():
    model = toy_model()
    heads = second_heads(model, dropout=0.0).eval()
    feats = {m: torch.randn(4, 8) for m in MODALITIES}
    expected = sum(heads[m](feats[m]) for m in MODALITIES)
    assert torch.allclose(fused_logits(heads, feats), expected)


def test_mm_sada_correspondence_loss_by_hand():
    head = CorrespondenceHead([1, 1], hidden_dim=1)
    with torch.no_grad():  # logit = relu(a - b) - 0.5: aligned pairs (a == b) give -0.5
        head.net[0].weight.copy_(torch.tensor([[1.0, -1.0]]))
        head.net[0].bias.zero_()
        head.net[2].weight.fill_(1.0)
        head.net[2].bias.fill_(-0.5)
    a = torch.tensor([[1.0], [3.0]])
    b = torch.tensor([[1.0], [3.0]])

    # aligned: (1,1), (3,3) -> logit -0.5, label 1; shuffled (b rolled): (1,3) -> -0.5, (3,1) -> 1.5, label 0
    def sp(x):
        return math.log1p(math.exp(x))

    expected = (2 * sp(0.5) + sp(-0.5) + sp(1.5)) / 4
    assert head([a, b]).item() == pytest.approx(expected, rel=1e-6)


def test_adabn_uses_exact_target_statistics_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = toy_model(batchnorm=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = [torch.randn(5, 6) * 3 + 1, torch.randn(7, 6) * 3 + 1]
    batches = [{m: x for m in MODALITIES} for x in data]
    adapted = adapt_batchnorm(model, batches, MODALITIES)
    bn = adapted.backbones["alpha"][1]
    # cumulative average of per-batch means / unbiased variances, weighted equally per batch
    means = torch.stack([adapted.backbones["alpha"][0](x).detach().mean(0) for x in data])
    variances = torch.stack([adapted.backbones["alpha"][0](x).detach().var(0, unbiased=True) for x in data])
    assert torch.allclose(bn.running_mean, means.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, variances.mean(0), atol=1e-4)
    assert not adapted.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="needs BatchNorm layers; the model has none"):
        adapt_batchnorm(toy_model(), batches, MODALITIES)


# -- the registry and the ready configs ----------------------------------------------------------
def test_every_method_applies_to_the_paper_config_and_validates():
    base = load_config(PAPER)
    for name, method in METHODS.items():
        cfg = apply_method(base, name)
        assert cfg.method == name
        assert ("adversarial" in cfg.stage2.objectives, cfg.stage2.refinement) == (
            method.adversarial,
            method.refinement,
        )
        assert method.citation and method.title
    assert apply_method(base, "supervised-target").data.source == "D1"
    mcd = apply_method(base, "mcd").stage2
    assert (mcd.strategy, mcd.objectives) == ("mcd", {})
    assert apply_method(base, "adabn").evaluation.hooks == ["adabn"]
    assert apply_method(base, "mmd").stage2.objectives == {"mmd": 1.0}
    assert apply_method(base, "mm-sada").stage2.objectives == {"adversarial": 1.0, "correspondence": 1.0}
    with pytest.raises(ConfigError, match="unknown method 'nope'; known methods: source-only"):
        get_method("nope")


def test_table2_ablations_switch_off_exactly_one_agent_group():
    base = apply_method(load_config(PAPER), "mmir")
    expected = {
        "mmir-no-rgb-agents": (["flow"], ["flow"]),
        "mmir-no-flow-agents": (["rgb"], ["rgb"]),
        "mmir-no-rgb-s-agent": (["flow"], ["rgb", "flow"]),
        "mmir-no-rgb-t-agent": (["rgb", "flow"], ["flow"]),
    }
    for name, (s_agents, t_agents) in expected.items():
        cfg = apply_method(base, name)
        assert (cfg.agents.s_agents, cfg.agents.t_agents) == (s_agents, t_agents), name
        differing = {k for k, v in cfg.to_dict().items() if v != base.to_dict()[k]}
        assert differing <= {"method", "agents"}, (name, differing)


def test_overlay_files_are_the_methods_and_validate():
    files = sorted(p.stem for p in OVERLAYS.glob("*.toml"))
    assert files == sorted(METHODS)
    for name in METHODS:
        overlay = tomllib.loads((OVERLAYS / f"{name}.toml").read_text())
        for key in ("title", "citation", "tables", "order"):
            overlay.pop(key)
        assert overlay["method"] == name
        overlay.pop("source_is_target", None)
        flat = {
            f"{section}.{key}": value
            for section, table in overlay.items()
            if isinstance(table, dict)
            for key, value in table.items()
        }
        cfg = load_config(PAPER, flat)  # every overlay key is a real config key of the right type
        assert cfg.stage2.refinement == METHODS[name].refinement


def test_sensor_modalities_map_agent_lists():
    cfg = toy_config(Path("/tmp/unused"))
    cfg.agents.s_agents, cfg.agents.t_agents = [], []
    mapped = apply_method(cfg, "mmir-no-rgb-s-agent")
    assert (mapped.agents.s_agents, mapped.agents.t_agents) == (["beta"], ["alpha", "beta"])


# -- tiny runs of each baseline through the one loop ----------------------------------------------
@pytest.mark.parametrize("method", ["mmd", "mcd", "adabn", "mm-sada"])
def test_baselines_train_end_to_end_and_resume_exactly(tmp_path, method):
    cfg = apply_method(toy_config(tmp_path / "full"), method)
    cfg.stage2.mcd_generator_steps = 2
    full = CoTrainer(cfg, datasets=toy_datasets(), model=toy_model(batchnorm=True))
    summary = full.run()
    assert summary["method"] == method and 0.0 <= summary["top1_last"] <= 1.0
    logged = [line for line in (full.run_dir / "metrics.jsonl").read_text().splitlines() if '"stage": 2' in line]
    assert len(logged) == cfg.stage2.steps
    key = {"mmd": '"mmd"', "mcd": '"discrepancy"', "mm-sada": '"corr"', "adabn": '"cls"'}[method]
    assert all(key in line for line in logged)

    class Interrupt(Exception):
        pass

    def stop_at(stage, step, metrics):
        if (stage, step) == (2, 6):  # checkpoints every 3 steps: the last one is at stage 2, step 6
            raise Interrupt

    def config(name):
        c = apply_method(toy_config(tmp_path / name), method)
        c.stage2.mcd_generator_steps = 2
        return c

    with pytest.raises(Interrupt):
        CoTrainer(config("cut"), datasets=toy_datasets(), model=toy_model(batchnorm=True), on_step=stop_at).run()
    resumed = CoTrainer(config("cut"), datasets=toy_datasets(), model=toy_model(seed=5, batchnorm=True))
    resumed_summary = resumed.run(resume=True)
    assert resumed_summary["evaluations"] == summary["evaluations"]
    full_state, resumed_state = full.module.state_dict(), resumed.module.state_dict()  # everything that trains
    assert full_state.keys() == resumed_state.keys()
    for name, value in full_state.items():
        assert torch.equal(value, resumed_state[name]), name
    if method == "mcd":
        assert any(k.startswith("extras.mcd_heads.") for k in full_state)


def test_adabn_trains_exactly_like_source_only(tmp_path):
    """AdaBN changes evaluation only: its training must not drift from source-only's (same RNG streams)."""
    runs = {}
    for method in ("source-only", "adabn"):
        trainer = CoTrainer(
            apply_method(toy_config(tmp_path / method), method),
            datasets=toy_datasets(),
            model=toy_model(batchnorm=True),
        )
        trainer.run()
        runs[method] = trainer
    for a, b in zip(runs["source-only"].model.parameters(), runs["adabn"].model.parameters()):
        assert torch.equal(a, b)
