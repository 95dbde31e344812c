"""A real full disk at each kind of write: one line (exit 2) naming the file, nothing half-written, and a run
that continues with ``--resume`` once space is freed.

Each test mounts a small tmpfs in a private mount namespace (``unshare -m``, as root) where the
write under test lands, lets ``mmir`` fill it, then frees space (grows or unmounts the tmpfs, or
deletes a ballast file) and runs again. Where mounting is impossible the tests skip, saying so.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from video_helpers import tiny_run_toml

from features.data.synthetic_video import generate_video_domains, tiny_config

REPO = Path(__file__).resolve().parents[1]
MMIR = '"$PY" -m experiments.cli'
# fills the file system of $1 to the last byte (os.write until ENOSPC)
FILL = '"$PY" -c "import os, sys\nfd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\ntry:\n    while True: os.write(fd, bytes(4096))\nexcept OSError: pass"'


@functools.cache
def can_mount() -> bool:
    """Whether this process may mount a tmpfs in a private mount namespace (root with ``unshare``)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


def in_namespace(script: str, **variables: object) -> subprocess.CompletedProcess:
    """Run the shell ``script`` in a private mount namespace, with ``variables`` (and ``$PY``) in its environment."""
    if not can_mount():
        pytest.skip("needs root and `unshare -m` to mount a small tmpfs (a full disk on demand); not available here")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "PY": sys.executable,
        **{k: str(v) for k, v in variables.items()},
    }
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=240
    )


def one_line_error(text: str) -> str:
    err = text.strip()
    assert "Traceback" not in err and "Exception in thread" not in err and len(err.splitlines()) == 1, err
    return err


def whole_lines(path: Path) -> list[tuple[int, int]]:
    """(stage, step) of every record of a metrics log, which must hold whole JSON lines only."""
    text = path.read_text()
    assert text.endswith("\n"), f"{path} ends in half a line: {text[-80:]!r}"
    return [(r["stage"], r["step"]) for r in map(json.loads, text.splitlines())]


@pytest.fixture(scope="module")
def tiny_toml(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("video")
    generate_video_domains(root, tiny_config(seed=0), train_clips=10)
    path = root / "tiny.toml"
    path.write_text(
        tiny_run_toml(root, stage2="lr = 0.001\nobjectives = {adversarial = 1.0}", snapshots="enabled = false")
    )
    return path


def train_twice(tmp_path: Path, toml: Path, mount: str, fill: str, free: str, *options: str) -> Path:
    """``mmir train`` into ``tmp_path/out`` with a tmpfs at ``mount`` (below it) that ``fill`` fills, then ``free`` and
    ``--resume``; the run folder's files and each attempt's rc/stdout/stderr are copied to ``tmp_path/log``."""
    log = tmp_path / "log"
    log.mkdir()
    args = " ".join(f"'{o}'" for o in options)
    script = f"""
    set -u
    mkdir -p "$OUT/{mount}"
    mount -t tmpfs -o size={fill} tmpfs "$OUT/{mount}"
    {MMIR} train "$TOML" --set "output_dir=\\"$OUT\\"" {args} > "$LOG/out1" 2> "$LOG/err1"; echo $? > "$LOG/rc1"
    ls -A "$OUT/tiny" "$OUT/{mount}" > "$LOG/ls1" 2>&1
    cp "$OUT/tiny/metrics.jsonl" "$LOG/metrics1" 2> /dev/null
    {free}
    {MMIR} train "$TOML" --set "output_dir=\\"$OUT\\"" {args} --resume > "$LOG/out2" 2> "$LOG/err2"; echo $? > "$LOG/rc2"
    cp -r "$OUT/tiny" "$LOG/run"
    """
    proc = in_namespace(script, OUT=tmp_path / "out", TOML=toml, LOG=log)
    assert proc.returncode == 0, proc.stderr
    return log


def read(log: Path, name: str) -> str:
    return (log / name).read_text()


def test_disk_full_at_a_checkpoint_is_one_line_and_the_run_resumes_once_space_is_freed(tiny_toml, tmp_path):
    # checkpoint.pt and stage1.pt of stage 1 (about 2.1 MB each) fit in 5 MiB; stage 2's checkpoint.pt does not
    log = train_twice(
        tmp_path,
        tiny_toml,
        "",
        "5m",
        'mount -o remount,size=64m "$OUT"',
        "--no-tensorboard",
        "--set",
        "checkpoints.every=2",
        "--set",
        "checkpoints.replay=false",
    )
    assert read(log, "rc1").strip() == "2", read(log, "err1")
    err = one_line_error(read(log, "err1"))
    run = tmp_path / "out" / "tiny"
    assert f"no space left on device writing {run / 'checkpoint.pt'}: it needs about" in err
    assert "free there; free some space, then continue with `mmir train" in err and "--resume`" in err
    assert ".tmp" not in read(log, "ls1")
    assert whole_lines(log / "metrics1")[-1] == (2, 2)  # the step whose checkpoint failed was logged whole
    assert read(log, "rc2").strip() == "0", read(log, "err2")
    assert whole_lines(log / "run" / "metrics.jsonl") == [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3)]
    assert json.loads(read(log, "run/summary.json"))["evaluations"]


def test_disk_full_at_a_snapshot_is_one_line_without_a_temporary_and_the_run_resumes(tiny_toml, tmp_path):
    log = train_twice(
        tmp_path,
        tiny_toml,
        "tiny/snapshots",
        "64k",
        'mount -o remount,size=16m "$OUT/tiny/snapshots"',
        "--no-tensorboard",
        "--set",
        "checkpoints.every=1000",
        "--set",
        "checkpoints.replay=false",
        "--set",
        "snapshots.enabled=true",
    )
    assert read(log, "rc1").strip() == "2", read(log, "err1")  # not a crash of HDF5 (139)
    err = one_line_error(read(log, "err1"))
    assert f"no space left on device writing {tmp_path / 'out' / 'tiny' / 'snapshots' / 'step000003.h5'}" in err
    assert ".tmp" not in read(log, "ls1")
    assert read(log, "rc2").strip() == "0", read(log, "err2")
    assert (log / "run" / "snapshots" / "step000003.h5").is_file()
    assert whole_lines(log / "run" / "metrics.jsonl") == [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3)]


def test_disk_full_for_tensorboard_events_is_one_line_without_thread_tracebacks_and_the_run_resumes(
    tiny_toml, tmp_path
):
    pytest.importorskip("tensorboard")
    log = tmp_path / "log"
    log.mkdir()
    options = "--set checkpoints.every=1000 --set checkpoints.replay=false"
    script = f"""
    set -u
    mkdir -p "$OUT/tiny/tensorboard"
    mount -t tmpfs -o size=64k tmpfs "$OUT/tiny/tensorboard"
    {FILL} "$OUT/tiny/tensorboard/ballast"
    {MMIR} train "$TOML" --set "output_dir=\\"$OUT\\"" {options} > "$LOG/out1" 2> "$LOG/err1"; echo $? > "$LOG/rc1"
    umount "$OUT/tiny/tensorboard"
    {MMIR} train "$TOML" --set "output_dir=\\"$OUT\\"" {options} --resume > "$LOG/out2" 2> "$LOG/err2"; echo $? > "$LOG/rc2"
    ls "$OUT/tiny/tensorboard" > "$LOG/events"
    cp -r "$OUT/tiny" "$LOG/run"
    """
    proc = in_namespace(script, OUT=tmp_path / "out", TOML=tiny_toml, LOG=log)
    assert proc.returncode == 0, proc.stderr
    assert read(log, "rc1").strip() == "2", read(log, "err1")
    err = one_line_error(read(log, "err1"))  # no writer-thread traceback, no chained one from closing
    assert f"no space left on device writing {tmp_path / 'out' / 'tiny' / 'tensorboard'}" in err
    assert "--no-tensorboard" in err and "--resume`" in err
    assert read(log, "rc2").strip() == "0", read(log, "err2")
    assert "events.out.tfevents" in read(log, "events")
    assert whole_lines(log / "run" / "metrics.jsonl") == [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3)]


def test_append_line_on_a_full_disk_keeps_whole_lines_and_appends_again_once_space_is_freed(tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    code = (
        "import sys\n"
        "from features.atomic_io import DiskFullError, append_line\n"
        "try:\n"
        "    append_line(sys.argv[1], 'y' * 300)\n"
        "except DiskFullError as err:\n"
        "    print('full:', err)\n"
    )
    script = f"""
    set -u
    mount -t tmpfs -o size=16k tmpfs "$DIR"
    "$PY" -c "from features.atomic_io import append_line; append_line('$DIR/metrics.jsonl', 'x' * 4000)"
    {FILL} "$DIR/ballast"
    "$PY" -c "{code}" "$DIR/metrics.jsonl" > "$LOG/out1" 2>&1
    cp "$DIR/metrics.jsonl" "$LOG/after_full"
    rm "$DIR/ballast"
    "$PY" -c "{code}" "$DIR/metrics.jsonl" > "$LOG/out2" 2>&1
    cp "$DIR/metrics.jsonl" "$LOG/after_freed"
    """
    (tmp_path / "mnt").mkdir()
    proc = in_namespace(script, DIR=tmp_path / "mnt", LOG=log)
    assert proc.returncode == 0, proc.stderr
    assert read(log, "out1").startswith(f"full: no space left on device writing {tmp_path / 'mnt' / 'metrics.jsonl'}")
    assert read(log, "after_full") == "x" * 4000 + "\n"  # the part of the line that fit was cut again
    assert read(log, "out2") == ""
    assert read(log, "after_freed") == "x" * 4000 + "\n" + "y" * 300 + "\n"


def test_disk_full_while_appending_metrics_leaves_whole_lines_and_the_run_starts_again(tiny_toml, tmp_path):
    """metrics.jsonl is the first write to fail here: three pages hold .lock, config.json and one page of records."""
    log = train_twice(
        tmp_path,
        tiny_toml,
        "",
        "12k",
        'mount -o remount,size=64m "$OUT"',
        "--no-tensorboard",
        "--set",
        "stage1.steps=60",
        "--set",
        "checkpoints.every=1000",
        "--set",
        "checkpoints.replay=false",
    )
    assert read(log, "rc1").strip() == "2", read(log, "err1")
    err = one_line_error(read(log, "err1"))
    assert f"no space left on device writing {tmp_path / 'out' / 'tiny' / 'metrics.jsonl'}" in err
    assert whole_lines(log / "metrics1")[:3] == [(1, 1), (1, 2), (1, 3)]  # and no half line after the last
    assert read(log, "rc2").strip() == "0", read(log, "err2")
    steps = whole_lines(log / "run" / "metrics.jsonl")
    assert steps == [(1, s) for s in range(1, 61)] + [(2, 1), (2, 2), (2, 3)]


def test_disk_full_writing_a_report_is_one_line_and_the_report_is_written_once_space_is_freed(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        run = runs / "mmir" / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "config.json").write_text(
            json.dumps({"method": "mmir", "seed": seed, "stage2": {"steps": 3}, "data": {"source": "S", "target": "T"}})
        )
        evaluations = [{"step": 3, "top1": 0.5, "mean_class_accuracy": 0.5}]
        (run / "summary.json").write_text(
            json.dumps({"top1_last": 0.5, "mean_class_accuracy_last": 0.5, "evaluations": evaluations})
        )
    log = tmp_path / "log"
    log.mkdir()
    (tmp_path / "report").mkdir()
    script = f"""
    set -u
    mount -t tmpfs -o size=16k tmpfs "$OUT"
    {FILL} "$OUT/ballast"
    {MMIR} report "$RUNS" --out "$OUT" --no-plots > "$LOG/out1" 2> "$LOG/err1"; echo $? > "$LOG/rc1"
    ls -A "$OUT" > "$LOG/ls1"
    rm "$OUT/ballast"
    {MMIR} report "$RUNS" --out "$OUT" --no-plots > "$LOG/out2" 2> "$LOG/err2"; echo $? > "$LOG/rc2"
    ls -A "$OUT" > "$LOG/ls2"
    """
    proc = in_namespace(script, OUT=tmp_path / "report", RUNS=runs, LOG=log)
    assert proc.returncode == 0, proc.stderr
    assert read(log, "rc1").strip() == "2", read(log, "err1")
    err = one_line_error(read(log, "err1"))
    assert f"no space left on device writing {tmp_path / 'report' / 'report.md'}" in err and "--out" in err
    assert "Table 1" in read(log, "out1")  # the tables were printed all the same
    assert read(log, "ls1").split() == ["ballast"]  # no temporary file left
    assert read(log, "rc2").strip() == "0", read(log, "err2")
    assert {"report.md", "report.csv"} <= set(read(log, "ls2").split())
