"""A paper preset trains from a fresh clone: ``mmir train experiments/configs/paper/D2-D1.toml --set data.root=DIR``.

Nothing beside the repository is needed: the MM-SADA splits come from the package
(``features/data/epic_splits``), and ``DIR`` holds generated JPEG frames in the EPIC layout for the real
D2 and D1 segments the run reads. A run reads the frames of the few training segments in its first
batches and of every target test segment's evaluation window, so only those frames are written (a full
EPIC video has tens of thousands); everything else is the preset as shipped, at toy sizes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from experiments.cli import main
from experiments.data_streams import BatchStream
from features.data.epic import EpicClips, EpicSegment, clip_windows, frame_path, load_split

PRESET = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "paper" / "D2-D1.toml"
SEED = 0  # pinned by an override too: the frames written depend on which segments the seed draws
FRAMES = 8  # data.frames: 8-frame windows instead of the preset's 16, half the files to write
STAGE1_BATCH = 4
STAGE2_BATCH = 10  # 5 source + 5 target clips: one candidate set of n_c = 5 per domain
# toy sizes only: every key the paper preset sets about the method (adversarial, agents, env, ...) stays as shipped
OVERRIDES = {
    "seed": str(SEED),
    "device": '"cpu"',
    "data.frames": str(FRAMES),
    "data.size": "24",
    "data.num_workers": "0",
    "model.width": "0.0625",
    "stage1.steps": "1",
    "stage1.batch_size": str(STAGE1_BATCH),
    "stage2.steps": "1",
    "stage2.batch_size": str(STAGE2_BATCH),
    "agents.batch_size": "2",
    "agents.learning_starts": "2",
    "agents.buffer_size": "100",
    "evaluation.windows": "1",
    "evaluation.batch_size": "64",
    "snapshots.enabled": "false",  # a snapshot reads every training segment
}


def _jpeg(mode: str, seed: int) -> bytes:
    """A small noise frame (32x24) encoded as JPEG: ``"RGB"`` for rgb/, ``"L"`` for flow u and v."""
    channels = 3 if mode == "RGB" else 1
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 32, channels), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(buffer, format="JPEG")
    return buffer.getvalue()


def _write_frames(root: Path, segment: EpicSegment, windows: dict[str, np.ndarray]) -> None:
    """The JPEGs of ``windows`` (frame indices per modality) in the EPIC layout under ``root``."""
    rgb, gray = _jpeg("RGB", segment.uid), _jpeg("L", segment.uid)
    for stream, indices, data in (
        ("rgb", windows["rgb"], rgb),
        ("u", windows["flow"], gray),
        ("v", windows["flow"], gray),
    ):
        folder = frame_path(root, segment, stream, 1).parent
        folder.mkdir(parents=True, exist_ok=True)
        for index in np.unique(indices):
            (folder / f"frame_{int(index):010d}.jpg").write_bytes(data)


def _every_window(segment: EpicSegment) -> dict[str, np.ndarray]:
    """All frames any training window of ``segment`` can read (the window start is random)."""
    first, last = segment.start_frame, segment.stop_frame
    flow_first, flow_last = max(1, first // 2), max(1, last // 2)  # flow frame k ~ RGB frame 2k
    return {
        "rgb": clip_windows(segment, "rgb", np.arange(first, last + 1), FRAMES),
        "flow": clip_windows(segment, "flow", np.arange(flow_first, flow_last + 1), FRAMES),
    }


def _first_batch(segments: list[EpicSegment], batch_size: int, stream: int) -> list[EpicSegment]:
    """The segments of a training stream's first batch (stage 1: stream 0; stage 2: 1 source, 2 target).

    A batch is a pure function of (seed, stream, epoch, batch), which is what makes resume exact; it also
    tells this test, before the run, which segments the run will read.
    """
    return [segments[i] for _, i in BatchStream(len(segments), batch_size, SEED, stream).batch_indices(0, 0)]


def epic_frames_for_the_run(root: Path) -> dict[str, set[str]]:
    """Write the frames the tiny D2 -> D1 run reads; returns the video ids per domain that got frames."""
    d2_train, d1_train, d1_test = load_split("D2", "train"), load_split("D1", "train"), load_split("D1", "test")
    training = (
        _first_batch(d2_train, STAGE1_BATCH, 0)
        + _first_batch(d2_train, STAGE2_BATCH // 2, 1)
        + _first_batch(d1_train, STAGE2_BATCH // 2, 2)
    )
    for segment in training:
        _write_frames(root, segment, _every_window(segment))
    # evaluation: one centred window per test segment, as EpicClips computes it (flow aligned on RGB)
    test = EpicClips(root, "D1", "test", num_frames=FRAMES, test_clips=1, size=24, segments=d1_test)
    for segment in d1_test:
        starts = test.window_starts(segment, None, 0)
        windows = {m: clip_windows(segment, m, np.array([starts[m]]), FRAMES) for m in ("rgb", "flow")}
        _write_frames(root, segment, windows)
    videos: dict[str, set[str]] = {"D2": set(), "D1": set()}
    for segment in training + d1_test:
        videos["D2" if segment.participant_id == "P01" else "D1"].add(segment.video_id)
    return videos


def test_d2_d1_paper_preset_trains_on_the_shipped_splits_with_only_data_root_set(tmp_path, capsys):
    root = tmp_path / "EPIC"
    videos = epic_frames_for_the_run(root)
    assert len(videos["D2"]) >= 2 and len(videos["D1"]) >= 6  # real ids: every D1 test video and some train ones
    overrides = {**OVERRIDES, "data.root": json.dumps(str(root)), "output_dir": json.dumps(str(tmp_path / "runs"))}
    args = ["train", str(PRESET), "--no-tensorboard"]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    rc = main(args)
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    run = tmp_path / "runs" / "mmir-D2-D1"
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["annotations"] == "" and (config["data"]["source"], config["data"]["target"]) == ("D2", "D1")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"]) for r in records] == [(1, 1), (2, 1)]
    # the paper's MMIR, not a stand-in: eq. 12's three terms, and all four agents selected rows
    assert {"cls", "adv", "dqn"} <= set(records[1])
    assert {f"removed/{m}/{d}" for m in ("rgb", "flow") for d in ("source", "target")} <= set(records[1])
    assert all(np.isfinite(r["loss"]) for r in records)
    summary = json.loads((run / "summary.json").read_text())
    assert [e["step"] for e in summary["evaluations"]] == [1]
    assert summary["evaluations"][0]["segments"] == 435  # every segment of the shipped D1 test split


def test_d2_d1_paper_preset_trains_from_an_installed_wheel(tmp_path):
    """The wheel carries the presets and the split files: ``mmir train`` of the installed preset, outside the repository."""
    import shutil
    import subprocess
    import sys

    repo = PRESET.parents[3]
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns(".venv", ".git", ".whl", "runs", "build", "*.egg-info", "__pycache__", "tests")
    shutil.copytree(repo, source, ignore=ignore)
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), "."]
    subprocess.run(build, cwd=source, check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("mmir-*.whl")
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    preset = site / "experiments" / "configs" / "paper" / "D2-D1.toml"
    assert preset.is_file() and (site / "features" / "data" / "epic_splits" / "D1_test.csv").is_file()

    root = tmp_path / "EPIC"
    epic_frames_for_the_run(root)
    overrides = {**OVERRIDES, "data.root": json.dumps(str(root)), "output_dir": json.dumps(str(tmp_path / "runs"))}
    args = ["-m", "experiments.cli", "train", str(preset), "--no-tensorboard"]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    where = subprocess.run(
        [sys.executable, "-c", "import experiments; print(experiments.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(site))  # the installed copy, not the repository's
    proc = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [
        json.loads(line) for line in (tmp_path / "runs" / "mmir-D2-D1" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [(r["stage"], r["step"]) for r in records] == [(1, 1), (2, 1)]
    summary = json.loads((tmp_path / "runs" / "mmir-D2-D1" / "summary.json").read_text())
    assert summary["evaluations"][0]["segments"] == 435  # the wheel's D1 test split
