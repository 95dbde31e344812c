"""features.data.epic: MM-SADA split files, clip sampling, transforms, the Dataset end to end."""

from __future__ import annotations

import fnmatch
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from video_helpers import TEST_DATA, tiny_video_root

from features.data import epic
from features.data.epic import (
    DOMAINS,
    EPIC_COLUMNS,
    EpicClips,
    EpicSegment,
    FrameReadError,
    class_counts,
    clip_windows,
    load_split,
    splits_dir,
)

# Counts per domain/split/class of the MM-SADA files (verb classes 0..7), checked against the files.
EXPECTED_COUNTS = {
    ("D1", "train"): [421, 383, 231, 128, 223, 71, 42, 44],
    ("D1", "test"): [124, 104, 52, 34, 66, 13, 20, 22],
    ("D2", "train"): [715, 692, 245, 214, 298, 89, 113, 129],
    ("D2", "test"): [208, 217, 68, 56, 136, 14, 26, 25],
    ("D3", "train"): [919, 1121, 450, 367, 808, 110, 53, 69],
    ("D3", "test"): [241, 280, 102, 71, 245, 29, 1, 5],
}


@pytest.fixture(scope="module")
def video_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_video_root(tmp_path_factory)


# ---------------------------------------------------------------------- split files
@pytest.mark.parametrize(("domain", "split"), sorted(EXPECTED_COUNTS))
def test_mmsada_split_counts(domain: str, split: str) -> None:
    segments = load_split(domain, split)
    assert class_counts(segments).tolist() == EXPECTED_COUNTS[(domain, split)]
    assert {s.participant_id for s in segments} == {DOMAINS[domain]}
    assert all(s.video_id.startswith(DOMAINS[domain] + "_") for s in segments)
    assert all(1 <= s.start_frame <= s.stop_frame for s in segments)
    assert len({s.uid for s in segments}) == len(segments)


def test_default_split_dir_is_the_package_copy_with_its_notice() -> None:
    """The splits ship inside the package, beside the module, with their origin and licence."""
    directory = splits_dir()
    assert directory == Path(epic.__file__).resolve().parent / "epic_splits"
    assert sorted(p.name for p in directory.glob("*.csv")) == [
        f"{d}_{s}.csv" for d in DOMAINS for s in ("test", "train")
    ]
    assert not list(directory.glob("*.pkl"))  # CSV only: unpickling runs code
    notice = (directory / "NOTICE").read_text()
    assert "MM-SADA_Domain_Adaptation_Splits" in notice and "creativecommons.org/licenses/by-nc/4.0" in notice
    assert len(load_split("D1", "test")) == 435


def test_split_files_and_notice_are_declared_package_data_and_licence_files() -> None:
    """A wheel carries only what pyproject.toml declares: every split file and the NOTICE must match a pattern."""
    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["features"]
    package = root / "features"
    shipped = [p.relative_to(package).as_posix() for p in splits_dir().iterdir()]
    assert shipped and all(any(fnmatch.fnmatch(name, pat) for pat in patterns) for name in shipped), (shipped, patterns)
    assert "features/data/epic_splits/NOTICE" in project["project"]["license-files"]


def test_pickles_need_trust(tmp_path: Path) -> None:
    shutil.copy(TEST_DATA / "epic_mmsada_splits" / "D1_test.pkl", tmp_path / "D1_test.pkl")
    with pytest.raises(FileNotFoundError, match="trust_pickle=True"):
        load_split("D1", "test", tmp_path)
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs pandas"):
            load_split("D1", "test", tmp_path, trust_pickle=True)
    else:
        from_pickle = load_split("D1", "test", tmp_path, trust_pickle=True)
        from_csv = load_split("D1", "test")
        assert [(s.uid, s.start_frame, s.verb_class) for s in from_pickle] == [
            (s.uid, s.start_frame, s.verb_class) for s in from_csv
        ]


def test_bad_split_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "X_train.csv").write_text("uid,video\n1,a\n")
    with pytest.raises(ValueError, match=r"X_train\.csv: expected columns"):
        load_split("X", "train", tmp_path)
    header = ",".join(EPIC_COLUMNS)
    (tmp_path / "X_test.csv").write_text(f"{header}\n1,P01,P01_01,n,a,b,10,oops,take,0\n")
    with pytest.raises(ValueError, match=r"X_test\.csv:2: column 'stop_frame'"):
        load_split("X", "test", tmp_path)
    with pytest.raises(ValueError, match="split must be"):
        load_split("D1", "val", tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="domain must be one of"):
        load_split("D9", "train", tmp_path)


# ---------------------------------------------------------------------- sampling
def _segment(start: int, stop: int) -> EpicSegment:
    return EpicSegment(1, "P01", "P01_01", "take cup", start, stop, "take", 0)


def test_clip_windows_stride_and_clamp() -> None:
    seg = _segment(100, 200)
    rgb = clip_windows(seg, "rgb", np.array([100]))[0]
    assert rgb.tolist() == list(range(100, 131, 2))
    flow = clip_windows(seg, "flow", np.array([50]))[0]
    assert flow.tolist() == list(range(50, 66))
    short = _segment(7, 20)  # shorter than a window: edge frames repeat
    assert clip_windows(short, "rgb", np.array([7]))[0].tolist() == [7, 9, 11, 13, 15, 17, 19] + [20] * 9
    assert clip_windows(short, "flow", np.array([3]))[0].tolist() == list(range(3, 11)) + [10] * 8


def test_test_windows_evenly_spaced_and_flow_aligned(video_root: Path) -> None:
    ds = EpicClips(video_root, "S", "test", size=16, segments=[_segment(101, 300)])
    starts = [ds.window_starts(ds.segments[0], None, i) for i in range(5)]
    rgb = [s["rgb"] for s in starts]
    assert rgb[0] == 101 and rgb[-1] == 300 - 30 and np.all(np.diff(rgb) > 0)
    assert max(np.diff(rgb)) - min(np.diff(rgb)) <= 1
    assert [s["flow"] for s in starts] == [r // 2 for r in rgb]


def test_training_windows_independent_or_synchronised(video_root: Path) -> None:
    seg = [_segment(101, 900)]
    free = EpicClips(video_root, "S", "train", size=16, segments=seg)
    sync = EpicClips(video_root, "S", "train", size=16, segments=seg, synchronised=True)
    rng = np.random.default_rng(0)
    free_starts = [free.window_starts(seg[0], rng, 0) for _ in range(50)]
    sync_starts = [sync.window_starts(seg[0], rng, 0) for _ in range(50)]
    assert all(s["flow"] == s["rgb"] // 2 for s in sync_starts)
    assert sum(s["flow"] == s["rgb"] // 2 for s in free_starts) < 5
    assert all(101 <= s["rgb"] <= 900 - 30 and 50 <= s["flow"] <= 450 - 15 for s in free_starts)


def test_flip_negates_u_and_mirrors(video_root: Path) -> None:
    ds = EpicClips(video_root, "S", "train", size=8)
    frames = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 2), dtype=np.uint8)
    box = (0.0, 0.0, 1.0, 1.0)
    plain = ds.transform(frames, "flow", box, flip=False)
    flipped = ds.transform(frames, "flow", box, flip=True)
    torch.testing.assert_close(flipped[0], -plain[0].flip(-1))
    torch.testing.assert_close(flipped[1], plain[1].flip(-1))
    rgb = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    torch.testing.assert_close(ds.transform(rgb, "rgb", box, True), ds.transform(rgb, "rgb", box, False).flip(-1))
    assert plain.shape == (2, 4, 8, 8)
    assert float(ds.transform(np.full((1, 8, 8, 2), 255, np.uint8), "flow", box, False).min()) == 1.0
    assert float(ds.transform(np.zeros((1, 8, 8, 2), np.uint8), "flow", box, False).max()) == -1.0


def test_multiscale_crop_boxes(video_root: Path) -> None:
    ds = EpicClips(video_root, "S", "train", size=16)
    rng = np.random.default_rng(0)
    boxes = [ds.crop_box(256, 456, rng) for _ in range(300)]
    sides = {b[2] for b in boxes} | {b[3] for b in boxes}
    assert sides == {256, 224, 192, 169}
    assert all(0 <= t and t + h <= 256 and 0 <= left and left + w <= 456 for t, left, h, w in boxes)
    assert ds.crop_box(256, 456, None) == (16, 116, 224, 224)


# ---------------------------------------------------------------------- end to end
def _collect(ds: EpicClips, workers: int) -> list[dict]:
    loader = DataLoader(ds, batch_size=4, num_workers=workers, shuffle=False)
    return list(loader)


@pytest.mark.parametrize("split", ["train", "test"])
def test_dataset_end_to_end_with_workers(video_root: Path, split: str) -> None:
    ds = EpicClips(video_root, "T", split, size=24, seed=5, role="target")
    segments = load_split("T", split, video_root)
    assert len(ds) == len(segments) * (5 if split == "test" else 1)
    batches = _collect(ds, workers=2)
    rgb = torch.cat([b["rgb"] for b in batches])
    flow = torch.cat([b["flow"] for b in batches])
    assert rgb.shape == (len(ds), 3, 16, 24, 24) and rgb.dtype == torch.float32
    assert flow.shape == (len(ds), 2, 16, 24, 24)
    assert rgb.min() >= -1 and rgb.max() <= 1 and flow.min() >= -1 and flow.max() <= 1
    assert rgb.std() > 0.05 and flow.abs().max() > 0.02  # real pixels and real motion
    uids = torch.cat([b["uid"] for b in batches]).tolist()
    per = 5 if split == "test" else 1
    assert uids == [s.uid for s in segments for _ in range(per)]
    assert torch.cat([b["label"] for b in batches]).tolist() == [s.verb_class for s in segments for _ in range(per)]
    assert all(d == "target" for b in batches for d in b["domain"])
    assert all(d == "T" for b in batches for d in b["domain_name"])
    assert ds.class_counts(3).sum() == sum(s.verb_class >= 0 for s in segments)
    negatives = torch.cat([b["is_negative"] for b in batches]).tolist()
    assert negatives == [s.extra["is_negative"] == "1" for s in segments for _ in range(per)]
    if split == "test":
        assert torch.cat([b["clip_index"] for b in batches]).tolist() == [0, 1, 2, 3, 4] * len(segments)


def test_dataset_is_deterministic_across_workers_and_epochs(video_root: Path) -> None:
    ds = EpicClips(video_root, "S", "train", size=16, seed=3)
    a, b = _collect(ds, 0), _collect(ds, 2)
    for x, y in zip(a, b):
        assert torch.equal(x["rgb"], y["rgb"]) and torch.equal(x["flow"], y["flow"])
    ds.set_epoch(1)
    c = _collect(ds, 0)
    assert not all(torch.equal(x["rgb"], y["rgb"]) for x, y in zip(a, c))
    other_seed = EpicClips(video_root, "S", "train", size=16, seed=4)
    assert not torch.equal(other_seed[0]["rgb"], ds[0]["rgb"]) or not torch.equal(other_seed[1]["rgb"], ds[1]["rgb"])


def test_decoders_agree_and_modalities_subset(video_root: Path) -> None:
    fast = EpicClips(video_root, "S", "test", size=16, decoder="simplejpeg")
    pil = EpicClips(video_root, "S", "test", size=16, decoder="pillow")
    torch.testing.assert_close(fast[2]["rgb"], pil[2]["rgb"], atol=2 / 255, rtol=0)
    torch.testing.assert_close(fast[2]["flow"], pil[2]["flow"], atol=2 / 255, rtol=0)
    only_flow = EpicClips(video_root, "S", "test", size=16, modalities=("flow",))
    item = only_flow[0]
    assert "rgb" not in item and item["flow"].shape == (2, 16, 16, 16)
    with pytest.raises(ValueError, match="modalities"):
        EpicClips(video_root, "S", "test", modalities=("depth",))  # type: ignore[arg-type]


def _copy_root(video_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(video_root, root)
    return root


def test_missing_frame_names_path_and_uid(video_root: Path, tmp_path: Path) -> None:
    root = _copy_root(video_root, tmp_path)
    seg = load_split("S", "test", root)[1]
    victim = root / "flow" / seg.participant_id / seg.video_id / "v" / f"frame_{seg.start_frame // 2 + 3:010d}.jpg"
    victim.unlink()
    ds = EpicClips(root, "S", "test", size=16, segments=[seg], modalities=("flow",))
    with pytest.raises(FrameReadError, match=rf"uid={seg.uid}.*missing frame .*{victim.name}"):
        ds[0]
    with pytest.raises(FrameReadError, match=rf"uid={seg.uid}.*missing frame"):
        next(iter(DataLoader(ds, batch_size=1, num_workers=1)))


def test_unreadable_jpeg_names_path_and_uid(video_root: Path, tmp_path: Path) -> None:
    root = _copy_root(video_root, tmp_path)
    seg = load_split("T", "test", root)[0]
    victim = root / "rgb" / seg.participant_id / seg.video_id / f"frame_{seg.start_frame:010d}.jpg"
    victim.write_bytes(b"not a jpeg at all")
    for decoder in ("simplejpeg", "pillow"):
        ds = EpicClips(root, "T", "test", size=16, segments=[seg], decoder=decoder)
        with pytest.raises(FrameReadError, match=rf"uid={seg.uid}.*unreadable JPEG {victim}"):
            ds[0]
