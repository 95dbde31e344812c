"""The smartwatch benchmark: data loading and conversion, windows and splits, encoders, presets, a tiny run.

The real data is fetched from the package registry once (``seglearn==1.2.5`` wheel, cached in
``$MMIR_CACHE`` or ``~/.cache/mmir``). A failed fetch fails these tests: they are never skipped.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.config import CONFIG_DIR, ConfigError, load_config
from features.data import watch as W
from features.safe_pickle import UnsafePickleError

WATCH_DIR = CONFIG_DIR / "watch"
DIRECTIONS = ("left-to-right", "right-to-left")
METHODS = ("source-only", "adversarial-only", "mmir")
PRESETS = sorted(WATCH_DIR.rglob("*.toml"))


@pytest.fixture(scope="module")
def data() -> W.WatchData:
    return W.load_watch()


@pytest.fixture
def cache_with_npy(tmp_path: Path, data: W.WatchData) -> Path:
    """A fresh cache folder holding only the verified original .npy (no converted file)."""
    target = W.WATCH.cached_path(tmp_path)
    target.parent.mkdir(parents=True)
    shutil.copyfile(W.fetch_registry_file(W.WATCH), target)
    return tmp_path


# ---------------------------------------------------------------------- data, windows, splits
def test_real_data_has_the_documented_structure(data: W.WatchData):
    assert len(data) == 140 and data.classes == W.CLASSES and data.channels == W.CHANNELS
    assert all(s.dtype == np.float32 and s.ndim == 2 and s.shape[1] == 6 for s in data.signals)
    assert sorted(set(data.subjects.tolist())) == list(range(1, 11))
    # one recording per (subject, arm, exercise)
    assert len({(s, a, y) for s, a, y in zip(data.subjects, data.sides, data.labels)}) == 140


def test_window_starts_hop_half_a_window():
    assert W.window_starts(100).tolist() == [0]
    assert W.window_starts(99).tolist() == []
    assert W.window_starts(249).tolist() == [0, 50, 100]
    assert W.window_starts(250).tolist() == [0, 50, 100, 150]
    assert W.window_starts(10, window=4).tolist() == [0, 2, 4, 6]
    with pytest.raises(ValueError, match="window must be >= 1"):
        W.window_starts(10, window=0)


@pytest.mark.parametrize(
    "source,target,counts", [("left", "right", (2434, 1510, 733)), ("right", "left", (2243, 1683, 751))]
)
def test_split_window_counts_arms_and_subjects(
    data: W.WatchData, source: str, target: str, counts: tuple[int, int, int]
):
    splits = W.watch_splits(data, source, target)
    assert tuple(len(splits[k]) for k in ("source", "target", "test")) == counts
    arm = {name: {int(data.sides[r]) for r in ds.recordings} for name, ds in splits.items()}
    assert arm == {"source": {W.ARMS[source]}, "target": {W.ARMS[target]}, "test": {W.ARMS[target]}}
    subjects = {name: set(ds.subjects.tolist()) for name, ds in splits.items()}
    assert subjects["source"] == set(range(1, 11))
    assert subjects["target"] == set(range(1, 8)) and subjects["test"] == set(W.TEST_SUBJECTS)
    assert not subjects["target"] & subjects["test"]
    uids = [set(ds.uids.tolist()) for ds in splits.values()]
    assert all(len(u) == len(ds) for u, ds in zip(uids, splits.values()))  # unique within a split
    assert not uids[1] & uids[2] and not uids[0] & uids[1] and not uids[0] & uids[2]
    item = splits["test"][0]
    assert set(item) >= {"acc", "gyro", "label", "uid", "domain", "recording", "subject", "start"}
    assert item["acc"].shape == item["gyro"].shape == (3, 100) and item["acc"].dtype == torch.float32
    assert item["domain"] == "target" and splits["source"][0]["domain"] == "source"
    # the window is the recording's samples [start, start + 100), accelerometer then gyroscope columns
    ds = splits["test"]
    i = len(ds) // 2
    rec, start = int(ds.recordings[i]), int(ds.starts[i])
    mean, std = W.channel_stats(data, W.split_recordings(data, source, target)["source"])
    raw = (data.signals[rec][start : start + 100] - mean.astype(np.float32)) / std.astype(np.float32)
    np.testing.assert_allclose(ds[i]["gyro"].numpy(), raw[:, 3:].T, rtol=1e-5, atol=1e-5)
    assert ds[i]["label"] == data.labels[rec]


def test_supervised_target_never_trains_on_test_subjects(data: W.WatchData):
    splits = W.watch_splits(data, "right", "right")
    assert set(splits["source"].subjects.tolist()) == set(range(1, 8))
    assert set(splits["source"].uids.tolist()) == set(splits["target"].uids.tolist())
    assert not set(splits["source"].uids.tolist()) & set(splits["test"].uids.tolist())


def test_standardisation_uses_source_statistics_only(data: W.WatchData):
    splits = W.watch_splits(data, "left", "right")
    src = torch.cat([splits["source"].x["acc"], splits["source"].x["gyro"]], 1)
    assert src.mean((0, 2)).abs().max() < 0.05 and (src.std((0, 2)) - 1).abs().max() < 0.05
    # the target arm scaled by 100: source windows and the statistics do not move; target windows scale with it
    on_target = data.sides == W.ARMS["right"]
    scaled = dataclasses.replace(data, signals=tuple(s * 100 if t else s for s, t in zip(data.signals, on_target)))
    again = W.watch_splits(scaled, "left", "right")
    assert torch.equal(again["source"].x["acc"], splits["source"].x["acc"])
    ratio = again["test"].x["gyro"].std() / splits["test"].x["gyro"].std()
    assert 90 < float(ratio) < 110
    with pytest.raises(W.WatchDataError, match="constant"):
        W.channel_stats(dataclasses.replace(data, signals=tuple(np.zeros_like(s) for s in data.signals)), range(3))


def test_split_errors_name_the_problem(data: W.WatchData):
    with pytest.raises(ValueError, match="source arm must be one of"):
        W.split_recordings(data, "up", "right")
    with pytest.raises(ValueError, match="no recording belongs to the test subjects"):
        W.split_recordings(data, "left", "right", test_subjects=(42,))
    with pytest.raises(ValueError, match="watch modalities are"):
        W.watch_splits(data, "left", "right", modalities=("rgb",))


# ---------------------------------------------------------------------- fetch, conversion, safety
def test_conversion_writes_a_plain_npz_that_later_loads_never_unpickle(
    cache_with_npy: Path, data: W.WatchData, monkeypatch
):
    fresh = W.load_watch(cache_with_npy)
    out = W.converted_path(cache_with_npy)
    assert out.is_file()
    np.load(out, allow_pickle=False).close()  # plain arrays only
    import features.safe_pickle

    def refuse(*args, **kwargs):
        raise AssertionError("the converted file must be read without unpickling")

    monkeypatch.setattr(features.safe_pickle, "safe_load_npy", refuse)
    again = W.load_watch(cache_with_npy)
    for a in (fresh, again):
        assert all(np.array_equal(x, y) for x, y in zip(a.signals, data.signals))
        assert (
            np.array_equal(a.labels, data.labels)
            and np.array_equal(a.subjects, data.subjects)
            and np.array_equal(a.sides, data.sides)
        )
        assert a.classes == data.classes


def test_a_damaged_converted_file_is_a_clear_error(tmp_path: Path):
    out = W.converted_path(tmp_path)
    out.parent.mkdir(parents=True)
    np.savez(out, version=np.int64(W.CONVERTED_VERSION), signals=np.zeros((10, 6), np.float32), lengths=np.array([4]))
    with pytest.raises(W.WatchDataError, match="lengths sum to 4 but signals has 10 rows"):
        W.load_watch(tmp_path)
    out.write_bytes(b"not a zip")
    with pytest.raises(W.WatchDataError, match="not a converted watch file.*--force"):
        W.load_watch(tmp_path)


def test_the_original_pickle_goes_through_the_restricted_unpickler(tmp_path: Path, monkeypatch):
    """A watch_dataset.npy whose pickle would call os.system is refused, and nothing is converted."""
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    payload = io.BytesIO()
    pickle.dump({"X": [Evil()]}, payload, protocol=2)
    evil = tmp_path / "evil.npy"
    header = {"descr": "|O", "fortran_order": False, "shape": ()}
    with open(evil, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(payload.getvalue())
    monkeypatch.setattr(W, "fetch_registry_file", lambda *a, **k: evil)
    with pytest.raises(UnsafePickleError, match="posix.system|os.system|nt.system"):
        W.load_watch(tmp_path / "cache")
    assert not W.converted_path(tmp_path / "cache").exists()


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: d.pop("side"), r"lacks key\(s\) \['side'\]"),
        (lambda d: d.update(X_labels=["a"] * 6), "X_labels must be"),
        (lambda d: d.update(y=np.append(d["y"][:-1], 7)), r"y must lie in \[0, 7\)"),
        (lambda d: d.update(side=np.full(140, 2)), "side must be 0 \\(left\\) or 1 \\(right\\)"),
        (lambda d: d.update(subject=d["subject"][:5]), "subject must have one entry per recording"),
        (lambda d: d["X"].__setitem__(3, np.zeros((50, 5))), r"X\[3\] must be a numeric \(n, 6\) array"),
        (lambda d: d["X"].__setitem__(4, np.full((50, 6), np.nan)), r"X\[4\] holds NaN"),
    ],
)
def test_validation_names_the_malformed_key(data: W.WatchData, change, message):
    raw = {
        "X": list(data.signals),
        "y": data.labels.copy(),
        "subject": data.subjects.copy(),
        "side": data.sides.copy(),
        "y_labels": list(data.classes),
        "X_labels": list(data.channels),
    }
    W.validate_watch(dict(raw), "f.npy")
    change(raw)
    with pytest.raises(W.WatchDataError, match=message):
        W.validate_watch(raw, "f.npy")


def test_cli_fetch_prints_the_path_and_the_table(cache_with_npy: Path, capsys):
    from experiments.cli import main

    assert main(["data", "fetch", "watch", "--cache", str(cache_with_npy)]) == 0
    out = capsys.readouterr().out
    assert str(W.converted_path(cache_with_npy)) in out
    for text in ("2434", "2243", "733", "751", "PEN", "ROW", "test"):
        assert text in out
    assert main(["data", "fetch", "mnist"]) == 2
    assert "unknown data set 'mnist'" in capsys.readouterr().err


# ---------------------------------------------------------------------- encoders
def test_temporal_conv_encoder_shapes_and_errors():
    from features.sensor_encoders import TemporalConvEncoder

    enc = TemporalConvEncoder(3, width=0.5)
    assert enc.feature_dim == 64
    assert enc.extract_features(torch.randn(4, 3, 100)).shape == (4, 64)
    assert enc(torch.randn(2, 3, 37)).shape == (2, 64)  # any window length
    with pytest.raises(ValueError, match=r"expected a window batch \[B, 3, T\]"):
        enc(torch.randn(2, 6, 100))
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        TemporalConvEncoder(3, kernel_size=4)


def test_sensor_model_from_a_preset_and_checkpoints(tmp_path: Path):
    from experiments.builders import sensor_model
    from features.sensor_encoders import TemporalConvEncoder

    cfg = load_config(WATCH_DIR / "left-to-right" / "mmir.toml")
    model = sensor_model(cfg)
    assert model.modalities == ("acc", "gyro") and model.feature_dims == {"acc": 128, "gyro": 128}
    out = model({"acc": torch.randn(5, 3, 100), "gyro": torch.randn(5, 3, 100)})
    assert out.logits.shape == (5, 7)
    enc = TemporalConvEncoder(3)
    torch.save(enc.state_dict(), tmp_path / "acc.pt")
    cfg.model.checkpoints = {"acc": str(tmp_path / "acc.pt")}
    loaded = sensor_model(cfg)
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.backbones["acc"].state_dict().values(), enc.state_dict().values())
    )
    cfg.model.width = 0.5
    with pytest.raises(ValueError, match="does not fit a temporal-conv encoder"):
        sensor_model(cfg)
    cfg.model.modalities, cfg.model.checkpoints = ["acc", "rgb"], {}
    with pytest.raises(ValueError, match=r"temporal-conv modalities are \['acc', 'gyro'\], got \['rgb'\]"):
        sensor_model(cfg)


# ---------------------------------------------------------------------- presets
def test_the_presets_exist():
    names = {str(p.relative_to(WATCH_DIR)) for p in PRESETS}
    assert names == {f"{d}/{m}.toml" for d in DIRECTIONS for m in METHODS} | {
        "supervised-target-left.toml",
        "supervised-target-right.toml",
    }


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: str(p.relative_to(WATCH_DIR)))
def test_presets_validate_and_name_the_watch_data(path: Path):
    import tomllib

    cfg = load_config(path)
    # a preset states only what differs from base/watch.toml and its method overlay
    raw = tomllib.loads(path.read_text())
    assert set(raw) <= {"base", "name", "data"} and set(raw.get("data", {})) <= {"source", "target"}
    assert cfg.data.root == ""  # the user cache
    assert (cfg.data.kind, cfg.model.backbone, cfg.model.modalities, cfg.model.num_classes) == (
        "watch",
        "temporal-conv",
        ["acc", "gyro"],
        7,
    )
    assert cfg.data.frames == W.WINDOW and cfg.data.num_workers == 0 and cfg.evaluation.windows == 1
    assert (cfg.stage2.batch_size // 2) % cfg.env.n_c == 0
    assert cfg.stage1.steps * cfg.stage1.batch_size <= 20 * 2434  # a CPU budget: about 12 source epochs


def _flat(path: Path) -> dict:
    d = load_config(path).to_dict()
    top = {k: v for k, v in d.items() if not isinstance(v, dict)}
    return top | {f"{k}.{kk}": vv for k, v in d.items() if isinstance(v, dict) for kk, vv in v.items()}


def test_presets_differ_only_in_direction_and_method():
    base = _flat(WATCH_DIR / "left-to-right" / "source-only.toml")
    method_keys = {"name", "method", "stage2.objectives", "stage2.refinement", "agents.s_agents", "agents.t_agents"}
    for d in DIRECTIONS:
        for m in METHODS:
            mine = _flat(WATCH_DIR / d / f"{m}.toml")
            differing = {k for k in base if base[k] != mine[k]}
            assert differing <= method_keys | {"data.source", "data.target"}, (d, m, differing)
            assert (mine["data.source"], mine["data.target"]) == tuple(d.split("-to-"))
            assert ("adversarial" in mine["stage2.objectives"], mine["stage2.refinement"]) == {
                "source-only": (False, False),
                "adversarial-only": (True, False),
                "mmir": (True, True),
            }[m]
            assert mine["method"] == m
    for arm in ("left", "right"):
        mine = _flat(WATCH_DIR / f"supervised-target-{arm}.toml")
        assert mine["data.source"] == mine["data.target"] == arm
        assert {k for k in base if base[k] != mine[k]} <= {"name", "method", "data.source", "data.target"}


def test_config_errors_name_the_key(tmp_path: Path):
    from experiments.builders import build_datasets

    preset = WATCH_DIR / "left-to-right" / "mmir.toml"
    for overrides, message in (
        ({"data.source": "D1"}, "data.source must be one of"),
        ({"model.num_classes": 8}, "model.num_classes must be 7"),
        ({"model.modalities": ["rgb", "gyro"], "agents.s_agents": [], "agents.t_agents": []}, "not watch modalities"),
    ):
        cfg = load_config(preset, overrides)
        with pytest.raises(ConfigError, match=message):
            build_datasets(cfg)


# ---------------------------------------------------------------------- the loop, end to end
def test_tiny_mmir_run_through_the_cotraining_loop(tmp_path: Path):
    from experiments.cotrain import CoTrainer
    from features.snapshot import Snapshot

    cfg = load_config(
        WATCH_DIR / "left-to-right" / "mmir.toml",
        {
            "output_dir": str(tmp_path),
            "device": "cpu",
            "model.width": 0.25,
            "stage1.steps": 3,
            "stage2.steps": 4,
            "evaluation.every": 2,
            "agents.learning_starts": 8,
            "agents.batch_size": 8,
        },
    )
    trainer = CoTrainer(cfg)
    assert set(trainer.refiners) == {(m, d) for m in ("acc", "gyro") for d in ("source", "target")}
    summary = trainer.run()
    assert [e["step"] for e in summary["evaluations"]] == [2, 4]
    assert all(e["segments"] == 733 for e in summary["evaluations"])  # every test window, none dropped
    assert 0.0 <= summary["top1_last"] <= 1.0
    records = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    stage2 = [r for r in records if r["stage"] == 2]
    assert len(stage2) == 4 and all(
        f"removal_rate/{m}/{d}" in r for r in stage2 for m in ("acc", "gyro") for d in ("source", "target")
    )
    snap = Snapshot(trainer.run_dir / "snapshots" / "step000004.h5")
    assert snap.problems() == []
    assert tuple(snap.modalities) == ("acc", "gyro")


def test_benchmark_script_help_and_linear_reference():
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.watch_benchmark", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "--seeds" in proc.stdout and "--reference-only" in proc.stdout
    from experiments.watch_benchmark import linear_reference

    rows = {(r["direction"], r["model"]): r for r in linear_reference()}
    for d in DIRECTIONS:  # a real domain gap: training on the target arm is far better than on the other arm
        assert rows[(d, "target-trained")]["top1"] > rows[(d, "source-only")]["top1"] + 0.15
        assert rows[(d, "source-only")]["top1"] > 1 / 7 + 0.1  # and the source arm still carries information
