"""The feature-benchmark suite: geometry overlays load and generate what they say; the share arithmetic is right."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments import feature_suite as fs
from experiments.config import ConfigError, load_config
from experiments.report import bootstrap_interval
from features.data.negative_transfer import NegativeTransferParams, generate_negative_transfer

GEOMETRIES = fs.known_geometries()


def _params(geometry: str) -> NegativeTransferParams:
    return fs.suite_config("adversarial-only", geometry, 0, Path("/tmp/unused")).feature_benchmark


# ---------------------------------------------------------------------- geometries
def test_there_are_at_least_four_geometries_and_default_is_the_generator_default() -> None:
    assert len(GEOMETRIES) >= 4 and "default" in GEOMETRIES
    assert _params("default").to_dict() == NegativeTransferParams().to_dict()


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_geometry_sets_only_generator_keys_and_every_method_loads(geometry: str) -> None:
    keys = fs.geometry_params(geometry)
    assert keys and "clean" not in keys
    for method in fs.METHODS:
        cfg = fs.suite_config(method, geometry, 3, Path("/tmp/suite"))
        for key, value in keys.items():
            assert getattr(cfg.feature_benchmark, key) == value
        assert cfg.feature_benchmark.clean == (method == fs.CLEAN)  # the geometry leaves the clean switch to the method
        assert cfg.run_dir() == Path("/tmp/suite") / geometry / f"{method}-seed3"


@pytest.mark.parametrize("method", ["mmir-robust", "adversarial-only-clean"])
def test_a_preset_file_layering_method_and_geometry_loads_as_the_suite_composes_it(tmp_path: Path, method: str) -> None:
    preset = tmp_path / "preset.toml"
    preset.write_text(f'base = ["feature-benchmark/{method}", "feature-benchmark/geometries/rotation-45"]\n')
    from_file = load_config(preset, {"seed": 3}).to_dict()
    in_code = fs.suite_config(method, "rotation-45", 3, tmp_path).to_dict()
    for d in (from_file, in_code):
        d.pop("name"), d.pop("output_dir")
    assert from_file == in_code
    assert in_code["feature_benchmark"]["rotation"] == 45.0


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_generated_data_has_the_stated_contamination_and_placement(geometry: str) -> None:
    p = _params(geometry)
    data = generate_negative_transfer(p, seed=0)
    for split in ("source", "target"):
        share = data.is_negative[split].mean()
        assert share == pytest.approx(p.contamination, abs=1e-3)
    assert not data.is_negative["test"].any()
    assert set(data.negative_kind["target"][data.is_negative["target"]]) == {f"unknown-{p.unknown_placement}"}
    # how far a source outlier class lies from the nearest shared-class mean: outlier_offset for
    # "style" (0 for exact duplicates), and well away from every class mean for "random"
    x, y = data.features["source"]["rgb"], data.labels["source"]
    means = np.stack([x[y == k].mean(0) for k in range(p.classes)])
    for j in range(p.outlier_classes):
        centre = x[y == p.classes + j].mean(0)
        gap = np.linalg.norm(means - centre, axis=1).min()
        if p.outlier_placement == "style":
            assert gap == pytest.approx(
                p.outlier_offset, abs=0.75
            )  # sampling noise of two means in 32 dimensions: ~0.6
        else:
            assert gap > 1.0


def _turn(geometry: str) -> float:
    """Mean angle (degrees) between a class's centred source mean and its centred target mean."""
    data = generate_negative_transfer(_params(geometry), seed=1)
    angles = []
    for mod in data.modalities:
        centred = []
        for split in ("source", "target"):
            x, y, neg = data.features[split][mod], data.labels[split], data.is_negative[split]
            m = np.stack([x[(y == k) & ~neg].mean(0) for k in range(5)])
            centred.append(m - m.mean(0))  # removes the translation
        for a, b in zip(*centred):
            angles.append(np.degrees(np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b))))
    return float(np.mean(angles))


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_the_target_is_turned_by_the_stated_rotation(geometry: str) -> None:
    assert _turn(geometry) == pytest.approx(_params(geometry).rotation, abs=3.0)


def test_an_overlay_that_sets_more_than_the_generator_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fs, "GEOMETRIES", tmp_path)
    (tmp_path / "bad.toml").write_text("[stage2]\nsteps = 3\n")
    (tmp_path / "typo.toml").write_text("[feature_benchmark]\nrotaton = 3.0\n")
    (tmp_path / "clean.toml").write_text("[feature_benchmark]\nclean = true\n")
    for name in ("bad", "typo", "clean"):
        with pytest.raises(ConfigError):
            fs.geometry_params(name)


def test_bad_command_lines_exit_with_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--geometries", "nope"],
        ["--methods", "mmir"],
        ["--seeds", "x"],
        ["--jobs", "0"],
        ["--set", "stage2.steps=1e-3x"],
    ):
        with pytest.raises(SystemExit) as err:
            fs.parse_args(argv)
        assert err.value.code == 2
        assert len(capsys.readouterr().err.strip().splitlines()[-1]) > 0


# ---------------------------------------------------------------------- arithmetic
def test_a_one_stratum_difference_interval_is_mmir_reports() -> None:
    d = np.array([0.01, 0.03, -0.02, 0.05, 0.04, 0.0])
    out = fs.stratified_interval([d])
    assert out["value"] == pytest.approx(d.mean())
    assert (out["low"], out["high"]) == pytest.approx(bootstrap_interval(d))


def test_share_is_the_ratio_of_mean_gains() -> None:
    # m recovers exactly half of the ground-truth gain on every seed: 0.5, whatever the resample
    gt = np.array([0.10, 0.20, 0.12, 0.18])
    out = fs.stratified_interval([gt / 2], [gt])
    assert out == pytest.approx({"value": 0.5, "low": 0.5, "high": 0.5, "dropped": 0})
    # not the mean of per-seed ratios: (0.01 + 0.09) / 2 / 0.1 = 0.5, per-seed ratios 0.2 and 0.9
    out = fs.stratified_interval([np.array([0.01, 0.09])], [np.array([0.05, 0.10])])
    assert out["value"] == pytest.approx(0.05 / 0.075)
    assert 0.2 - 1e-9 <= out["low"] <= out["value"] <= out["high"] <= 0.9 + 1e-9


def test_pooled_share_weighs_geometries_equally_and_resamples_within_them() -> None:
    # geometry A (two seeds): half of a 0.15 bound; B (three seeds): nothing of a 0.05 bound
    a = ([0.075, 0.075], [0.0, 0.0, 0.0])
    b = ([0.15, 0.15], [0.05, 0.05, 0.05])
    out = fs.stratified_interval([np.array(x) for x in a], [np.array(x) for x in b])
    assert out["value"] == pytest.approx((0.075 + 0.0) / 2 / ((0.15 + 0.05) / 2))  # 0.375, not the mean share 0.25
    # every geometry is constant over its seeds: resampled within geometries the share cannot move
    # (a bootstrap over the pooled five seeds would mix A and B rows and spread it)
    assert (out["low"], out["high"]) == pytest.approx((0.375, 0.375))


def test_resamples_without_a_positive_bound_are_dropped() -> None:
    out = fs.stratified_interval([np.array([0.01, 0.02])], [np.array([0.05, -0.06])])
    assert 0 < out["dropped"] < fs.RESAMPLES
    assert np.isnan(fs.stratified_interval([np.array([0.01])], [np.array([-0.01])])["value"])


def _records() -> list[dict]:
    """Two geometries x 3 seeds: A has a 10-point bound that mmir half-recovers, B a 1-point bound (dropped)."""
    out = []
    for g, bound in (("A", 0.10), ("B", 0.01)):
        for seed in range(3):
            adv = 0.6 + 0.01 * seed
            for method, top1 in (
                ("adversarial-only", adv),
                ("adversarial-only-clean", adv + 2 * bound),
                ("ground-truth-removal", adv + bound),
                ("mmir", adv + bound / 2),
            ):
                removal = {}
                if method == "mmir":
                    removal = {"source": {"removed": 10.0, "precision": 0.4 + 0.01 * seed, "chance": 0.3}}
                out.append({"geometry": g, "method": method, "seed": seed, "top1": top1, "removal": removal})
    return out


def test_summary_keeps_geometries_with_a_large_enough_bound_and_pools_them() -> None:
    s = fs.summarise(_records(), min_gain=0.03)
    assert s["kept"] == ["A"]
    assert s["geometries"]["A"]["gain"]["value"] == pytest.approx(0.10)
    assert s["geometries"]["B"]["loss"]["value"] == pytest.approx(0.02)
    assert s["share"]["mmir"]["A"]["value"] == pytest.approx(0.5)
    assert s["share"]["mmir"]["pooled"]["value"] == pytest.approx(0.5)  # B is not pooled
    p = s["precision"]["mmir"]["source"]["A"]
    assert p["precision"] == pytest.approx(0.41) and p["chance"] == pytest.approx(0.3)
    assert p["excess"]["value"] == pytest.approx(0.11)
    text = fs.markdown(s)
    assert "B (dropped)" in text and "| mmir | 50% [50, 50]" in text
    assert "41.0% vs 30.0% = 1.37x" in text


def test_summary_tables_the_signal_aucs_of_the_runs_that_log_them(tmp_path: Path) -> None:
    records = _records()
    logged = next(r for r in records if r["geometry"] == "A" and r["method"] == "mmir")
    logged["run_dir"] = str(tmp_path)
    steps = [
        {"stage": 1, "diag/auc/density/rgb/source": 0.0},  # stage 1 does not count
        {"stage": 2, "diag/auc/density/rgb/source": 0.7, "diag/auc/density/flow/source": 0.9},
        {"stage": 2, "diag/auc/density/rgb/source": 0.8, "diag/auc/entropy/flow/target": 0.4},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    s = fs.summarise(records, min_gain=0.03)
    assert s["geometries"]["A"]["signal_aucs"]["source"]["density"] == pytest.approx(0.8)
    assert s["geometries"]["B"]["signal_aucs"] == {}
    text = fs.markdown(s)
    assert "| density | 0.80 | - |" in text and "| entropy | 0.40 | - |" in text


def test_removal_counts_from_a_metrics_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"stage2": {"batch_size": 80}}))
    lines = [
        {"stage": 1, "step": 1},
        {
            "stage": 2,
            "removed/rgb/source": 8,
            "removal_rate/rgb/source": 0.2,
            "negatives_removed/rgb/source": 4,
            "negatives_present/rgb/source": 12,
        },
        {
            "stage": 2,
            "removed/rgb/source": 0,
            "removal_rate/rgb/source": 0.0,
            "negatives_removed/rgb/source": 0,
            "negatives_present/rgb/source": 12,
        },
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    src = fs.removal_counts(tmp_path)["source"]
    assert src["rows"] == 80 and src["removed"] == 8
    assert src["precision"] == pytest.approx(0.5) and src["chance"] == pytest.approx(24 / 80)


def test_a_tiny_suite_runs_end_to_end(tmp_path: Path) -> None:
    tiny = {"stage1.steps": 2, "stage2.steps": 3, "evaluation.every": 3, "evaluation.last": 1}
    records = fs.run_suite(
        tmp_path, ["default"], ["adversarial-only", "random-removal"], [0], overrides=tiny, log=lambda _: None
    )
    assert [r["method"] for r in records] == ["adversarial-only", "random-removal"]
    assert records[1]["removal"]["source"]["removed"] > 0
    assert (tmp_path / "default" / "random-removal-seed0" / "summary.json").is_file()
