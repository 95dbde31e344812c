"""Relevance signals in co-training: configured rewards, states and AUC diagnostics, and runs without them unchanged."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))

from cotrain_helpers import MODALITIES, TINY_FEATURE_BENCHMARK, toy_config, toy_datasets, toy_model  # noqa: E402

from experiments.config import CONFIG_DIR, ConfigError, load_config, validate  # noqa: E402
from experiments.cotrain import CoTrainer  # noqa: E402
from experiments.cotrain_module import CoTrainModule  # noqa: E402
from experiments.refiners import RefinerContext, SignalRows, build_refiner, signal_needs  # noqa: E402
from mmir_env import DomainDiscriminator  # noqa: E402

PRESETS = CONFIG_DIR / "feature-benchmark"
TINY = TINY_FEATURE_BENCHMARK
NEW_PRESETS = (
    "relevance-density",
    "relevance-entropy",
    "relevance-pseudo-label",
    "relevance-agreement",
    "relevance-transferability",
    "mmir-robust-density",
    "mmir-robust-entropy",
)


def benchmark_run(tmp_path: Path, preset: str, **overrides) -> list[dict]:
    """The rows of ``metrics.jsonl`` of a tiny feature-benchmark run of ``preset``."""
    cfg = load_config(PRESETS / f"{preset}.toml", {**TINY, "output_dir": str(tmp_path), **overrides})
    CoTrainer(cfg).run()
    return [json.loads(line) for line in (cfg.run_dir() / "metrics.jsonl").read_text().splitlines()]


def context(tmp_path, domain="source", refinement=None, **env) -> RefinerContext:
    cfg = toy_config(tmp_path)
    for k, v in env.items():
        setattr(cfg.env, k, v)
    for k, v in (refinement or {}).items():
        setattr(cfg.refinement, k, v)
    torch.manual_seed(0)
    return RefinerContext(
        "alpha", domain, DomainDiscriminator(8), 8, 20, validate(cfg), seed=3, device=torch.device("cpu")
    )


# -- whole runs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["mmir-robust-density", "relevance-density"])
def test_a_density_reward_run_trains_and_logs_signal_aucs_in_the_unit_interval(tmp_path, preset):
    lines = benchmark_run(tmp_path, preset)
    stage2 = [r for r in lines if r["stage"] == 2]
    assert len(stage2) == 6 and all(math.isfinite(r["loss"]) for r in stage2)
    signals = load_config(PRESETS / f"{preset}.toml").refinement.signal_aucs
    assert "density" in signals and "oracle" not in signals
    for r in stage2:  # the benchmark's diagnostics are taken every step
        for key in ("rgb/source", "rgb/target", "flow/source", "flow/target"):
            assert r[f"removed/{key}"] == 8  # E = 1 row of each of the 8 sets of a 40-row half
            for name in signals:
                assert 0.0 <= r[f"diag/auc/{name}/{key}"] <= 1.0


def test_runs_without_signals_are_bit_identical_to_the_eq3_combination_and_aucs_change_nothing(tmp_path):
    default = benchmark_run(tmp_path / "default", "mmir-robust")
    eq3 = benchmark_run(tmp_path / "eq3", "mmir-robust", **{"env.reward_signals": {"discriminator": 1.0}})
    no_aucs = benchmark_run(tmp_path / "plain", "mmir-robust", **{"refinement.signal_aucs": []})
    assert json.dumps(default) == json.dumps(eq3)  # NaN-safe: the same text
    assert len(default) == len(no_aucs)
    for with_aucs, plain in zip(default, no_aucs):
        assert json.dumps({k: v for k, v in with_aucs.items() if not k.startswith("diag/auc/")}) == json.dumps(plain)
    assert any(k.startswith("diag/auc/discriminator/") for k in default[-1])
    # the eq. 3 signal's AUC is the diagnostics' negative_auc (all pairs of the half-batch)
    last = [r for r in default if r["stage"] == 2][-1]
    assert last["diag/auc/discriminator/rgb/source"] == pytest.approx(last["diag/negative_auc/rgb/source"], abs=1e-6)


def test_observation_signals_and_a_logit_reward_train_through_the_grouped_agents(tmp_path):
    cfg = toy_config(tmp_path)
    cfg.env.reward_signals = {"discriminator": 1.0, "entropy": 0.5}
    cfg.env.observation_signals = ["modality-agreement", "density"]
    cfg.refinement.signal_aucs = ["pseudo-label-loss"]
    trainer = CoTrainer(validate(cfg), datasets=toy_datasets(), model=toy_model())
    for refiner in trainer.refiners.values():
        assert refiner.agent.feature_dim == 8 + 2  # d + one column per observation signal
    summary = trainer.run()
    assert 0.0 <= summary["top1_last"] <= 1.0
    lines = [json.loads(line) for line in (cfg.run_dir() / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in lines if r["stage"] == 2][-1]
    for m in MODALITIES:
        for d in ("source", "target"):
            assert 0.0 <= last[f"diag/auc/pseudo-label-loss/{m}/{d}"] <= 1.0
            assert f"diag/staleness/{m}/{d}" not in last  # replayed states cannot be re-scored by an entropy reward
            assert math.isfinite(last[f"td_loss/{m}/{d}"])


# -- the refiners ------------------------------------------------------------------------------------------
def test_the_relevance_policy_with_a_density_reward_removes_each_sets_least_dense_rows(tmp_path):
    refiner = build_refiner("relevance", context(tmp_path, reward_signals={"density": 1.0}, E=2))
    assert signal_needs(refiner) == {"reference"}
    reference = torch.zeros(6, 8)
    reference[:, 0] = 1.0  # every other-domain row points along e0: a row's density is its cosine with e0
    angles = torch.tensor(
        [[0.1, 1.2, 0.4, 1.5, 0.7], [1.4, 0.2, 0.9, 0.05, 1.1], [0.3, 0.6, 1.3, 0.8, 1.0], [0.5, 0.5, 1.5, 0.5, 1.4]]
    )
    features = torch.zeros(4, 5, 8)
    features[..., 0], features[..., 1] = angles.cos(), angles.sin()
    features = features * torch.linspace(0.5, 3.0, 20).reshape(4, 5, 1)  # norms do not matter to a cosine
    result = refiner.refine(features.reshape(20, 8), None, SignalRows(reference=reference))
    removed = ~result.keep.reshape(4, 5)
    expected = torch.tensor(
        [[0, 1, 0, 1, 0], [1, 0, 0, 0, 1], [0, 0, 1, 0, 1], [0, 0, 1, 0, 1]], dtype=torch.bool
    )  # the two widest angles of every set
    assert torch.equal(removed, expected)
    # the rows' reported relevance stays eq. 3 (the reports' histograms), not the z-scored densities
    assert result.relevance is not None and bool(((result.relevance >= 0) & (result.relevance <= 1)).all())
    with pytest.raises(ValueError, match="signal 'density' needs input 'reference'"):
        refiner.refine(features.reshape(20, 8))


def test_observation_signals_make_the_agents_observation_d_plus_k_wide(tmp_path):
    ctx = context(tmp_path, observation_signals=["discriminator", "entropy", "density"])
    refiner = build_refiner("agent", ctx)
    assert refiner.env.single_observation_space.shape == (5, 8 + 3)
    assert refiner.agent.feature_dim == 8 + 3
    assert signal_needs(refiner) == {"logits", "reference"}
    feats, logits, reference = torch.randn(20, 8), torch.randn(20, 3), torch.randn(12, 8)
    selection = refiner.begin(feats, None, SignalRows(logits=logits, reference=reference))
    assert selection.obs.shape == (4, 5, 8 + 3)
    assert torch.equal(selection.obs[..., :8], feats.reshape(4, 5, 8))
    expected_entropy = (F.softmax(logits, -1) * F.log_softmax(logits, -1)).sum(-1).reshape(4, 5)  # -H(p)
    assert torch.allclose(selection.obs[..., 9], expected_entropy, atol=1e-6)
    result = build_refiner("agent", ctx).refine(feats, None, SignalRows(logits=logits, reference=reference))
    assert int((~result.keep).sum()) == 4


def test_the_auc_diagnostic_asks_for_logits_only_on_diagnostics_steps(tmp_path):
    ctx = context(tmp_path, refinement={"signal_aucs": ["entropy", "discriminator"], "diagnostics_every": 2})
    refiner = build_refiner("agent", ctx)
    feats, negative = torch.randn(20, 8), torch.arange(20) % 4 == 0
    assert signal_needs(refiner) == {"logits"}  # call 0 takes the diagnostics
    logits = torch.randn(20, 3)
    first = refiner.refine(feats, negative, SignalRows(logits=logits))
    assert signal_needs(refiner) == frozenset()  # call 1 does not: nothing to compute
    second = refiner.refine(feats, negative)
    assert not any(k.startswith("diag/") for k in second.stats)
    by_hand = (F.softmax(logits, -1) * F.log_softmax(logits, -1)).sum(-1)  # -H(p): the relevance of each row
    clean, neg = by_hand[~negative], by_hand[negative]
    wins = (neg.unsqueeze(1) < clean.unsqueeze(0)).float().mean() + 0.5 * (
        neg.unsqueeze(1) == clean.unsqueeze(0)
    ).float().mean()
    assert first.stats["diag/auc/entropy"] == pytest.approx(float(wins))
    assert first.stats["diag/auc/discriminator"] == pytest.approx(first.stats["diag/negative_auc"], abs=1e-6)
    assert build_refiner("none", ctx).refine(feats).removed == 0  # policies without signals are called as ever


def test_the_classifier_logits_for_the_signals_draw_nothing_and_leave_every_mode_as_it_was():
    model = toy_model(dropout=0.5)
    model.train()
    model.backbones["beta"].eval()  # a submodule in another mode than its parent stays so
    module = CoTrainModule(model, torch.nn.ModuleDict(), {}, {1: {}, 2: {}})
    features = {m: torch.randn(6, 8) for m in MODALITIES}
    state = torch.random.get_rng_state()
    first, second = module.signal_logits(features), module.signal_logits(features)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(first[m], second[m]) for m in MODALITIES)  # eval mode: no dropout
    assert model.training and model.heads["alpha"].training and not model.backbones["beta"].training
    assert torch.allclose(first["alpha"], model.heads["alpha"].eval()(features["alpha"]))


# -- config ------------------------------------------------------------------------------------------------
def test_relabel_with_an_entropy_reward_is_refused_in_one_line():
    with pytest.raises(ConfigError) as err:
        load_config(PRESETS / "mmir-relabel.toml", {"env.reward_signals": {"entropy": 1.0}})
    message = str(err.value)
    assert "\n" not in message
    assert "refinement.relabel = true" in message and "'entropy'" in message and "'logits'" in message
    # a combination that reads features only can re-score replayed states
    cfg = load_config(PRESETS / "mmir-relabel.toml", {"env.reward_signals": {"discriminator": 2.0}})
    assert cfg.env.reward_signals == {"discriminator": 2.0}


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"env.reward_signals": {"loudness": 1.0}}, "env.reward_signals names 'loudness', which is not a registered"),
        ({"env.observation_signals": ["entropy", "entropy"]}, "env.observation_signals must name distinct signals"),
        ({"refinement.signal_aucs": ["nope"]}, "refinement.signal_aucs names 'nope'"),
        ({"env.signal_options": {"density": {"k": 0}}}, "env.signal_options.density: signal 'density' option k"),
        ({"env.signal_options": {"density": {"width": 3}}}, "env.signal_options.density: signal 'density' takes"),
        (
            {
                "model.modalities": ["rgb"],
                "agents.s_agents": ["rgb"],
                "agents.t_agents": ["rgb"],
                "env.reward_signals": {"modality-agreement": 1.0},
            },
            "env.reward_signals names 'modality-agreement', which needs 'other_logits'",
        ),
        ({"env.reward_signals": {"density": "high"}}, "env.reward_signals.density must be a number"),
    ],
)
def test_bad_signal_keys_are_one_line_config_errors_naming_the_key(overrides, named):
    with pytest.raises(ConfigError) as err:
        load_config(PRESETS / "mmir.toml", overrides)
    assert named in str(err.value) and "\n" not in str(err.value)


def test_the_new_designs_are_presets_of_the_suite_and_set_what_they_say():
    from experiments.feature_benchmark import known_methods
    from experiments.feature_suite import build_parser

    text = "".join(build_parser().format_help().split())  # argparse wraps after hyphens
    for preset in NEW_PRESETS:
        assert preset in known_methods() and preset in text
    density = load_config(PRESETS / "relevance-density.toml")
    assert (density.refinement.policy, density.env.reward_signals) == ("relevance", {"density": 1.0})
    robust = load_config(PRESETS / "mmir-robust-entropy.toml")
    assert (robust.refinement.policy, robust.env.reward, robust.agents.epsilon) == ("agent", "rank", 0.1)
    assert robust.env.reward_signals == {"discriminator": 1.0, "entropy": 1.0}
    assert load_config(PRESETS / "mmir-robust.toml").env.reward_signals == {}  # the paper's reward
