"""Sweeps keyed on their runs' settings, cluster sweeps through submitit, TensorBoard and plain logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from video_helpers import tiny_pair_config

from experiments.cli import main

FAST = ["--set", "checkpoints.every=1000", "--set", "checkpoints.replay=false"]


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory) -> Path:
    return tiny_pair_config(tmp_path_factory.mktemp("video"))


def sweep(pair: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "sweep",
            "--pairs",
            str(pair),
            "--methods",
            "source-only",
            "--seeds",
            "1",
            "--out",
            str(out),
            "--no-tensorboard",
            *FAST,
            *extra,
        ]
    )


# ---- a sweep is keyed on its runs' resolved configs ----------------------------------------------------


def test_sweep_with_changed_settings_refuses_instead_of_counting_old_runs_done(tiny_pair, tmp_path, capsys):
    assert sweep(tiny_pair, tmp_path) == 0
    run = tmp_path / "S-T" / "source-only" / "seed0"
    first = json.loads((tmp_path / "sweep.json").read_text())
    summary = (run / "summary.json").read_text()
    capsys.readouterr()
    assert sweep(tiny_pair, tmp_path, "--set", "stage2.lr=0.005") == 2
    err = capsys.readouterr().err
    assert (
        "already done" not in err
        and "S-T source-only seed 0" in err
        and "stage2.lr: 0.01 -> 0.005" in err
        and "--overwrite" in err
    )
    assert json.loads((tmp_path / "sweep.json").read_text()) == first  # claims nothing the runs did not use
    assert (run / "summary.json").read_text() == summary
    assert (
        main(
            [
                "sweep",
                "--pairs",
                str(tiny_pair),
                "--methods",
                "source-only",
                "--seeds",
                "1",
                "--out",
                str(tmp_path),
                "--dry-run",
                *FAST,
                "--set",
                "stage2.lr=0.005",
            ]
        )
        == 0
    )
    assert "changed S-T source-only seed 0" in capsys.readouterr().out
    # --overwrite: run again with the new settings; the shared stage 1 (same stage-1 settings) stays done
    assert sweep(tiny_pair, tmp_path, "--set", "stage2.lr=0.005", "--overwrite") == 0
    assert "0 of 1 shared stage-1 runs to do" in capsys.readouterr().out.replace("\n", " ")
    assert json.loads((run / "config.json").read_text())["stage2"]["lr"] == 0.005
    second = json.loads((tmp_path / "sweep.json").read_text())
    assert second["overrides"]["stage2.lr"] == 0.005
    from experiments.sweep import config_hash

    assert (
        second["runs"]
        == {"S-T/source-only/seed0": config_hash(json.loads((run / "config.json").read_text()))}
        != first["runs"]
    )
    # the same settings again: done
    assert sweep(tiny_pair, tmp_path, "--set", "stage2.lr=0.005") == 0
    assert "1 runs (1 already done)" in capsys.readouterr().out.replace("\n", " ")


def test_sweep_launcher_submitit_local_runs_end_to_end_and_resumes(tiny_pair, tmp_path, capsys):
    pytest.importorskip("submitit")
    # one stage-1 job, then one stage-2 job (each a fresh Python process: a few seconds of imports)
    args = [
        "sweep",
        "--pairs",
        str(tiny_pair),
        "--methods",
        "source-only",
        "--seeds",
        "1",
        "--out",
        str(tmp_path),
        "--launcher",
        "submitit-local",
        "--threads",
        "1",
        *FAST,
    ]
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out.replace("\n", " ")
    assert "1 runs (0 already done), 1 shared stage-1 runs to do" in out and "done: S-T source-only seed 0 (job " in out
    for method in ("source-only",):
        run = tmp_path / "S-T" / method / "seed0"
        assert json.loads((run / "summary.json").read_text())["method"] == method
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))  # written inside the submitted job
    assert list((tmp_path / ".submitit").glob("*_log.out"))  # submitit's per-job logs
    assert main(args) == 0  # the same bookkeeping: nothing left to submit
    out = capsys.readouterr().out.replace("\n", " ")
    assert "1 runs (1 already done), 0 shared stage-1 runs to do" in out and "done: S-T" not in out


def test_sweep_launcher_slurm_passes_resources_to_submitit_and_needs_sbatch(tiny_pair, tmp_path, capsys, monkeypatch):
    submitit = pytest.importorskip("submitit")
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert sweep(tiny_pair, tmp_path, "--launcher", "slurm") == 2
    assert "sbatch" in capsys.readouterr().err
    seen = {}
    real = submitit.AutoExecutor

    def in_process(folder, cluster=None, **kwargs):  # submitit's in-process executor instead of sbatch
        seen["cluster"] = cluster
        executor = real(folder, cluster="debug")
        update = executor.update_parameters

        def record(**params):
            seen.update(params)
            update(**params)

        executor.update_parameters = record
        return executor

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/sbatch")
    monkeypatch.setattr(submitit, "AutoExecutor", in_process)
    assert (
        sweep(
            tiny_pair,
            tmp_path,
            "--launcher",
            "slurm",
            "--slurm-partition",
            "gpu",
            "--slurm-time",
            "30",
            "--slurm-cpus",
            "4",
            "--threads",
            "1",
        )
        == 0
    )
    assert seen["cluster"] == "slurm" and seen["slurm_partition"] == "gpu" and seen["timeout_min"] == 30
    assert seen["cpus_per_task"] == 4 and seen["gpus_per_node"] == 1
    assert (tmp_path / "S-T" / "source-only" / "seed0" / "summary.json").is_file()


# ---- TensorBoard and plain logs --------------------------------------------------------------------------


def test_train_writes_every_numeric_metric_as_tensorboard_scalars_and_plain_log_lines(tiny_pair, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    toml = tiny_pair.read_text().replace(
        "[stage2]\n", "[stage2]\nobjectives = {adversarial = 1.0}\nrefinement = true\nlr = 0.001\n"
    )
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(toml)
    assert (
        main(
            ["train", str(cfg), "--set", f"output_dir={json.dumps(str(tmp_path / 'runs'))}", *FAST, "--log-every", "2"]
        )
        == 0
    )
    out = capsys.readouterr().out
    # not a terminal: plain, whole lines every 2 steps and at each stage's end
    lines = [line for line in out.splitlines() if line.startswith("stage ")]
    assert [line.split("  ")[0] for line in lines] == ["stage 1 step 2/2", "stage 2 step 2/3", "stage 2 step 3/3"]
    assert all("loss " in line and "…" not in line for line in lines) and "steps/s" in lines[-1]
    run = tmp_path / "runs" / "tiny"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        at = r["step"] + (2 if r["stage"] == 2 else 0)  # stage 2 continues stage 1's step axis
        for key, value in r.items():
            if key not in ("stage", "step") and isinstance(value, (int, float)) and not isinstance(value, bool):
                expected.setdefault(key, []).append((at, value))
    assert {"loss", "cls", "adv", "eval/top1"} <= set(expected) and any(k.startswith("reward/") for k in expected)
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == set(expected)
    for key, points in expected.items():
        events = acc.Scalars(key)
        assert [e.step for e in events] == [s for s, _ in points], key
        assert [e.value for e in events] == pytest.approx([v for _, v in points], rel=1e-6, abs=1e-6), key


def test_tensorboard_log_of_a_resumed_run_replaces_the_steps_logged_past_the_checkpoint(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from experiments.tensorboard_log import TensorBoardLog

    killed = TensorBoardLog(tmp_path, stage1_steps=10)
    for step in range(1, 7):
        killed(2, step, {"stage": 2, "step": step, "loss": 1.0, "flag": True, "note": "x"})
    killed.close()
    resumed = TensorBoardLog(tmp_path, stage1_steps=10)  # continues from a checkpoint at step 4
    for step in range(5, 9):
        resumed(2, step, {"stage": 2, "step": step, "loss": 2.0})
    resumed.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert acc.Tags()["scalars"] == ["loss"]  # numbers only
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [
        (11, 1.0),
        (12, 1.0),
        (13, 1.0),
        (14, 1.0),
        (15, 2.0),
        (16, 2.0),
        (17, 2.0),
        (18, 2.0),
    ]


def test_without_tensorboard_training_says_once_how_to_enable_it(tmp_path, monkeypatch):
    import experiments.tensorboard_log as tb
    from experiments.cli.train import training_hooks

    notes: list[str] = []
    monkeypatch.setattr(tb, "tensorboard_available", lambda: False)
    hooks, close = training_hooks(tmp_path, 2, True, notes.append)
    assert hooks == [] and notes == [tb.INSTALL_HINT] and "pip install tensorboard" in notes[0]
    close()
    assert training_hooks(tmp_path, 2, False, notes.append)[0] == [] and len(notes) == 1  # switched off: silent
    assert not (tmp_path / "tensorboard").exists()
