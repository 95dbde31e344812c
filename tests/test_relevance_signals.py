"""Relevance signals (mmir_env.signals): formulas by hand, the reward combination, observation extras, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from snapshot_helpers import small_snapshot
from torch import nn

from mmir_env import BatchedRefinementEnv, InstanceRefinementEnv, SnapshotSource, discriminator_relevance
from mmir_env.domains import SOURCE, TARGET
from mmir_env.reward import compute_reward
from mmir_env.signals import (
    SIGNALS,
    RelevanceSignal,
    SignalInputs,
    SignalReward,
    combine_relevance,
    negative_auc,
    register_signal,
    signal_values,
    standardize_within_sets,
)

LOG2, LOG3 = math.log(2.0), math.log(3.0)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def first_coordinate_discriminator() -> nn.Module:
    """D(f) = f[0]: logits readable by hand."""
    disc = nn.Linear(2, 1)
    with torch.no_grad():
        disc.weight.copy_(torch.tensor([[1.0, 0.0]]))
        disc.bias.zero_()
    return disc


def hand_inputs(domain: int = SOURCE) -> SignalInputs:
    """One set of three rows: features [2, 0], [0, 1], [-1, 0]; logits uniform, [log 2, 0, 0], [0, 0, log 2]."""
    return SignalInputs(
        features=torch.tensor([[[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]]),
        domain=domain,
        discriminator=first_coordinate_discriminator(),
        logits=torch.tensor([[[0.0, 0.0, 0.0], [LOG2, 0.0, 0.0], [0.0, 0.0, LOG2]]]),
        other_logits=torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, LOG2]]]),
        reference=torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, -1.0]]),
        is_negative=torch.tensor([[True, False, False]]),
    )


def signal(name: str, inputs: SignalInputs, **options) -> list[float]:
    return SIGNALS.resolve(name)(inputs, **options)[0].tolist()


# -- each signal's formula -----------------------------------------------------------------------
@pytest.mark.parametrize("domain", [SOURCE, TARGET])
def test_discriminator_is_eq3(domain):
    expected = [sigmoid(2.0), 0.5, sigmoid(-1.0)]
    if domain == TARGET:
        expected = [1 - e for e in expected]
    assert signal("discriminator", hand_inputs(domain)) == pytest.approx(expected, abs=1e-6)


def test_entropy_energy_and_pseudo_label_loss():
    inputs = hand_inputs()
    # p = [1/3]*3 -> H = log 3;  p = [1/2, 1/4, 1/4] -> H = 1/2 log 2 + 1/2 log 4 = 3/2 log 2
    assert signal("entropy", inputs) == pytest.approx([-LOG3, -1.5 * LOG2, -1.5 * LOG2], abs=1e-6)
    # logsumexp: log 3, log(2 + 1 + 1) = log 4
    assert signal("energy", inputs) == pytest.approx([LOG3, 2 * LOG2, 2 * LOG2], abs=1e-6)
    # T = 2: 2 logsumexp([0, 0, 0] / 2) = 2 log 3
    assert signal("energy", inputs, temperature=2.0)[0] == pytest.approx(2 * LOG3, abs=1e-6)
    # -CE of the argmax pseudo-label = log of the top probability: log 1/3, log 1/2
    assert signal("pseudo-label-loss", inputs) == pytest.approx([-LOG3, -LOG2, -LOG2], abs=1e-6)


def test_transferability_uan_formula():
    h_norm = [1.0, 1.5 * LOG2 / LOG3, 1.5 * LOG2 / LOG3]
    p_source = [1 - sigmoid(2.0), 0.5, 1 - sigmoid(-1.0)]  # d' = P(source); our source label is 0
    src = signal("transferability", hand_inputs(SOURCE))
    tgt = signal("transferability", hand_inputs(TARGET))
    assert src == pytest.approx([h - d for h, d in zip(h_norm, p_source, strict=True)], abs=1e-6)  # w_s = Hn - d'
    assert tgt == pytest.approx([d - h for h, d in zip(h_norm, p_source, strict=True)], abs=1e-6)  # w_t = d' - Hn
    # class temperature T: the entropy of softmax(logits / T); T = 10 flattens row 1 towards uniform
    p = torch.softmax(torch.tensor([LOG2, 0.0, 0.0]) / 10, -1)
    hn = float(-(p * p.log()).sum()) / LOG3
    assert signal("transferability", hand_inputs(SOURCE), class_temperature=10.0)[1] == pytest.approx(hn - 0.5)


def test_modality_agreement_is_negative_total_variation():
    # row 0: both uniform -> 0; row 1: [1/2, 1/4, 1/4] vs uniform -> TV = (1/6 + 1/12 + 1/12) / 2 = 1/6; row 2 equal
    assert signal("modality-agreement", hand_inputs()) == pytest.approx([0.0, -1 / 6, 0.0], abs=1e-6)


def test_density_mean_cosine_to_k_nearest_reference_rows():
    inputs = hand_inputs()
    r = 1 / math.sqrt(2)
    # cosines to the reference [1,0], [1,1], [0,-1]: row [2,0] -> 1, r, 0; row [0,1] -> 0, r, -1; row [-1,0] -> -1, -r, 0
    assert signal("density", inputs, k=2) == pytest.approx([(1 + r) / 2, r / 2, -r / 2], abs=1e-6)
    assert signal("density", inputs, k=1) == pytest.approx([1.0, r, 0.0], abs=1e-6)
    assert signal("density", inputs) == pytest.approx([(1 + r) / 3, (r - 1) / 3, (-1 - r) / 3], abs=1e-6)  # k=5 > R=3
    per_set = SignalInputs(features=inputs.features, domain=SOURCE, reference=inputs.reference[None, :2])
    assert signal("density", per_set, k=1) == pytest.approx([1.0, r, -r], abs=1e-6)  # [S, R, d]


def test_oracle_and_signal_values_stack_columns():
    inputs = hand_inputs()
    assert signal("oracle", inputs) == [0.0, 1.0, 1.0]
    cols = signal_values(["oracle", "density"], inputs, {"density": {"k": 1}})
    assert cols.shape == (1, 3, 2)
    assert cols[0, :, 1].tolist() == pytest.approx([1.0, 1 / math.sqrt(2), 0.0], abs=1e-6)


@pytest.mark.parametrize(
    "name, missing",
    [
        ("discriminator", "discriminator"),
        ("entropy", "logits"),
        ("energy", "logits"),
        ("transferability", "discriminator"),
        ("modality-agreement", "logits"),
        ("density", "reference"),
        ("pseudo-label-loss", "logits"),
        ("oracle", "is_negative"),
    ],
)
def test_missing_input_is_a_one_line_error(name, missing):
    bare = SignalInputs(features=torch.zeros(1, 3, 2), domain=SOURCE)
    with pytest.raises(ValueError, match=f"^signal '{name}' needs input '{missing}', which was not given$"):
        SIGNALS.resolve(name)(bare)


def test_unknown_option_and_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="signal 'density' takes options \\['k'\\]"):
        SIGNALS.resolve("density")(hand_inputs(), kk=3)
    with pytest.raises(ValueError, match="logits must be"):
        SignalInputs(features=torch.zeros(2, 3, 4), domain=SOURCE, logits=torch.zeros(2, 4, 5))


def test_a_registered_signal_is_usable_by_name():
    register_signal(RelevanceSignal("first-coordinate", lambda inputs: inputs.features[..., 0]))
    try:
        assert signal("first-coordinate", hand_inputs()) == [2.0, 0.0, -1.0]
        assert SignalReward({"first-coordinate": 1.0}).standardized  # not on eq. 3's scale
    finally:
        SIGNALS.pop("first-coordinate")


# -- the combination and its reward --------------------------------------------------------------
def test_standardize_within_sets_over_selectable_rows():
    z = standardize_within_sets(torch.tensor([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]]))
    s = math.sqrt(2 / 3)  # population std of 1, 2, 3
    assert z[0].tolist() == pytest.approx([-1 / s, 0.0, 1 / s], abs=1e-6)
    assert z[1].tolist() == [0.0, 0.0, 0.0]  # a set whose rows tie: no preference
    z = standardize_within_sets(torch.tensor([[1.0, 2.0, float("inf")]]), torch.tensor([[True, True, False]]))
    assert z[0, :2].tolist() == pytest.approx([-1.0, 1.0])  # mean 1.5, std 0.5; the removed row never enters


def test_weighted_combination_of_z_scores():
    values = {"a": torch.tensor([[1.0, 2.0, 3.0]]), "b": torch.tensor([[0.0, 0.0, 3.0]])}
    s = math.sqrt(2 / 3)
    zb = [-1 / math.sqrt(2), -1 / math.sqrt(2), math.sqrt(2)]  # mean 1, std sqrt(2)
    out = combine_relevance(values, {"a": 1.0, "b": -0.5})
    assert out[0].tolist() == pytest.approx([-1 / s - 0.5 * zb[0], -0.5 * zb[1], 1 / s - 0.5 * zb[2]], abs=1e-6)
    raw = combine_relevance(values, {"a": 2.0}, standardize=False)
    assert raw[0].tolist() == [2.0, 4.0, 6.0]


@pytest.mark.parametrize("kind", ["threshold", "rank", "margin"])
@pytest.mark.parametrize("domain", [SOURCE, TARGET])
def test_discriminator_alone_reduces_to_eq3_rewards(kind, domain):
    torch.manual_seed(0)
    disc = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    features = torch.randn(64, 5, 8)
    noise = torch.randn(64, 5)
    inputs = SignalInputs(features=features, domain=domain, discriminator=disc, logit_noise=noise)
    combination = SignalReward({"discriminator": 1.0})
    assert not combination.standardized and combination.is_eq3
    rel = combination.relevance(inputs)
    assert torch.equal(rel, discriminator_relevance(disc, features, domain, noise))
    selectable = torch.rand(64, 5) < 0.8
    selectable[:, 0] = True
    action = torch.zeros(64, dtype=torch.long)
    expected = compute_reward(kind, rel, action, selectable, 0.4)
    assert torch.equal(combination.reward(kind, rel, action, selectable, 0.4), expected)


def test_standardised_threshold_is_the_set_mean_and_margin_its_distance():
    inputs = hand_inputs()
    combination = SignalReward({"oracle": 1.0, "entropy": 0.5})
    assert combination.standardized
    rel = combination.relevance(inputs)
    z_oracle = standardize_within_sets(torch.tensor([[0.0, 1.0, 1.0]]))[0]
    z_entropy = standardize_within_sets(torch.tensor([[-LOG3, -1.5 * LOG2, -1.5 * LOG2]]))[0]
    assert rel[0].tolist() == pytest.approx((z_oracle + 0.5 * z_entropy).tolist(), abs=1e-6)
    selectable = torch.ones(3, 3, dtype=torch.bool)
    rows = rel.expand(3, 3)
    actions = torch.arange(3)
    threshold = combination.reward("threshold", rows, actions, selectable, 0.5)
    assert threshold.tolist() == [1.0 if float(r) < 0 else -1.0 for r in rel[0]]
    assert threshold.tolist() == [1.0, -1.0, -1.0]  # the negative, less confident row lies below the mean
    margin = combination.reward("margin", rows, actions, selectable, 0.5)
    assert margin.tolist() == pytest.approx((-rel[0]).tolist())
    assert combination.reward("rank", rows, actions, selectable, 0.5).tolist() == [1.0, -1.0, -1.0]


def test_oracle_alone_is_raw_with_tau():
    combination = SignalReward({"oracle": 1.0})
    assert not combination.standardized
    rel = combination.relevance(hand_inputs())
    assert rel[0].tolist() == [0.0, 1.0, 1.0]
    rewards = combination.reward("threshold", rel.expand(3, 3), torch.arange(3), torch.ones(3, 3, dtype=bool), 0.5)
    assert rewards.tolist() == [1.0, -1.0, -1.0]


def test_bad_combinations_are_rejected():
    with pytest.raises(ValueError, match="non-empty mapping"):
        SignalReward({})
    with pytest.raises(ValueError, match="finite float weight"):
        SignalReward({"entropy": float("nan")})
    with pytest.raises(KeyError, match="reward_signals 'nope' is not known"):
        SignalReward({"nope": 1.0})


# -- negative_auc ---------------------------------------------------------------------------------
def test_negative_auc_by_hand():
    rel = torch.tensor([[0.1, 0.5, 0.5, 0.9]])
    neg = torch.tensor([[True, True, False, False]])
    # pairs (neg, clean): (.1,.5) 1, (.1,.9) 1, (.5,.5) 1/2, (.5,.9) 1 -> 3.5 / 4
    assert negative_auc(rel, neg) == pytest.approx(0.875)
    assert negative_auc(-rel, neg) == pytest.approx(0.125)
    # without the last row: (.1,.5) 1, (.5,.5) 1/2 -> 0.75
    assert negative_auc(rel, neg, torch.tensor([[True, True, True, False]])) == pytest.approx(0.75)
    assert math.isnan(negative_auc(rel, torch.zeros_like(neg)))


def test_negative_auc_within_sets_counts_pairs_of_one_set():
    rel = torch.tensor([[0.5, 0.6], [0.1, 0.2]])
    neg = torch.tensor([[True, False], [True, False]])
    assert negative_auc(rel, neg, within_sets=True) == pytest.approx(1.0)  # each set's negative is its lowest
    # pooled: (.5,.6) 1, (.5,.2) 0, (.1,.6) 1, (.1,.2) 1 -> 3 / 4
    assert negative_auc(rel, neg) == pytest.approx(0.75)
    sel = torch.tensor([[True, True], [True, False]])  # set 1 has no clean row left: no pair there
    assert negative_auc(rel, neg, sel, within_sets=True) == pytest.approx(1.0)


# -- environments ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["threshold", "rank", "margin"])
@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_single_env_discriminator_reward_signals_exactly_default(small_source, kind, noise):
    base = InstanceRefinementEnv(small_source, E=2, reward=kind, logit_noise=noise)
    combo = InstanceRefinementEnv(
        small_source, E=2, reward=kind, logit_noise=noise, reward_signals={"discriminator": 1}
    )
    for seed in range(5):
        obs_b, _ = base.reset(seed=seed)
        obs_c, _ = combo.reset(seed=seed)
        assert np.array_equal(obs_b, obs_c)
        for action in (seed % 5, (seed + 2) % 5):
            _, r_b, *_, info_b = base.step(action)
            _, r_c, *_, info_c = combo.step(action)
            assert r_b == r_c and info_b["relevance"] == info_c["relevance"]


@pytest.mark.parametrize("kind", ["threshold", "rank", "margin"])
@pytest.mark.parametrize("score_all_rows", [False, True])
def test_batched_env_discriminator_reward_signals_exactly_default(small_source, kind, score_all_rows):
    kw = dict(num_envs=32, E=2, reward=kind, logit_noise=1.0, score_all_rows=score_all_rows)
    base = BatchedRefinementEnv(small_source, **kw)
    combo = BatchedRefinementEnv(small_source, reward_signals={"discriminator": 1.0}, **kw)
    base.reset(seed=0)
    combo.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        actions = torch.randint(0, 5, (32,), generator=gen)
        obs_b, r_b, *_, info_b = base.step(actions)
        obs_c, r_c, *_, info_c = combo.step(actions)
        assert torch.equal(r_b, r_c) and torch.equal(obs_b, obs_c)
        assert torch.equal(info_b["relevance"].nan_to_num(7.0), info_c["relevance"].nan_to_num(7.0))


def test_single_env_observation_extras_shape_values_and_zeroing(small_source):
    env = InstanceRefinementEnv(small_source, E=2, observation_signals=["discriminator", "density", "oracle"])
    assert env.observation_space.shape == (5, 35)
    obs, info = env.reset(seed=4)
    assert env.observation_space.contains(obs)
    idx = torch.from_numpy(info["candidate_index"])
    feats = small_source.features("source")[idx]
    assert np.array_equal(obs[:, :32], feats.numpy())
    disc = discriminator_relevance(small_source.discriminator, feats, SOURCE)
    assert obs[:, 32] == pytest.approx(disc.numpy(), abs=1e-6)
    ref = torch.nn.functional.normalize(small_source.features("target"), dim=-1)
    density = (torch.nn.functional.normalize(feats, dim=-1) @ ref.T).topk(5, dim=-1).values.mean(-1)
    assert obs[:, 33] == pytest.approx(density.numpy(), abs=1e-5)
    assert obs[:, 34].tolist() == (1.0 - small_source.is_negative("source")[idx].float()).tolist()
    obs2, *_ = env.step(3)
    assert np.all(obs2[3] == 0) and np.array_equal(np.delete(obs2, 3, 0), np.delete(obs, 3, 0))


def test_single_env_signal_reward_and_checker(small_source):
    from gymnasium.utils.env_checker import check_env

    env = InstanceRefinementEnv(
        small_source, observation_signals=["oracle"], reward_signals={"density": 1.0, "discriminator": 1.0}
    )
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    _, reward, *_, info = env.step(0)
    assert reward in (1.0, -1.0) and reward == (1.0 if info["relevance"] < 0 else -1.0)


def test_batched_env_extras_match_single_sets_and_survive_autoreset(small_source):
    env = BatchedRefinementEnv(small_source, num_envs=16, domain="target", observation_signals=["oracle", "density"])
    assert env.single_observation_space.shape == (5, 34) and env.pool is None
    obs, info = env.reset(seed=1)
    assert obs.shape == (16, 5, 34)
    neg = small_source.is_negative("target")[info["candidate_index"]]
    assert torch.equal(obs[..., 32], 1.0 - neg.float())
    single = InstanceRefinementEnv(small_source, domain="target", observation_signals=["oracle", "density"])
    one, _ = single.reset(options={"features": obs[2, :, :32], "is_negative": neg[2]})
    assert one == pytest.approx(obs[2].numpy(), abs=1e-6)
    obs2, _, term, _, info2 = env.step(torch.zeros(16, dtype=torch.long))
    assert term.all() and torch.all(info2["final_obs"][:, 0] == 0)  # features and extras zeroed
    neg2 = small_source.is_negative("target")[env.candidate_index]
    assert torch.equal(obs2[..., 32], 1.0 - neg2.float())  # fresh sets, fresh columns


def test_batched_env_handed_in_sets_with_logits(small_source):
    env = BatchedRefinementEnv(
        None,
        discriminator=small_source.discriminator,
        num_envs=2,
        feature_dim=32,
        autoreset_mode="Disabled",
        reward="rank",
        observation_signals=["entropy"],
        reward_signals={"entropy": 1.0},
    )
    feats = small_source.features("source")[:10].reshape(2, 5, 32)
    logits = torch.zeros(10, 3)  # a half-batch's rows in order: [B, C]
    logits[[1, 7], 0] = 5.0  # confident rows: only 1 and 7; the least confident are ties (rank counts ties as lowest)
    obs = env.load_candidate_sets(feats, logits=logits)
    assert obs[0, :, 32].tolist() == pytest.approx(
        [-LOG3, float(-torch.special.entr(torch.softmax(logits[1], -1)).sum()), -LOG3, -LOG3, -LOG3], abs=1e-5
    )
    _, rewards, *_ = env.step(torch.tensor([1, 0]))
    assert rewards.tolist() == [-1.0, 1.0]  # row 1 is the most confident of set 0; row 5 a least confident one
    with pytest.raises(ValueError, match="signal 'entropy' needs input 'logits'.*load_candidate_sets"):
        env.load_candidate_sets(feats)


def test_row_inputs_give_logit_signals_to_a_pool(small_source):
    gen = torch.Generator().manual_seed(0)
    logits = {d: torch.randn(small_source.num_samples(d), 4, generator=gen) for d in ("source", "target")}
    env = BatchedRefinementEnv(
        small_source, num_envs=8, observation_signals=["pseudo-label-loss"], row_inputs={"logits": logits}
    )
    obs, info = env.reset(seed=0)
    expected = torch.log_softmax(logits["source"][info["candidate_index"]], -1).amax(-1)
    assert torch.allclose(obs[..., 32], expected, atol=1e-6)
    with pytest.raises(ValueError, match="row_inputs\\['logits'\\]\\['source'\\] has 3 rows"):
        BatchedRefinementEnv(
            small_source,
            num_envs=8,
            observation_signals=["entropy"],
            row_inputs={"logits": {"source": torch.zeros(3, 4), "target": logits["target"]}},
        )


def test_snapshot_replay_allows_only_signals_whose_inputs_exist(tmp_path):
    source = SnapshotSource(small_snapshot(tmp_path / "s.h5"), modality="rgb")
    env = InstanceRefinementEnv(source, observation_signals=["discriminator", "density", "oracle"])
    obs, _ = env.reset(seed=0)
    assert obs.shape == (5, 35)
    with pytest.raises(ValueError, match="signal 'energy' needs input 'logits' .*SnapshotSource does not provide"):
        InstanceRefinementEnv(source, reward_signals={"discriminator": 1.0, "energy": 1.0})
    with pytest.raises(ValueError, match="signal 'modality-agreement' needs input 'logits'"):
        BatchedRefinementEnv(source, num_envs=4, observation_signals=["modality-agreement"])


def test_defaults_keep_the_papers_state(small_source):
    env = BatchedRefinementEnv(small_source, num_envs=4)
    assert env.single_observation_space.shape == (5, 32) and env.pool is not None
    assert env.reward_signals is None and env.observation_signals == ()


def test_synthetic_benchmark_gets_classifier_logits_from_source_labels_only(small_source, monkeypatch):
    from mmir_env.synthetic_env import make_synthetic_batched_env, synthetic_row_inputs

    labels = small_source.labels

    def source_labels_only(domain):
        assert domain in ("source", SOURCE), "target labels must never be read"
        return labels(domain)

    monkeypatch.setattr(small_source, "labels", source_labels_only)
    rows = synthetic_row_inputs(small_source, steps=50)
    assert rows["logits"]["source"].shape == (400, 8) and rows["other_logits"]["target"].shape == (400, 8)
    accuracy = (rows["logits"]["source"].argmax(-1) == labels("source")).float().mean()
    assert accuracy > 0.9
    env = make_synthetic_batched_env(
        num_envs=4,
        feature_dim=32,
        num_source=200,
        num_target=200,
        pretrain_steps=10,
        classifier_logits=True,
        observation_signals=["modality-agreement", "transferability"],
    )
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 5, 34) and bool((obs[..., 32] <= 0).all())


def test_reward_threshold_is_tau_or_the_set_mean(small_source):
    assert BatchedRefinementEnv(small_source, num_envs=2, tau=0.3).reward_threshold == 0.3
    env = BatchedRefinementEnv(small_source, num_envs=2, tau=0.3, reward_signals={"discriminator": 1, "density": 1})
    assert float(env.reward_threshold) == 0.0
