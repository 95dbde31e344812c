"""features.data.synthetic_video: layout, determinism, planted negatives, flow encoding, domain shift."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from video_helpers import tiny_video_root

from features.data.epic import EPIC_COLUMNS, decode_jpeg, frame_path, load_split
from features.data.synthetic_video import (
    MOTIONS,
    SyntheticVideoConfig,
    decode_flow,
    encode_flow,
    generate_video_domains,
    tiny_config,
)


@pytest.fixture(scope="module")
def video_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_video_root(tmp_path_factory)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_deterministic_in_seed(video_root: Path, tmp_path: Path) -> None:
    again = generate_video_domains(tmp_path / "again", tiny_config(0))
    assert _digest(again) == _digest(video_root)
    other = generate_video_domains(tmp_path / "other", tiny_config(1))
    assert _digest(other) != _digest(video_root)


def test_epic_layout_and_columns(video_root: Path) -> None:
    cfg = tiny_config()
    for domain, participant in (("S", "P90"), ("T", "P91")):
        for split, n in (("train", cfg.train_clips), ("test", cfg.test_clips)):
            with (video_root / f"{domain}_{split}.csv").open() as fh:
                header = next(csv.reader(fh))
            assert header == [*EPIC_COLUMNS, "is_negative"]
            segments = load_split(domain, split, video_root)
            assert len(segments) == n and {s.participant_id for s in segments} == {participant}
            for s in segments:  # every frame a loader may ask for exists, in the EPIC naming
                for f in range(s.start_frame, s.stop_frame + 1):
                    assert frame_path(video_root, s, "rgb", f).is_file()
                for k in range(max(1, s.start_frame // 2), s.stop_frame // 2 + 1):
                    assert frame_path(video_root, s, "u", k).is_file() and frame_path(video_root, s, "v", k).is_file()
    image = decode_jpeg(frame_path(video_root, segments[0], "rgb", segments[0].start_frame).read_bytes(), gray=False)
    assert image.shape == (cfg.height, cfg.width, 3)
    u = decode_jpeg(frame_path(video_root, segments[0], "u", segments[0].start_frame // 2).read_bytes(), gray=True)
    assert u.shape == (cfg.height, cfg.width)
    meta = json.loads((video_root / "synthetic_video.json").read_text())
    assert meta["flow_encoding"]["zero_motion_level"] == 128 and meta["classes"] == list(MOTIONS[:3])


def test_planted_negatives_ground_truth(video_root: Path) -> None:
    cfg = tiny_config()
    expected = round(0.34 * cfg.train_clips)
    source = load_split("S", "train", video_root)
    target = load_split("T", "train", video_root)
    src_neg = [s for s in source if s.extra["is_negative"] == "1"]
    tgt_neg = [s for s in target if s.extra["is_negative"] == "1"]
    assert len(src_neg) == len(tgt_neg) == expected
    assert all(s.verb in MOTIONS[: cfg.num_classes] for s in src_neg)  # correct label, odd style
    assert all(s.verb == "unseen" and s.verb_class == -1 for s in tgt_neg)
    assert all(0 <= s.verb_class < cfg.num_classes for s in target if s.extra["is_negative"] == "0")
    for split in ("test",):
        for domain in ("S", "T"):
            assert all(s.extra["is_negative"] == "0" for s in load_split(domain, split, video_root))


def test_flow_encoding_round_trip() -> None:
    bound = 20.0
    flow = np.array([-30.0, -20.0, -1.0, 0.0, 0.5, 20.0, 25.0])
    levels = encode_flow(flow, bound)
    assert levels.tolist()[0] == 0 and levels.tolist()[-1] == 255 and levels[3] == 128
    back = decode_flow(levels, bound)
    step = 2 * bound / 255
    assert np.all(np.abs(back - np.clip(flow, -bound, bound)) <= step / 2 + 1e-6)


def test_flow_follows_the_class_motion(tmp_path: Path) -> None:
    # No negatives, source domain: 'right' has u > 0, v ~ 0; 'down' has v > 0, u ~ 0.
    cfg = SyntheticVideoConfig(
        height=32,
        width=32,
        num_classes=4,
        train_clips=4,
        test_clips=1,
        segments_per_video=4,
        min_frames=30,
        max_frames=30,
        speed=2.0,
        source_negative_fraction=0.0,
        target_negative_fraction=0.0,
        flow_bound=8.0,
    )
    root = generate_video_domains(tmp_path, cfg)
    checked = 0
    for s in load_split("S", "train", root):
        k = s.start_frame // 2 + 2
        u = decode_flow(decode_jpeg(frame_path(root, s, "u", k).read_bytes(), True), cfg.flow_bound)
        v = decode_flow(decode_jpeg(frame_path(root, s, "v", k).read_bytes(), True), cfg.flow_bound)
        moving = (np.abs(u) + np.abs(v)) > 1.5
        assert moving.sum() > 20, s.verb  # the disc moves
        du, dv = float(np.median(u[moving])), float(np.median(v[moving]))
        expected = {"right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1)}[s.verb]
        # 2 px per RGB frame -> ~4 px per flow frame (two RGB frames), +-15% speed jitter
        assert du == pytest.approx(4 * expected[0], abs=1.0) and dv == pytest.approx(4 * expected[1], abs=1.0)
        background = (np.abs(u) + np.abs(v)) < 0.5
        assert background.mean() > 0.5
        checked += 1
    assert checked == 4


def test_domains_differ_in_appearance(video_root: Path) -> None:
    means = {}
    for domain in ("S", "T"):
        s = load_split(domain, "test", video_root)[0]
        rgb = decode_jpeg(frame_path(video_root, s, "rgb", s.start_frame).read_bytes(), gray=False)
        means[domain] = rgb.reshape(-1, 3).mean(0)
    assert means["S"][0] > means["T"][0] + 40  # warm source vs cool target
    assert means["T"][2] > means["S"][2]


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticVideoConfig(num_classes=9)
    with pytest.raises(ValueError, match="min_frames"):
        SyntheticVideoConfig(min_frames=50, max_frames=40)
    with pytest.raises(ValueError, match="source_negative_fraction"):
        SyntheticVideoConfig(source_negative_fraction=1.5)


def test_domain_subset_is_the_same_bytes(video_root: Path, tmp_path: Path) -> None:
    only_source = generate_video_domains(tmp_path / "s", tiny_config(0), domains=("S",))
    assert not (only_source / "T_train.csv").exists() and not (only_source / "rgb" / "P91").exists()
    for rel in ("S_train.csv", "rgb/P90/P90_01/frame_0000000010.jpg", "flow/P90/P90_02/u/frame_0000000009.jpg"):
        assert (only_source / rel).read_bytes() == (video_root / rel).read_bytes(), rel
    with pytest.raises(ValueError, match="domains"):
        generate_video_domains(tmp_path / "x", tiny_config(0), domains=("Q",))
