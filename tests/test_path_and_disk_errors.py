"""Bad paths, a full disk and interruptions are one-line errors (exit 2) or clean stops, found before training.

Read-only folders: root ignores permission bits, so as root a folder is made read-only by a
read-only bind mount in a private mount namespace (``unshare -m``); other users get ``chmod``.
The real full-disk cases (a small tmpfs) are in tests/test_disk_full_faults.py.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from video_helpers import tiny_run_toml, wait_for_record

from experiments.cli import main
from features.data.synthetic_video import generate_video_domains, tiny_config

REPO = Path(__file__).resolve().parents[1]
FAST = ["--no-tensorboard", "--set", "checkpoints.every=1000", "--set", "checkpoints.replay=false"]


@pytest.fixture(scope="module")
def tiny_toml(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("video")
    generate_video_domains(root, tiny_config(seed=0), train_clips=10)
    path = root / "tiny.toml"
    path.write_text(
        tiny_run_toml(root, stage2="lr = 0.001\nobjectives = {adversarial = 1.0}", snapshots="enabled = false")
    )
    return path


@pytest.fixture(scope="module")
def finished(tiny_toml, tmp_path_factory) -> Path:
    """A finished tiny run (stage1.pt and summary.json; no checkpoint.pt)."""
    out = tmp_path_factory.mktemp("finished")
    assert main(["train", str(tiny_toml), *out_args(out), *FAST]) == 0
    return out / "runs" / "tiny"


def out_args(folder: Path) -> list[str]:
    return ["--set", f"output_dir={json.dumps(str(folder / 'runs'))}"]


def one_line_error(text: str) -> str:
    err = text.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }


def mmir(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "experiments.cli", *args],
        env=env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@functools.cache
def can_mount() -> bool:
    """Whether this process may mount in a private mount namespace (root with ``unshare``)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


def mmir_with_read_only(folder: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``mmir ARGS`` with ``folder`` read-only for it."""
    if os.geteuid() == 0:
        if not can_mount():
            pytest.skip("root ignores permission bits, and this machine allows no read-only bind mount (unshare -m)")
        q = shlex.quote(str(folder))
        script = f'mount --bind {q} {q} && mount -o remount,bind,ro {q} {q} && exec "$@"'
        command = ["unshare", "-m", "sh", "-c", script, "sh", sys.executable, "-m", "experiments.cli", *args]
        return subprocess.run(command, env=env(), cwd=REPO, capture_output=True, text=True, timeout=timeout)
    mode = folder.stat().st_mode
    folder.chmod(0o555)
    try:
        return mmir(*args, timeout=timeout)
    finally:
        folder.chmod(mode)


def snapshot_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- paths are checked before anything trains ---------------------------------------------------------------


def test_read_only_output_dir_is_a_one_line_error_before_training(tiny_toml, tmp_path):
    (tmp_path / "runs").mkdir()
    started = time.monotonic()
    proc = mmir_with_read_only(tmp_path / "runs", "train", str(tiny_toml), *out_args(tmp_path), *FAST)
    assert proc.returncode == 2, proc.stderr
    err = one_line_error(proc.stderr)
    assert str(tmp_path / "runs") in err and "not writable" in err and "--set output_dir=" in err
    assert not list((tmp_path / "runs").iterdir())
    assert time.monotonic() - started < 30  # refused at once, not after training


def test_read_only_run_folder_is_a_one_line_error_for_a_fresh_run(tiny_toml, tmp_path):
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    proc = mmir_with_read_only(run, "train", str(tiny_toml), *out_args(tmp_path), *FAST)
    assert proc.returncode == 2, proc.stderr
    err = one_line_error(proc.stderr)
    assert f"run folder {run}" in err and "not writable" in err and "make it writable" in err


def test_output_dir_that_is_a_file_is_a_one_line_error(tiny_toml, tmp_path, capsys):
    (tmp_path / "runs").write_text("not a folder")
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert f"{tmp_path / 'runs'} is a file, not a folder" in err and "output_dir" in err
    (tmp_path / "runs").unlink()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "tiny").write_text("a file where the run folder goes")
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert "is a file, not a folder" in err and "--set name=" in err


@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_resume_or_overwrite_of_a_read_only_run_is_a_one_line_error_and_touches_nothing(
    finished, tiny_toml, tmp_path, flag
):
    run = tmp_path / "runs" / "tiny"
    shutil.copytree(finished, run)
    before = snapshot_of(run)
    proc = mmir_with_read_only(run, "train", str(tiny_toml), *out_args(tmp_path), *FAST, flag)
    assert proc.returncode == 2, proc.stderr
    err = one_line_error(proc.stderr)
    assert f"run folder {run}" in err and "not writable" in err and flag in err
    assert snapshot_of(run) == before


def test_report_into_a_read_only_folder_is_a_one_line_error_naming_out(finished, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(finished, runs / "tiny")
    proc = mmir_with_read_only(runs, "report", str(runs), "--no-plots")
    assert proc.returncode == 2, proc.stderr
    err = one_line_error(proc.stderr)
    assert str(runs) in err and "not writable" in err and "--out" in err
    proc = mmir_with_read_only(runs, "report", str(runs), "--no-plots", "--out", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stderr  # read-only runs report elsewhere
    assert (tmp_path / "report" / "report.md").is_file()


def test_study_checks_out_before_training(tmp_path, capsys):
    out = tmp_path / "study"
    out.write_text("a file")
    started = time.monotonic()
    # a million training steps: were --out checked after training, this would not return in time
    argv = ["study", "--agent", "mmir-dqn", "--timesteps", "1000000", "--episodes", "10", "--feature-dim", "16"]
    assert main([*argv, "--out", str(out)]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert f"--out {out}" in err and "is a file, not a folder" in err
    assert time.monotonic() - started < 30
    ro = tmp_path / "ro"
    ro.mkdir()
    proc = mmir_with_read_only(ro, *argv, "--out", str(ro / "study"), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "not writable" in one_line_error(proc.stderr)


@pytest.mark.parametrize("argv", [("data", "fetch", "watch"), ("weights", "fetch", "i3d-kinetics-rgb")])
def test_fetch_with_a_cache_that_is_a_file_is_a_one_line_error(tmp_path, capsys, monkeypatch, argv):
    cache = tmp_path / "cache"
    cache.write_text("a file")
    assert main([*argv, "--cache", str(cache)]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert f"--cache {cache} is a file, not a folder" in err
    monkeypatch.setenv("MMIR_CACHE", str(cache))
    assert main(list(argv)) == 2
    err = one_line_error(capsys.readouterr().err)
    assert "$MMIR_CACHE" in err and str(cache) in err


def test_features_data_root_that_is_a_folder_says_a_snapshot_file_is_expected(tmp_path, capsys):
    preset = REPO / "experiments" / "configs" / "feature-benchmark" / "ground-truth-removal.toml"
    folder = tmp_path / "snapshots"
    folder.mkdir()
    argv = ["train", str(preset), "--set", 'data.kind="features"', "--set", f"data.root={json.dumps(str(folder))}"]
    assert main([*argv, *out_args(tmp_path), "--no-tensorboard"]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert f"data.root '{folder}' is a folder" in err and "snapshot file" in err and "no such" not in err
    assert not (tmp_path / "runs").exists()


# ---- config errors come first, and leave nothing behind -------------------------------------------------


def test_config_errors_are_reported_before_torch_is_imported(tiny_toml, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[stage2\n")
    code = "import sys; from experiments.cli import main; rc = main(sys.argv[1:]); print(rc, 'torch' in sys.modules)"
    for argv in (["missing.toml"], [str(bad)], [str(tiny_toml), "--set", "stage2.lrr=1"]):
        proc = subprocess.run(
            [sys.executable, "-c", code, "train", *argv], env=env(), cwd=tmp_path, capture_output=True, text=True
        )
        assert proc.stdout.split() == ["2", "False"], (argv, proc.stdout, proc.stderr)
        one_line_error(proc.stderr)


def test_a_negative_seed_is_a_config_error_that_leaves_no_run_folder(tiny_toml, tmp_path, capsys):
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST, "--set", "seed=-1"]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert "seed" in err and ">= 0" in err
    assert not (tmp_path / "runs").exists()


def test_a_run_that_failed_before_its_first_checkpoint_is_started_again_without_overwrite(tiny_toml, tmp_path, capsys):
    """What a run that died before saving any state leaves (its config, a few metrics) blocks no corrected rerun."""
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"name": "tiny", "seed": -1}))  # the failed attempt's settings
    (run / "metrics.jsonl").write_text('{"stage": 1, "step": 1, "loss": 1.0}\n')
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST]) == 0, capsys.readouterr().err
    assert "stopped before its first checkpoint" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["seed"] == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"]) for r in records] == [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3)]


def test_a_run_with_a_saved_state_is_still_protected_from_a_fresh_start(finished, tiny_toml, tmp_path, capsys):
    shutil.copytree(finished, tmp_path / "runs" / "tiny")
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST]) == 2
    assert "already holds a run" in one_line_error(capsys.readouterr().err)


def test_overwrite_with_a_config_that_cannot_be_built_keeps_the_old_run(finished, tiny_toml, tmp_path, capsys):
    run = tmp_path / "runs" / "tiny"
    shutil.copytree(finished, run)
    before = snapshot_of(run)
    gone = json.dumps(str(tmp_path / "no-such-data"))
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST, "--overwrite", "--set", f"data.root={gone}"]) == 2
    assert "no-such-data" in one_line_error(capsys.readouterr().err)
    assert snapshot_of(run) == before  # replaced only once the new run could start


def test_resume_of_a_run_folder_that_does_not_exist_names_it_and_creates_nothing(tiny_toml, tmp_path, capsys):
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST, "--resume"]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert f"no run folder {tmp_path / 'runs' / 'tiny'}" in err and "without --resume" in err
    assert not (tmp_path / "runs").exists()


def test_sweep_with_a_missing_pairs_file_or_a_bad_set_leaves_no_out_folder(tmp_path, capsys):
    out = tmp_path / "sweep"
    common = ["sweep", "--out", str(out), "--methods", "mmir", "--seeds", "1", "--no-tensorboard"]
    cases = [
        (["--pairs", str(tmp_path / "missing.toml")], "missing.toml: no such config file"),
        (["--set", "nosection.x=1"], "--set nosection.x=1"),
        (["--set", "stage2.lrr=1"], "stage2.lrr"),
    ]
    for extra, expected in cases:
        assert main([*common, *extra]) == 2
        err = one_line_error(capsys.readouterr().err)
        assert expected in err, err
        assert not out.exists(), f"{extra} left {list(out.iterdir())}"


def test_sweep_out_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "sweep").write_text("a file")
    assert main(["sweep", "--out", str(tmp_path / "sweep"), "--methods", "mmir", "--seeds", "1"]) == 2
    assert "is a file, not a folder" in one_line_error(capsys.readouterr().err)


# ---- a full disk, as the writers report it ------------------------------------------------------------


def test_torch_save_failing_for_want_of_space_is_a_disk_full_error_without_a_temporary(tmp_path, monkeypatch):
    """torch reports a full disk as "[enforce fail at inline_container.cc] ... unexpected pos", with no errno."""
    import torch

    from features import atomic_io
    from features.atomic_io import DiskFullError, atomic_torch_save

    def full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"\0" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", full)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(atomic_io.shutil, "disk_usage", lambda p: usage._replace(free=4096))
    with pytest.raises(DiskFullError, match=f"no space left on device writing {tmp_path / 'c.pt'}: it needs about"):
        atomic_torch_save({"w": torch.zeros(1000)}, tmp_path / "c.pt")
    assert not list(tmp_path.iterdir())
    # the same error with room to spare is torch's own problem, raised as it is
    monkeypatch.setattr(atomic_io.shutil, "disk_usage", lambda p: usage._replace(free=1 << 40))
    with pytest.raises(RuntimeError, match="inline_container"):
        atomic_torch_save({"w": torch.zeros(1000)}, tmp_path / "c.pt")
    assert not list(tmp_path.iterdir())


def test_disk_full_in_a_checkpoint_write_is_one_line_that_says_how_to_resume(tiny_toml, tmp_path, capsys, monkeypatch):
    import torch

    from features import atomic_io

    def full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"\0" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", full)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(atomic_io.shutil, "disk_usage", lambda p: usage._replace(free=4096))
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST]) == 2
    err = one_line_error(capsys.readouterr().err)
    run = tmp_path / "runs" / "tiny"
    assert f"no space left on device writing {run / 'stage1.pt'}" in err and "--resume`" in err
    assert not list(run.glob("*.tmp"))


def test_append_line_cuts_a_half_written_line_back_and_reports_the_full_disk(tmp_path, monkeypatch):
    from features import atomic_io
    from features.atomic_io import DiskFullError, append_line

    log = tmp_path / "metrics.jsonl"
    assert append_line(log, '{"step": 1}') == len('{"step": 1}\n')
    real_write = os.write

    def half_then_full(fd, data):
        if len(data) > 8:
            return real_write(fd, bytes(data[:8]))  # part of the line got in
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_io.os, "write", half_then_full)
    with pytest.raises(DiskFullError, match=f"no space left on device writing {log}"):
        append_line(log, '{"step": 2, "loss": 0.5}')
    assert log.read_text() == '{"step": 1}\n'
    monkeypatch.setattr(atomic_io.os, "write", real_write)
    append_line(log, '{"step": 2}')
    assert log.read_text().splitlines() == ['{"step": 1}', '{"step": 2}']
    with pytest.raises(ValueError, match="one line"):
        append_line(log, "two\nlines")


def test_tensorboard_write_errors_are_one_line_and_closing_after_them_is_quiet(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    from experiments.tensorboard_log import TensorBoardLog
    from features.atomic_io import DiskFullError

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "add_scalar", full)
    monkeypatch.setattr(SummaryWriter, "close", full)
    log = TensorBoardLog(tmp_path, 2)
    with pytest.raises(DiskFullError, match=f"no space left on device writing {tmp_path / 'tensorboard'}") as err:
        log(1, 1, {"stage": 1, "step": 1, "loss": 0.5})
    assert "--no-tensorboard" in str(err.value) and err.value.__cause__ is None and err.value.__suppress_context__
    log.close()  # the failure was reported: closing raises nothing more
    monkeypatch.undo()
    fresh = TensorBoardLog(tmp_path / "other", 2)
    fresh(1, 1, {"loss": 0.5})
    monkeypatch.setattr(SummaryWriter, "close", full)
    with pytest.raises(DiskFullError):  # a first failure at close is reported
        fresh.close()


# ---- interrupts: Ctrl-C and SIGTERM stop cleanly and say how to continue ------------------------------


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.cli", *args],
        env=env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_ctrl_c_names_the_step_and_the_resume_command(tiny_toml, tmp_path, capsys, monkeypatch):
    from experiments import progress

    def hook(*args, **kwargs):
        def shown(stage, step, metrics):
            if (stage, step) == (2, 1):
                raise KeyboardInterrupt

        return shown

    monkeypatch.setattr(progress, "plain_log_hook", hook)
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST]) == 130
    err = one_line_error(capsys.readouterr().err)
    assert err.startswith("mmir train: interrupted at stage 2 step 1; resume with `mmir train ")
    assert "--resume`" in err and "continues from stage 1 step 2, saved in stage1.pt" in err
    monkeypatch.undo()
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST, "--resume"]) == 0


def test_sigterm_stops_train_like_ctrl_c_with_one_line_no_temporaries_and_exit_143(tiny_toml, tmp_path):
    longer = [*FAST, "--set", "stage2.steps=40", "--set", "evaluation.every=20"]
    proc = cli("train", str(tiny_toml), *out_args(tmp_path), *longer)
    run = tmp_path / "runs" / "tiny"
    try:
        wait_for_record(run / "metrics.jsonl", proc, lambda r: r["stage"] == 2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    line = one_line_error(err)
    assert line.startswith("mmir train: interrupted at stage 2 step") and "--resume`" in line, line
    assert not list(run.rglob("*.tmp"))
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *longer, "--resume"]) == 0


def test_a_run_killed_before_its_first_checkpoint_says_so_and_both_restart_and_resume_work(tiny_toml, tmp_path):
    slow = [*FAST, "--set", "stage1.steps=400"]  # time to stop it before stage1.pt
    proc = cli("train", str(tiny_toml), *out_args(tmp_path), *slow)
    run = tmp_path / "runs" / "tiny"
    try:
        wait_for_record(run / "metrics.jsonl", proc, lambda r: True)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    line = one_line_error(err)
    assert "before the run's first checkpoint" in line and "no --overwrite needed" in line
    assert not (run / "stage1.pt").exists() and (run / "config.json").is_file()
    # --resume of such a run starts it from step 1 (stage1.steps may change on resume) ...
    assert main(["train", str(tiny_toml), *out_args(tmp_path), *FAST, "--resume"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"]) for r in records][:3] == [(1, 1), (1, 2), (2, 1)]
