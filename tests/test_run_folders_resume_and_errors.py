"""Run folders a researcher can trust: locks, no silent overwrite, complete resume, one-line errors.

Grouped by what they guard: run-folder safety, resume without gaps, one-line errors instead of
tracebacks, and agent defaults. The runs are the tiny synthetic-video run of tests/test_cli_train.py.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from video_helpers import tiny_run_toml, wait_for_record

from experiments.cli import main
from features.data.synthetic_video import generate_video_domains, tiny_config

REPO = Path(__file__).resolve().parents[1]
FAST = ["--no-tensorboard", "--set", "checkpoints.every=1000", "--set", "checkpoints.replay=false"]
LONGER = [*FAST, "--set", "stage2.steps=8", "--set", "evaluation.every=4"]  # time to act while a subprocess trains


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    generate_video_domains(root, tiny_config(seed=0), train_clips=10)
    return root


@pytest.fixture(scope="module")
def tiny_toml(tiny_root) -> Path:
    path = tiny_root / "tiny.toml"
    path.write_text(
        tiny_run_toml(
            tiny_root,
            stage2="lr = 0.001\nobjectives = {adversarial = 1.0}\nrefinement = true",
            snapshots="enabled = false",
        )
    )
    return path


@pytest.fixture(scope="module")
def finished(tiny_toml, tmp_path_factory) -> Path:
    """A finished tiny run (stage1.pt, no checkpoint.pt: checkpoints.every is larger than the run)."""
    out = tmp_path_factory.mktemp("finished")
    assert main(["train", str(tiny_toml), "--set", f"output_dir={json.dumps(str(out))}", *FAST]) == 0
    return out / "tiny"


@pytest.fixture(scope="module")
def undisturbed(tiny_toml, tmp_path_factory) -> Path:
    """The LONGER tiny run, trained without interference: what a disturbed run must still produce."""
    out = tmp_path_factory.mktemp("undisturbed")
    assert main(["train", str(tiny_toml), "--set", f"output_dir={json.dumps(str(out))}", *LONGER]) == 0
    return out / "tiny"


def copy_run(run: Path, tmp_path: Path) -> Path:
    """A copy of a run folder as ``tmp_path/runs/tiny`` (its output_dir is then ``tmp_path/runs``)."""
    dest = tmp_path / "runs" / "tiny"
    shutil.copytree(run, dest)
    return dest


def out_args(tmp_path: Path) -> list[str]:
    return ["--set", f"output_dir={json.dumps(str(tmp_path / 'runs'))}"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def cli(*args: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.cli", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# ---- run folders: one writer, nothing replaced silently ---------------------------------------------------


def test_two_concurrent_trains_second_exits_naming_the_holder_first_run_undisturbed(
    undisturbed, tiny_toml, tmp_path, capsys
):
    capsys.readouterr()
    first = cli("train", str(tiny_toml), *out_args(tmp_path / "shared"), *LONGER)
    metrics = tmp_path / "shared" / "runs" / "tiny" / "metrics.jsonl"
    try:
        wait_for_record(metrics, first, lambda r: True)  # the first run holds the folder now
        # --overwrite: only the lock stands in the second run's way
        assert main(["train", str(tiny_toml), *out_args(tmp_path / "shared"), *LONGER, "--overwrite"]) == 2
        err = one_line_error(capsys)
        assert f"pid {first.pid}" in err and "in use" in err
    finally:
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert metrics.read_text() == (undisturbed / "metrics.jsonl").read_text()


def test_lock_of_a_killed_holder_is_taken_over(tmp_path):
    from experiments.runs import RunLock

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from experiments.runs import RunLock; "
            "lock = RunLock(sys.argv[1]).__enter__(); print('held', flush=True); sys.stdin.read()",
            str(tmp_path),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    from experiments.runs import RunFolderError

    with pytest.raises(RunFolderError, match=f"pid {holder.pid}"):
        RunLock(tmp_path).__enter__()
    holder.kill()
    holder.wait()
    with RunLock(tmp_path), RunLock(tmp_path):  # the kernel dropped the dead holder's lock; re-entrant within a process
        assert f"pid {os.getpid()}" in (tmp_path / ".lock").read_text()


def test_fresh_train_into_a_folder_with_a_run_is_refused_unless_overwrite(finished, tiny_toml, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST]) == 2
    err = one_line_error(capsys)
    assert str(run) in err and "--resume" in err and "--overwrite" in err and "another name" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"} == before
    (run / "summary.json").write_text("{}")  # replaced by the new run
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST, "--overwrite"]) == 0
    assert json.loads((run / "summary.json").read_text())["evaluations"]
    assert (run / "metrics.jsonl").read_bytes() == before["metrics.jsonl"]


def test_resume_refuses_a_config_that_differs_in_more_than_step_counts(finished, tiny_toml, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    stored = (run / "config.json").read_text()
    assert (
        main(
            [
                "train",
                str(tiny_toml),
                *out_args(tmp_path),
                *FAST,
                "--resume",
                "--set",
                "seed=7",
                "--set",
                "stage2.lr=0.01",
            ]
        )
        == 2
    )
    err = one_line_error(capsys)
    assert "seed: 0 -> 7" in err and "stage2.lr: 0.001 -> 0.01" in err and "config.json" in err
    assert (run / "config.json").read_text() == stored  # untouched
    # more steps is the same run, continued (from stage1.pt, its newest state); a moved folder resumes where it is now
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST, "--resume", "--set", "stage2.steps=4"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"]) for r in records] == [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (2, 4)]


# ---- resume: continues from the newest state, wherever the run stopped ----------------------------------


def test_kill_9_in_stage2_then_resume_continues_from_stage1_pt_and_leaves_no_tmp(
    undisturbed, tiny_toml, tmp_path, capsys
):
    proc = cli("train", str(tiny_toml), *out_args(tmp_path / "killed"), *LONGER)
    run = tmp_path / "killed" / "runs" / "tiny"
    try:
        wait_for_record(run / "metrics.jsonl", proc, lambda r: r["stage"] == 2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert (
        not (run / "summary.json").exists() and not (run / "checkpoint.pt").exists() and (run / "stage1.pt").is_file()
    )
    stale = run / "checkpoint.pt.k1ll3d.tmp"  # what a kill during an atomic write leaves
    stale.write_bytes(b"\0" * 1000)
    (run / "notes.tmp").write_text("not ours")  # other files of the folder stay
    assert main(["train", str(tiny_toml), *out_args(tmp_path / "killed"), *LONGER, "--resume"]) == 0, (
        capsys.readouterr().err
    )
    assert not stale.exists() and (run / "notes.tmp").is_file()
    assert (run / "metrics.jsonl").read_text() == (undisturbed / "metrics.jsonl").read_text()
    assert (
        json.loads((run / "summary.json").read_text())["evaluations"]
        == json.loads((undisturbed / "summary.json").read_text())["evaluations"]
    )


def test_resume_state_is_the_newest_of_checkpoint_and_stage1(finished, tmp_path):
    from experiments.runs import resume_state

    run = copy_run(finished, tmp_path)
    assert resume_state(run) == run / "stage1.pt"
    shutil.copy(run / "stage1.pt", run / "checkpoint.pt")  # as far as stage1.pt: checkpoint.pt wins the tie
    assert resume_state(run) == run / "checkpoint.pt"


def test_checkpoints_without_replay_are_smaller_and_still_resume(tmp_path):
    import torch
    from cotrain_helpers import toy_config, toy_datasets, toy_model

    from experiments.cotrain import CoTrainer

    sizes = {}
    for replay in (True, False):
        cfg = toy_config(tmp_path / str(replay))
        cfg.checkpoints.replay = replay
        trainer = CoTrainer(cfg, datasets=toy_datasets(), model=toy_model())
        trainer.run()
        sizes[replay] = (trainer.run_dir / "checkpoint.pt").stat().st_size
        state = torch.load(trainer.run_dir / "checkpoint.pt", weights_only=True)
        assert all((r.get("replay") is not None) == replay for r in state["refiners"].values())
    assert sizes[False] < sizes[True]
    cfg = toy_config(tmp_path / "False")
    cfg.checkpoints.replay = False
    resumed = CoTrainer(cfg, datasets=toy_datasets(), model=toy_model())
    resumed.load_checkpoint(resumed.run_dir / "checkpoint.pt")
    assert (resumed.stage, resumed.step) == (2, cfg.stage2.steps // cfg.checkpoints.every * cfg.checkpoints.every)


# ---- one-line errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_resume_from_a_damaged_checkpoint_is_a_one_line_error(finished, tiny_toml, tmp_path, capsys, damage):
    run = copy_run(finished, tmp_path)
    good = (run / "stage1.pt").read_bytes()
    data = {"truncated": good[: len(good) // 2], "random": os.urandom(4096), "empty": b""}[damage]
    (run / "checkpoint.pt").write_bytes(data)
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST, "--resume"]) == 2
    err = one_line_error(capsys)
    assert str(run / "checkpoint.pt") in err and "not a readable checkpoint" in err


def test_resume_with_a_model_that_does_not_fit_is_a_one_line_error(finished, tiny_toml, tmp_path, capsys):
    run = copy_run(finished, tmp_path)
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST, "--resume", "--set", "model.width=0.125"]) == 2
    assert "model.width: 0.0625 -> 0.125" in one_line_error(capsys)
    (run / "config.json").unlink()  # the checkpoint keeps its own config: the resume is still refused
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST, "--resume", "--set", "model.width=0.125"]) == 2
    err = one_line_error(capsys)
    assert str(run / "stage1.pt") in err and "does not fit" in err


def test_unavailable_cuda_device_is_a_one_line_error(tiny_toml, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST, "--set", 'device="cuda:7"']) == 2
    assert "device = 'cuda:7'" in one_line_error(capsys)
    assert not (tmp_path / "runs" / "tiny" / "metrics.jsonl").exists()
    assert main(["classify", str(tmp_path / "clip.mp4"), "--device", "cuda"]) == 2
    assert "--device cuda" in one_line_error(capsys)


def test_data_root_with_empty_modality_folders_or_no_split_files_is_a_one_line_error(tmp_path, capsys):
    from video_helpers import TINY_RUN_TOML

    root = tmp_path / "epic"
    (root / "rgb").mkdir(parents=True)
    (root / "flow").mkdir()
    cfg = tmp_path / "run.toml"
    cfg.write_text(TINY_RUN_TOML.format(root=root, stage2="", snapshots=""))
    assert main(["train", str(cfg), *out_args(tmp_path), *FAST]) == 2
    assert "rgb/ and flow/ are empty" in one_line_error(capsys)
    for m in ("rgb", "flow"):
        (root / m / "P01").mkdir()  # not empty, but domains S and T have no split files
    assert main(["train", str(cfg), *out_args(tmp_path), *FAST]) == 2
    err = one_line_error(capsys)
    assert "data.source 'S'" in err and "split file" in err


def test_non_utf8_toml_is_a_one_line_error(tmp_path, capsys):
    cfg = tmp_path / "latin1.toml"
    cfg.write_bytes('name = "caf\u00e9"\n'.encode("latin-1"))
    assert main(["train", str(cfg)]) == 2
    err = one_line_error(capsys)
    assert str(cfg) in err and "UTF-8" in err


@pytest.mark.parametrize(
    "override",
    [
        "stage2.lr=nan",
        "stage1.lr=inf",
        "stage2.weight_decay=-inf",
        "discriminator.grl_scale=nan",
        "feature_benchmark.noise=inf",
    ],
)
def test_non_finite_hyperparameters_are_rejected_before_training(tiny_toml, tmp_path, capsys, override):
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST, "--set", override]) == 2
    key = override.partition("=")[0]
    err = one_line_error(capsys)
    assert err.startswith(f"mmir train: error: --set {key}=") and f"{key} must be a finite number" in err
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written


def test_disk_full_during_a_checkpoint_is_a_one_line_error_with_path_and_size(tiny_toml, tmp_path, capsys, monkeypatch):
    import torch

    def full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"\0" * 100)  # part of it got written
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST]) == 2
    err = one_line_error(capsys)
    run = tmp_path / "runs" / "tiny"
    assert f"no space left on device writing {run / 'stage1.pt'}" in err and "needs about" in err and "MB" in err
    assert not list(run.glob("*.tmp"))


def test_set_errors_name_the_override_and_non_toml_values_are_errors_for_non_string_keys(tiny_toml, tmp_path, capsys):
    assert main(["train", str(tiny_toml), "--set", "stage2.lrr=1"]) == 2
    assert one_line_error(capsys).startswith("mmir train: error: --set stage2.lrr=1")
    assert main(["train", str(tiny_toml), "--set", "stage2.lr=1e-3x"]) == 2
    err = one_line_error(capsys)
    assert "--set stage2.lr=1e-3x" in err and "not a TOML value" in err
    assert main(["train", str(tiny_toml), "--set", "stage2.steps=five"]) == 2
    assert "not a TOML value" in one_line_error(capsys)
    from experiments.config import parse_overrides

    # a bare word stays a string where the key is a string (or a number-or-string such as agents.epsilon)
    assert parse_overrides(["name=run2", "data.root=/data/epic", "agents.epsilon=released"]) == {
        "name": "run2",
        "data.root": "/data/epic",
        "agents.epsilon": "released",
    }


def test_summary_of_a_run_without_evaluation_is_valid_json(tiny_toml, tmp_path, capsys):
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST, "--set", "stage2.steps=0"]) == 0
    assert "no target evaluation" in capsys.readouterr().out

    def reject(constant):
        raise AssertionError(f"bare {constant} in summary.json")

    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text(), parse_constant=reject)
    assert summary["top1_last"] is None and summary["mean_class_accuracy_last"] is None and summary["evaluations"] == []


def test_report_skips_an_unreadable_run_with_a_warning(tmp_path, capsys):
    for seed in (0, 1):
        run = tmp_path / "mmir" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "config.json").write_text(
            json.dumps({"method": "mmir", "seed": seed, "stage2": {"steps": 3}, "data": {"source": "S", "target": "T"}})
        )
        (run / "summary.json").write_text(
            json.dumps(
                {
                    "top1_last": 0.5,
                    "mean_class_accuracy_last": 0.5,
                    "evaluations": [{"step": 3, "top1": 0.5, "mean_class_accuracy": 0.5}],
                }
            )
        )
    broken = tmp_path / "mmir" / "seed2"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "summary.json").write_text('{"top1_last": 0.')  # cut off
    assert main(["report", str(tmp_path), "--no-plots"]) == 0
    captured = capsys.readouterr()
    assert "2 runs" in " ".join(captured.out.split())  # the caption, however rich wraps it
    (warning,) = [line for line in captured.err.splitlines() if line.strip()]
    assert "skipping" in warning and str(broken) in warning


# ---- agent defaults --------------------------------------------------------------------------------------


def test_agents_default_to_the_models_modalities(tmp_path):
    from experiments.config import load_config

    path = tmp_path / "sensors.toml"
    path.write_text('[model]\nmodalities = ["acc", "gyro"]\n')
    cfg = load_config(path)
    assert cfg.agents.s_agents == ["acc", "gyro"] and cfg.agents.t_agents == ["acc", "gyro"]
    path.write_text('[model]\nmodalities = ["acc", "gyro"]\n[agents]\nt_agents = ["gyro"]\n')
    cfg = load_config(path)
    assert cfg.agents.s_agents == ["acc", "gyro"] and cfg.agents.t_agents == ["gyro"]  # what a config sets stays
    assert load_config(path, {"agents.s_agents": []}).agents.s_agents == []
