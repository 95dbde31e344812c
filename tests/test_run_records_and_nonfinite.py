"""Run records that cannot be silently wrong, NaN that never trains silently, and pinned CPU threads.

A resume checks and repairs ``metrics.jsonl`` and refuses a config that is not the checkpoint's
(whether or not ``config.json`` is still there); a log that vanishes during a run stops it; batch
sizes BatchNorm cannot train on, labels beyond ``model.num_classes`` and non-finite feature rows are
config errors before training; a non-finite loss stops the run naming the step and the term (or
skips the batch); a CPU run pins its torch threads from the config. Fast runs: the toy loop of
tests/cotrain_helpers.py and short feature-benchmark presets.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cotrain_helpers import toy_config, toy_datasets, toy_model
from snapshot_helpers import K, make_data, write_snapshot

from experiments.cli import main
from experiments.config import CONFIG_DIR, ConfigError, load_config
from experiments.cotrain import CoTrainer, NonFiniteLossError
from experiments.runs import RunFolderError
from features.snapshot import FEATURE_DTYPES, FINITE_SAMPLE_ROWS, FULL_FINITE_CHECK_BYTES, Snapshot

SOURCE_ONLY = CONFIG_DIR / "feature-benchmark" / "source-only.toml"
SHORT = ["--no-tensorboard", "--set", "stage1.steps=4", "--set", "stage2.steps=6", "--set", "evaluation.every=3"]


def train(tmp_path: Path, *args: str, preset: Path = SOURCE_ONLY) -> int:
    """``mmir train`` of a short feature-benchmark run into ``tmp_path/runs`` (checkpoints: stage1.pt only)."""
    out = ["--set", f"output_dir={json.dumps(str(tmp_path / 'runs'))}", "--set", "checkpoints.every=1000"]
    return main(["train", str(preset), *SHORT, *out, *args])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished short source-only run: stage1.pt at stage 1 step 4, six stage-2 records after it."""
    tmp = tmp_path_factory.mktemp("finished")
    assert train(tmp) == 0
    return tmp / "runs" / "feature-benchmark-source-only"


def copy_run(run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "runs" / run.name
    shutil.copytree(run, dest)
    return dest


def keys(run: Path) -> list[tuple[int, int]]:
    return [(r["stage"], r["step"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


# ---- config errors before training ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["stage1.batch_size=1"], "stage1.batch_size must be >= 2"),
        (["stage2.batch_size=2", "model.batchnorm=per-domain"], "stage2.batch_size must be >= 4"),
    ],
)
def test_a_batch_batchnorm_cannot_train_on_is_a_config_error_before_training(tmp_path, capsys, overrides, named):
    assert train(tmp_path, *(arg for o in overrides for arg in ("--set", o))) == 2
    err = one_line_error(capsys)
    assert named in err and "BatchNorm" in err
    assert not (tmp_path / "runs").exists()  # refused before the run folder was made


def test_one_joint_batchnorm_forward_over_both_halves_trains_on_a_batch_of_two():
    joint = load_config(SOURCE_ONLY, {"stage2.batch_size": 2})
    assert joint.model.batchnorm == "joint"  # the halves are normalised together: 2 rows


def feature_snapshots(tmp_path: Path, data: dict | None = None) -> tuple[Path, Path]:
    """A training and a test snapshot (labels 0..K-1, target also -1) for ``data.kind = "features"``."""
    train_h5 = write_snapshot(tmp_path / "train.h5", data or make_data(0))
    test_h5 = write_snapshot(tmp_path / "test.h5", make_data(1, {"source": 10, "target": 40}))
    return train_h5, test_h5


def features_args(train_h5: Path, test_h5: Path, num_classes: int = K) -> list[str]:
    return [
        "--set",
        "data.kind=features",
        "--set",
        f"data.root={json.dumps(str(train_h5))}",
        "--set",
        f"data.test_features={json.dumps(str(test_h5))}",
        "--set",
        f"model.num_classes={num_classes}",
        "--set",
        "stage1.batch_size=16",
        "--set",
        "stage2.batch_size=20",
    ]


def test_snapshot_labels_beyond_num_classes_are_a_config_error_naming_file_label_and_key(tmp_path, capsys):
    train_h5, test_h5 = feature_snapshots(tmp_path)
    assert train(tmp_path, *features_args(train_h5, test_h5, num_classes=K - 1)) == 2
    err = one_line_error(capsys)
    assert str(train_h5) in err and f"up to {K - 1}" in err and "model.num_classes = 3" in err
    assert f"at least {K}" in err
    assert train(tmp_path, *features_args(train_h5, test_h5)) == 0  # the label space it needs trains


def test_nan_rows_of_a_small_snapshot_are_found_before_training(tmp_path, capsys):
    train_h5 = write_snapshot(tmp_path / "train.h5", make_data(0))
    with h5py.File(train_h5, "r+") as f:  # written by another tool: the writer refuses non-finite rows
        f["/source/features/flow"][7] = np.inf
    _, test_h5 = feature_snapshots(tmp_path / "t")
    assert train(tmp_path, *features_args(train_h5, test_h5)) == 2
    err = one_line_error(capsys)
    assert str(train_h5) in err and "/source/features/flow" in err and "NaN or inf" in err and "[7]" in err


def large_snapshot_with_one_nan_row(path: Path) -> tuple[Path, int]:
    """A training snapshot whose source rgb matrix is over 256 MiB, gzip-chunked so that it stays small on disk,
    with one NaN row outside the rows that validation samples. Returns the file and the row."""
    d, dtype = 1024, "float32"
    n = FULL_FINITE_CHECK_BYTES // (d * 4) + 1024
    sampled = set(np.random.default_rng(0).choice(n, FINITE_SAMPLE_ROWS, replace=False).tolist()) | {0, n - 1}
    row = next(i for i in range(n // 2, n) if i not in sampled)
    small = make_data(0, {"source": 2, "target": 60}, d=d)
    rng = np.random.default_rng(0)
    means = rng.standard_normal((K, d)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.attrs.update(
            format="mmir-snapshot",
            schema_version=1,
            feature_dim=d,
            num_classes=K,
            modalities=["rgb", "flow"],
            dtype=dtype,
            step=0,
            stage=0,
            created_by="test",
            created_at="2024-01-01T00:00:00+00:00",
            config="{}",
        )
        for domain, rows in (("source", n), ("target", 60)):
            labels = np.sort(rng.integers(0, K, rows)) if domain == "source" else small["target"]["label"]
            group = f.create_group(domain)
            group.attrs["num_rows"] = rows
            for m in ("rgb", "flow"):
                ds = group.create_dataset(
                    f"features/{m}", (rows, d), dtype=dtype, chunks=(min(rows, 1024), d), compression="gzip"
                )
                if domain == "target":
                    ds[...] = small["target"]["features"][m]
                else:  # each row its class's mean, sorted by class: long runs of one row compress to almost nothing
                    for start in range(0, rows, 1024):
                        ds[start : start + 1024] = means[labels[start : start + 1024]]
            group.create_dataset("label", data=labels.astype(np.int64), compression="gzip")
            uid = [f"{domain}-{i}" for i in range(rows)]
            group.create_dataset("uid", data=uid, dtype=h5py.string_dtype(), compression="gzip")
        f["/source/features/rgb"][row] = np.nan
    assert dtype in FEATURE_DTYPES and path.stat().st_size < 64 << 20
    return path, row


@pytest.fixture(scope="module")
def large_nan_snapshot(tmp_path_factory) -> tuple[Path, int]:
    return large_snapshot_with_one_nan_row(tmp_path_factory.mktemp("large") / "large.h5")


def test_validating_a_large_snapshot_says_it_sampled_and_full_finds_the_nan_row(large_nan_snapshot):
    path, row = large_nan_snapshot
    with Snapshot(path, validate=False) as snap:
        sampled = snap.check()
        assert sampled.valid and sampled.sampled  # the NaN row lies outside the sample ...
        assert sampled.verdict().startswith(f"VALID {path} (sampled: ") and "/source/features/rgb" in sampled.verdict()
        assert "--full checks every row" in sampled.verdict()
        full = snap.check(full=True)  # ... and every row, read in blocks, finds it
        assert not full.valid and not full.sampled and full.verdict().startswith(f"INVALID {path}: 1 problem")
        assert f"rows [{row}]" in full.problems[0] and "/source/features/rgb" in full.problems[0]


def test_a_large_snapshot_with_one_nan_row_is_refused_before_training(large_nan_snapshot, tmp_path, capsys):
    path, row = large_nan_snapshot
    test_h5 = write_snapshot(tmp_path / "test1024.h5", make_data(1, {"source": 10, "target": 40}, d=1024))
    assert train(tmp_path, *features_args(path, test_h5)) == 2
    err = one_line_error(capsys)
    assert str(path) in err and "/source/features/rgb" in err and f"rows [{row}]" in err
    assert not (tmp_path / "runs" / "feature-benchmark-source-only" / "metrics.jsonl").exists()


# ---- a non-finite loss --------------------------------------------------------------------------------------


def nan_datasets() -> dict:
    datasets = toy_datasets()
    datasets["source"].x[11, 0, 2] = float("nan")  # one value of one source row
    return datasets


def test_a_nan_loss_stops_the_run_at_once_naming_the_step_and_the_term(tmp_path):
    trainer = CoTrainer(toy_config(tmp_path), datasets=nan_datasets(), model=toy_model(batchnorm=True))
    with pytest.raises(NonFiniteLossError) as caught:
        trainer.run()
    message = str(caught.value)
    assert "the loss is nan (cls = nan)" in message and 'nonfinite_loss = "skip"' in message
    stage, step = (int(w) for w in message.split(":")[0].replace("stage", "").split("step"))
    logged = keys(trainer.run_dir)
    assert logged[-1] == ((stage, step - 1) if step > 1 else (1, 4))  # the bad step is neither logged ...
    assert all(math.isfinite(r["loss"]) for r in map(json.loads, (trainer.run_dir / "metrics.jsonl").open()))
    assert not (trainer.run_dir / "summary.json").exists()  # ... nor summarised as if it had trained


def test_a_nan_loss_is_a_one_line_error_of_mmir_train(tmp_path, capsys):
    assert train(tmp_path, "--set", "stage1.lr=1e30") == 2  # Adam at lr 1e30: the weights overflow at once
    err = one_line_error(capsys)
    assert "stage 1 step 2: the loss is nan (cls = nan)" in err


def test_skip_leaves_nan_batches_untrained_and_the_model_finite(tmp_path):
    cfg = toy_config(tmp_path, refinement=False)
    cfg.nonfinite_loss = "skip"
    trainer = CoTrainer(cfg, datasets=nan_datasets(), model=toy_model(batchnorm=True))
    summary = trainer.run()
    records = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").open()]
    skipped = [r for r in records if r.get("nonfinite_skipped")]
    assert skipped and all(r["loss"] is None for r in skipped)  # NaN is logged as null (strict JSON)
    assert len(records) == cfg.stage1.steps + cfg.stage2.steps
    assert all(torch.isfinite(t).all() for t in trainer.module.state_dict().values() if t.is_floating_point())
    assert summary["top1_last"] is not None and math.isfinite(summary["top1_last"])


def test_skip_is_refused_where_a_strategy_steps_itself():
    with pytest.raises(ConfigError, match="nonfinite_loss = 'skip' needs the standard step"):
        load_config(SOURCE_ONLY, {"nonfinite_loss": "skip", "stage2.strategy": "mcd", "stage2.objectives": {}})


# ---- resume: the metrics log is checked and repaired --------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    ['{"stage": 2, "step": 7, "loss": 0.5', "not json at all", '{"step": 7, "loss": 0.5}', "[2, 7]"],
    ids=["half-written", "not-json", "no-stage", "not-an-object"],
)
def test_resume_cuts_a_damaged_last_line_with_a_warning(finished, tmp_path, capsys, damage):
    run = copy_run(finished, tmp_path)
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write(damage)  # what a kill or a full disk in the middle of a write leaves
    with pytest.warns(RuntimeWarning) as warned:
        assert train(tmp_path, "--resume") == 0
    (message,) = [str(w.message) for w in warned if "metrics.jsonl" in str(w.message)]
    assert "cut damaged line 11" in message and damage[:20] in message and "stage1.pt" in message
    assert (run / "metrics.jsonl").read_text() == (finished / "metrics.jsonl").read_text()  # as if never damaged


def test_resume_refuses_damage_before_the_checkpoint_step(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([lines[0], "garbage", *lines[2:]]) + "\n")
    assert train(tmp_path, "--resume") == 2
    err = one_line_error(capsys)
    assert "line 2 is not a metrics record" in err and "stage 1 step 4" in err and "--overwrite" in err
    (run / "metrics.jsonl").write_text("\n".join(lines[1:]) + "\n")  # the first record lost
    assert train(tmp_path, "--resume") == 2
    assert "stage 1 step(s) 1 are missing" in one_line_error(capsys)


def test_resume_without_metrics_log_is_an_error_saying_how_to_recover(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    (run / "metrics.jsonl").unlink()
    assert train(tmp_path, "--resume") == 2
    err = one_line_error(capsys)
    assert str(run / "metrics.jsonl") in err and "missing" in err and "--overwrite" in err
    assert not (run / "summary.json").read_text() == ""  # the folder is left as it was
    assert train(tmp_path, "--overwrite") == 0  # the way out it names
    assert (run / "metrics.jsonl").read_text() == (finished / "metrics.jsonl").read_text()


def test_a_metrics_log_deleted_during_a_run_stops_it(tmp_path):
    def delete_at(stage: int, step: int, metrics: dict) -> None:
        if (stage, step) == (2, 3):
            (tmp_path / "toy" / "metrics.jsonl").unlink()

    trainer = CoTrainer(toy_config(tmp_path), datasets=toy_datasets(), model=toy_model(), on_step=delete_at)
    with pytest.raises(RunFolderError, match=r"metrics.jsonl was deleted or moved away while the run trained"):
        trainer.run()
    assert not (tmp_path / "toy" / "summary.json").exists()


def test_a_metrics_log_replaced_during_a_run_stops_it(tmp_path):
    def replace_at(stage: int, step: int, metrics: dict) -> None:
        if (stage, step) == (1, 2):
            (tmp_path / "toy" / "metrics.jsonl").write_text("")  # truncated by another program

    trainer = CoTrainer(toy_config(tmp_path), datasets=toy_datasets(), model=toy_model(), on_step=replace_at)
    with pytest.raises(RunFolderError, match="changed by another program"):
        trainer.run()


# ---- resume: the config is the checkpoint's ------------------------------------------------------------------


def test_resume_after_deleting_config_json_refuses_another_config(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    (run / "config.json").unlink()
    assert train(tmp_path, "--resume", "--set", "stage2.lr=0.01", "--set", "agents.epsilon=0.1") == 2
    err = one_line_error(capsys)
    assert str(run / "stage1.pt") in err and "stage2.lr: 0.001 -> 0.01" in err and "agents.epsilon: 0.5 -> 0.1" in err
    assert not (run / "config.json").exists()  # nothing written for a refused resume


def test_resume_after_deleting_config_json_continues_and_writes_it_again(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    (run / "config.json").unlink()
    with pytest.warns(RuntimeWarning, match="config.json was missing; written again from the config kept in"):
        assert train(tmp_path, "--resume") == 0
    written, stored = (json.loads((r / "config.json").read_text()) for r in (run, finished))
    assert written == {**stored, "output_dir": str(tmp_path / "runs")}  # the folder moved; nothing else differs
    assert (run / "metrics.jsonl").read_text() == (finished / "metrics.jsonl").read_text()


def test_an_earlier_checkpoint_without_a_config_falls_back_to_config_json(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    state = torch.load(run / "stage1.pt", weights_only=True)
    assert json.loads(state.pop("config")) == json.loads((run / "config.json").read_text())
    torch.save(state, run / "stage1.pt")  # as an mmir that kept no config in checkpoints wrote it
    assert train(tmp_path, "--resume") == 0
    capsys.readouterr()
    (run / "config.json").unlink()
    torch.save(state, run / "stage1.pt")
    assert train(tmp_path, "--resume") == 2
    err = one_line_error(capsys)
    assert "config.json is missing" in err and "kept no config" in err and "--overwrite" in err


# ---- threads -----------------------------------------------------------------------------------------------


def test_a_cpu_run_pins_its_threads_from_the_config_and_records_them(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        cfg = toy_config(tmp_path)
        assert cfg.threads == 1  # the default: measured fastest for these small CPU runs (docs/cotraining.md)
        CoTrainer(cfg, datasets=toy_datasets(), model=toy_model()).run()
        assert torch.get_num_threads() == 1
        assert json.loads((tmp_path / "toy" / "config.json").read_text())["threads"] == 1
        torch.set_num_threads(2)
        cfg.threads = 0  # torch's setting stays
        CoTrainer(cfg, datasets=toy_datasets(), model=toy_model())
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_threads_must_not_be_negative():
    with pytest.raises(ConfigError, match="threads must be >= 0"):
        load_config(SOURCE_ONLY, {"threads": -1})
