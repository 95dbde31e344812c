"""Feature-level co-training and the negative-transfer benchmark: generator, feature files, adapters, presets, a tiny run."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from cotrain_helpers import TINY_FEATURE_BENCHMARK

from experiments.builders import build_datasets, build_model
from experiments.config import CONFIG_DIR, ConfigError, FeatureBenchmarkConfig, RunConfig, load_config, validate
from features.adapters import FeatureAdapter, adapter_two_stream
from features.data.feature_bank import FeatureBank, FeatureFileError, feature_datasets_from_snapshots
from features.data.negative_transfer import (
    NegativeTransferParams,
    generate_negative_transfer,
)
from features.snapshot import SnapshotWriter

PRESETS = CONFIG_DIR / "feature-benchmark"
SMALL = dict(source_size=200, target_size=150, test_size=500, feature_dim=16)


def small_params(**kw) -> NegativeTransferParams:
    return NegativeTransferParams(**{**SMALL, **kw})


# ---------------------------------------------------------------------- the generator
def test_the_generator_is_a_pure_function_of_params_and_seed():
    a, b = generate_negative_transfer(small_params(), 7), generate_negative_transfer(small_params(), 7)
    other = generate_negative_transfer(small_params(), 8)
    for split in ("source", "target", "test"):
        np.testing.assert_array_equal(a.labels[split], b.labels[split])
        np.testing.assert_array_equal(a.is_negative[split], b.is_negative[split])
        for m in ("rgb", "flow"):
            np.testing.assert_array_equal(a.features[split][m], b.features[split][m])
            assert not np.allclose(a.features[split][m], other.features[split][m])
    # a modality's features do not depend on which other modalities are generated
    alone = generate_negative_transfer(small_params(), 7, modalities=("flow",))
    np.testing.assert_array_equal(alone.features["source"]["flow"], a.features["source"]["flow"])
    assert not np.allclose(a.features["source"]["rgb"], a.features["source"]["flow"])


@pytest.mark.parametrize("contamination", [0.0, 0.1, 0.3, 0.55])
def test_contamination_is_the_fraction_of_planted_negatives_and_clean_is_contaminated_minus_negatives(contamination):
    p = small_params(contamination=contamination)
    data = generate_negative_transfer(p, 3)
    for split, clean_rows in (("source", p.source_size), ("target", p.target_size)):
        neg = data.is_negative[split]
        assert (~neg).sum() == clean_rows
        assert abs(neg.mean() - contamination) <= 1.0 / len(neg)  # within rounding of one row
    full, clean = data.datasets(clean=False), data.datasets(clean=True)
    for split in ("source", "target"):
        keep = ~data.is_negative[split]
        assert len(clean[split]) == keep.sum() and not clean[split].is_negative.any()
        np.testing.assert_array_equal(clean[split].uids, np.flatnonzero(keep))
        for m in ("rgb", "flow"):
            np.testing.assert_array_equal(clean[split].features[m].numpy(), full[split].features[m].numpy()[keep])
    # the clean rows of a seed are the same at every contamination level
    reference = generate_negative_transfer(small_params(contamination=0.0), 3)
    np.testing.assert_array_equal(data.features["source"]["rgb"][: p.source_size], reference.features["source"]["rgb"])
    np.testing.assert_array_equal(data.features["test"]["flow"], reference.features["test"]["flow"])


def test_labels_negatives_and_the_test_split():
    p = NegativeTransferParams()  # the benchmark's default sizes
    data = generate_negative_transfer(p, 0)
    src, tgt, test = data.labels["source"], data.labels["target"], data.labels["test"]
    neg_s, neg_t = data.is_negative["source"], data.is_negative["target"]
    assert set(src[~neg_s]) == set(range(p.classes)) and set(src[neg_s]) == set(range(p.classes, p.num_classes))
    assert set(tgt[~neg_t]) == set(range(p.classes)) and set(tgt[neg_t]) == {-1}
    assert len(test) == p.test_size >= 500 and set(test) == set(range(p.classes)) and not data.is_negative["test"].any()
    assert np.bincount(test).min() == p.test_size // p.classes  # balanced
    assert set(data.negative_kind["source"][neg_s]) == {"outlier-class"} and set(
        data.negative_kind["target"][neg_t]
    ) == {"unknown-between"}
    item = data.datasets()["source"][int(np.flatnonzero(neg_s)[0])]
    assert set(item) == {"rgb", "flow", "label", "uid", "domain", "is_negative"} and item["is_negative"] is True
    assert item["rgb"].dtype == torch.float32 and item["rgb"].shape == (p.feature_dim,) and item["domain"] == "source"


def test_outliers_differ_from_their_parent_class_only_off_the_targets_support():
    p = small_params(noise=0.0, contamination=0.3)
    data = generate_negative_transfer(p, 1)
    x, y = data.features["source"]["rgb"], data.labels["source"]
    for j in range(p.outlier_classes):
        parent = x[y == j % p.classes][0]
        outlier = x[y == p.classes + j][0]
        assert np.linalg.norm(outlier - parent) == pytest.approx(p.outlier_offset, rel=1e-4)
        # the target has no mass along the outlier's axis: target rows are orthogonal to it
        axis = (outlier - parent) / p.outlier_offset
        assert np.abs(data.features["target"]["rgb"] @ axis).max() < 1e-4


@pytest.mark.parametrize(
    "bad",
    [
        dict(contamination=1.0),
        dict(contamination=-0.1),
        dict(test_size=0),
        dict(outlier_placement="near"),
        dict(feature_dim=8),
        dict(outlier_classes=0),
    ],
)
def test_bad_generator_parameters_raise(bad):
    with pytest.raises(ValueError):
        NegativeTransferParams(**bad)


# ---------------------------------------------------------------------- config
def test_the_config_section_is_the_generators_parameter_class():
    # one definition of the fields: what a config file sets is what the generator reads
    assert FeatureBenchmarkConfig is NegativeTransferParams
    assert RunConfig().feature_benchmark == NegativeTransferParams()


@pytest.mark.parametrize("value", [1.0, 1.5, -0.2])
def test_contamination_outside_the_unit_interval_is_a_config_error_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"feature_benchmark\.contamination must lie in \[0, 1\)") as err:
        load_config(PRESETS / "adversarial-only.toml", {"feature_benchmark.contamination": value})
    assert "\n" not in str(err.value) and "adversarial-only.toml" in str(err.value)
    cfg = RunConfig()
    cfg.feature_benchmark.contamination = value
    with pytest.raises(ConfigError, match=r"feature_benchmark\.contamination"):
        validate(cfg)


def test_the_benchmark_needs_the_sources_label_space():
    cfg = load_config(PRESETS / "adversarial-only.toml", {"model.num_classes": 5})
    with pytest.raises(
        ConfigError, match="model.num_classes must be feature_benchmark.classes \\+ outlier_classes = 8"
    ):
        build_datasets(cfg)


def _flat(path: Path) -> dict:
    d = load_config(path).to_dict()
    return {k: v for k, v in d.items() if not isinstance(v, dict)} | {
        f"{k}.{kk}": vv for k, v in d.items() if isinstance(v, dict) for kk, vv in v.items()
    }


def test_the_presets_write_every_key_and_differ_only_in_the_method():
    presets = sorted(PRESETS.glob("*.toml"))
    assert {p.stem for p in presets} >= {
        "source-only",
        "adversarial-only",
        "mmir",
        "random-removal",
        "ground-truth-removal",
        "adversarial-only-clean",
        "source-only-clean",
    }
    base = _flat(PRESETS / "adversarial-only.toml")
    method_keys = {
        "name",
        "method",
        "stage2.objectives",
        "stage2.refinement",
        "agents.s_agents",
        "agents.t_agents",
        "refinement.policy",
        "refinement.learn_only",
        "refinement.relevance",
        "refinement.relabel",
        "refinement.warmup_steps",
        "env.reward",
        "env.reward_signals",
        "agents.epsilon",
        "feature_benchmark.clean",
    }
    for path in presets:
        raw = tomllib.loads(path.read_text())
        # a preset states only what differs: its base(s), its name, (clean variants) the generator's switch
        # and (one-domain variants) which agents exist
        assert set(raw) <= {"base", "name", "method", "feature_benchmark", "agents"}, path.name
        assert set(raw.get("agents", {})) <= {"s_agents", "t_agents"}, path.name
        mine = _flat(path)
        assert {k for k in base if base[k] != mine[k]} <= method_keys, path.name
        assert mine["method"] == path.stem and mine["feature_benchmark.clean"] == path.stem.endswith("-clean")
        assert (mine["stage2.batch_size"], mine["env.n_c"], mine["model.num_classes"]) == (80, 5, 8)


# ---------------------------------------------------------------------- adapters
def test_the_adapter_is_a_backbone_with_a_feature_dim():
    adapter = FeatureAdapter(12, hidden_dim=10, feature_dim=6)
    assert adapter(torch.randn(4, 12)).shape == (4, 6) and adapter.feature_dim == 6
    with pytest.raises(ValueError, match=r"expected features \[B, 12\]"):
        adapter(torch.randn(4, 11))
    model = adapter_two_stream({"a": 12, "b": 7}, 3, hidden_dim=8, feature_dim=5)
    out = model({"a": torch.randn(4, 12), "b": torch.randn(4, 7)})
    assert out.logits.shape == (4, 3) and model.feature_dims == {"a": 5, "b": 5}
    cfg = load_config(PRESETS / "mmir.toml", {"model.width": 0.5})
    built = build_model(cfg)
    assert (
        built.feature_dims == {"rgb": 32, "flow": 32}
        and built.backbones["rgb"].in_dim == cfg.feature_benchmark.feature_dim
    )
    with pytest.raises(ConfigError, match="model.backbone = 'adapter' trains on stored features"):
        build_model(load_config(PRESETS / "mmir.toml", {"data.kind": "epic"}))


# ---------------------------------------------------------------------- feature files
def _write(
    path: Path, rows: dict[str, int], d: int = 8, target_labels: bool = True, negatives: bool = True, seed: int = 0
) -> Path:
    rng = np.random.default_rng(seed)
    with SnapshotWriter(path, feature_dim=d, num_classes=3, modalities=("rgb", "flow"), dtype="float32") as writer:
        for domain, n in rows.items():
            if n == 0:
                continue
            writer.append(
                domain,
                {m: rng.normal(size=(n, d)).astype(np.float32) for m in ("rgb", "flow")},
                label=rng.integers(0, 3, n) if (domain == "source" or target_labels) else None,
                uid=np.array([f"{domain}-{i}" for i in range(n)]),
                is_negative=(rng.random(n) < 0.3) if negatives else None,
            )
    return path


def _features_config(tmp_path: Path, train: Path, test: Path | str, **overrides) -> RunConfig:
    return load_config(
        PRESETS / "ground-truth-removal.toml",
        {
            "data.kind": "features",
            "data.root": str(train),
            "data.test_features": str(test),
            "model.num_classes": 3,
            "output_dir": str(tmp_path / "runs"),
            "stage1.steps": 3,
            "stage1.batch_size": 16,
            "stage2.steps": 4,
            "stage2.batch_size": 20,
            "evaluation.every": 2,
            "evaluation.last": 2,
            "agents.learning_starts": 4,
            "agents.batch_size": 4,
            **overrides,
        },
    )


def test_features_kind_reads_a_training_and_a_test_snapshot(tmp_path):
    train = _write(tmp_path / "train.h5", {"source": 40, "target": 30})
    test = _write(tmp_path / "test.h5", {"source": 5, "target": 25}, seed=1)
    cfg = _features_config(tmp_path, train, test)
    ds = build_datasets(cfg)
    assert (len(ds["source"]), len(ds["target"]), len(ds["test"])) == (40, 30, 25)
    item = ds["test"][3]
    assert item["domain"] == "target" and item["uid"] == 3 and item["rgb"].shape == (8,) and "is_negative" in item
    direct = feature_datasets_from_snapshots(train, test, ["flow"])
    assert direct["source"].modalities == ("flow",)
    assert build_model(cfg).backbones["rgb"].in_dim == 8
    from experiments.cotrain import CoTrainer

    summary = CoTrainer(cfg).run()
    assert len(summary["evaluations"]) == 2 and 0.0 <= summary["top1_last"] <= 1.0


def test_a_missing_test_split_is_a_one_line_error_naming_the_file_or_key(tmp_path):
    train = _write(tmp_path / "train.h5", {"source": 40, "target": 30})
    missing = tmp_path / "nope.h5"
    with pytest.raises(FeatureFileError, match="nope.h5: no such snapshot file") as err:
        feature_datasets_from_snapshots(train, missing)
    assert err.value.role == "test" and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^data.test_features .*nope.h5: no such snapshot file") as err:
        build_datasets(_features_config(tmp_path, train, missing))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="data.test_features is empty"):
        build_datasets(_features_config(tmp_path, train, ""))
    unlabelled = _write(tmp_path / "unlabelled.h5", {"source": 5, "target": 20}, target_labels=False)
    with pytest.raises(ConfigError, match=r"data.test_features .*unlabelled.h5: no labelled target rows"):
        build_datasets(_features_config(tmp_path, train, unlabelled))
    with pytest.raises(ConfigError, match=r"^data.root .*gone.h5: no such snapshot file"):
        build_datasets(_features_config(tmp_path, tmp_path / "gone.h5", unlabelled))
    wide = _write(tmp_path / "wide.h5", {"source": 5, "target": 20}, d=9)
    with pytest.raises(ConfigError, match="wide.h5: features of width 9"):
        build_datasets(_features_config(tmp_path, train, wide))


def test_ground_truth_removal_on_features_without_planted_negatives_is_a_config_error(tmp_path):
    train = _write(tmp_path / "train.h5", {"source": 40, "target": 30}, negatives=False)
    test = _write(tmp_path / "test.h5", {"source": 5, "target": 25}, negatives=False)
    from experiments.cotrain import CoTrainer

    with pytest.raises(ConfigError, match="refinement.policy = 'ground-truth' needs planted negatives"):
        CoTrainer(_features_config(tmp_path, train, test))
    assert "is_negative" not in FeatureBank({"a": np.zeros((2, 3))}, [0, -1], "target")[1]


# ---------------------------------------------------------------------- co-training on the benchmark
TINY = TINY_FEATURE_BENCHMARK


def test_a_tiny_co_training_run_on_the_benchmark_removes_exactly_the_planted_negatives(tmp_path):
    from experiments.cotrain import CoTrainer

    cfg = load_config(PRESETS / "ground-truth-removal.toml", {**TINY, "output_dir": str(tmp_path)})
    summary = CoTrainer(cfg).run()
    assert summary["evaluations"][-1]["segments"] == 500 and 0.0 <= summary["top1_last"] <= 1.0
    lines = [json.loads(line) for line in (cfg.run_dir() / "metrics.jsonl").read_text().splitlines()]
    stage2 = [r for r in lines if r["stage"] == 2]
    assert len(stage2) == 6
    for r in stage2:
        for key in ("rgb/source", "rgb/target", "flow/source", "flow/target"):
            assert r[f"removed/{key}"] == r[f"negatives_removed/{key}"] == r[f"negatives_present/{key}"]
    assert sum(r["negatives_present/rgb/source"] for r in stage2) > 0


def test_the_benchmark_script_shares_stage_1_and_reproduces_a_full_run(tmp_path):
    from experiments import feature_benchmark as fb
    from experiments.cotrain import CoTrainer

    records = fb.run_seed(
        0, ["adversarial-only", "ground-truth-removal", "adversarial-only-clean"], tmp_path / "bench", TINY
    )
    assert [r["stage1_shared"] for r in records] == [False, True, False]  # the clean variant has other source rows
    alone = load_config(
        PRESETS / "ground-truth-removal.toml", {**TINY, "output_dir": str(tmp_path / "alone"), "seed": 0}
    )
    assert CoTrainer(alone).run()["top1_last"] == pytest.approx(records[1]["top1"], abs=1e-12)
    again = fb.run_seed(0, ["adversarial-only"], tmp_path / "bench", TINY)  # finished runs are reused
    assert again[0]["top1"] == records[0]["top1"] and again[0]["seconds"] == records[0]["seconds"]
    assert (
        records[1]["refinement"]["source"]["precision"] == 1.0 and records[1]["refinement"]["target"]["recall"] == 1.0
    )


def test_claims_and_paired_differences_on_hand_made_numbers():
    from experiments import feature_benchmark as fb

    adv = [0.60, 0.62, 0.58, 0.61]
    rows = []
    for s, a in enumerate(adv):
        rows += [
            {"method": "adversarial-only", "seed": s, "top1": a, "contamination": 0.3},
            {"method": "adversarial-only-clean", "seed": s, "top1": a + 0.10 + 0.01 * s, "contamination": 0.3},
            {"method": "ground-truth-removal", "seed": s, "top1": a + 0.08, "contamination": 0.3},
        ]
    loss = fb.paired(rows, "adversarial-only-clean", "adversarial-only")
    assert loss["mean"] == pytest.approx(0.115) and loss["differences"] == pytest.approx([0.10, 0.11, 0.12, 0.13])
    assert loss["excludes_zero"] and 0.10 <= loss["low"] < loss["high"] <= 0.13
    check = fb.claims(rows)
    assert check["negative_transfer"] and check["ground_truth_recovers_half"]
    assert check["recovery"]["share"] == pytest.approx(0.08 / 0.115)
    weak = [dict(r, top1=r["top1"] - 0.05) if r["method"] == "ground-truth-removal" else r for r in rows]
    assert fb.claims(weak)["ground_truth_recovers_half"] is False
    assert fb.parse_seeds("0-2,7") == [0, 1, 2, 7]
