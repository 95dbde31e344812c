"""``mmir extract``: EPIC-layout video -> two-stream I3D features -> a valid snapshot; errors without tracebacks."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.cli import main
from features.backbones import FeatureBackbone, i3d_feature_backbones, kaiming_reinit
from features.data.epic import EpicClips
from features.i3d import InceptionI3d
from features.snapshot import Snapshot

REPO = Path(__file__).resolve().parents[1]
WIDTH = 0.125
# one torch thread: two threads next to other busy processes on a 2-core machine run ~100x slower
TINY = [
    "--width",
    str(WIDTH),
    "--size",
    "32",
    "--num-workers",
    "0",
    "--batch-size",
    "4",
    "--threads",
    "1",
    "--no-progress",
]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The direct model calls below run single-threaded too (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from features.data.synthetic_video import generate_video_domains, tiny_config

    return generate_video_domains(tmp_path_factory.mktemp("epic_layout"), tiny_config(0))


@pytest.fixture(scope="module")
def train_snapshot(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("extract") / "train.h5"
    assert (
        main(
            ["extract", str(data_root), "--source", "S", "--target", "T", "--split", "train", "--out", str(out), *TINY]
        )
        == 0
    )
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("mmir extract: error: ") and "\n" not in err, err
    assert "Traceback" not in captured.out + captured.err
    for word in words:
        assert word in err, (word, err)
    return err


def test_snapshot_matches_the_split_files(train_snapshot: Path, data_root: Path) -> None:
    snap = Snapshot(train_snapshot)
    snap.validate(full=True)
    d = InceptionI3d(in_channels=3, width=WIDTH).feature_dim
    assert snap.feature_dim == d == 128
    assert snap.modalities == ("rgb", "flow") and snap.num_classes == 3 and snap.dtype == np.float16
    for domain, name in (("source", "S"), ("target", "T")):
        rows = _rows(data_root / f"{name}_train.csv")
        assert snap.num_rows(domain) == len(rows) == 6
        assert snap.uids(domain).tolist() == [r["uid"] for r in rows]
        assert snap.labels(domain).tolist() == [int(r["verb_class"]) for r in rows]
        assert snap.is_negative(domain).tolist() == [r["is_negative"] == "1" for r in rows]
        for modality in ("rgb", "flow"):
            feats = snap.features(domain, modality).astype(np.float32)
            assert feats.shape == (len(rows), d)
            # He-normal init keeps the scale: features are not lost to float16 underflow
            assert np.isfinite(feats).all() and (feats != 0).mean() > 0.3 and np.abs(feats).mean() > 1e-2
    assert -1 in snap.labels("target").tolist()  # the unseen-motion negatives keep their label
    assert snap.config["source"] == "S" and snap.config["width"] == WIDTH and snap.config["split"] == "train"


def test_same_seed_same_features_other_seed_differs(train_snapshot: Path, data_root: Path, tmp_path: Path) -> None:
    args = ["extract", str(data_root), "--source", "S", "--target", "T", *TINY]
    assert main([*args, "--out", str(tmp_path / "again.h5")]) == 0
    assert main([*args, "--out", str(tmp_path / "seed1.h5"), "--seed", "1"]) == 0
    ref, again, other = (Snapshot(p) for p in (train_snapshot, tmp_path / "again.h5", tmp_path / "seed1.h5"))
    for modality in ("rgb", "flow"):
        assert np.array_equal(ref.features("source", modality), again.features("source", modality))
        assert not np.array_equal(ref.features("source", modality), other.features("source", modality))


def test_checkpoints_test_split_windows_and_workers(data_root: Path, tmp_path: Path) -> None:
    """Features from --rgb-ckpt/--flow-ckpt equal the models' own features averaged over the windows."""
    torch.manual_seed(3)
    models = {m: InceptionI3d(in_channels=c, width=WIDTH).eval() for m, c in (("rgb", 3), ("flow", 2))}
    for model in models.values():
        kaiming_reinit(model)  # O(1) features, so the comparison below is not swamped by atol
    ckpt = {m: tmp_path / f"{m}.pt" for m in models}
    for m, model in models.items():
        torch.save(model.state_dict(), ckpt[m])
    out = tmp_path / "test.h5"
    args = [
        "extract",
        str(data_root),
        "--source",
        "S",
        "--target",
        "T",
        "--split",
        "test",
        "--out",
        str(out),
        "--rgb-ckpt",
        str(ckpt["rgb"]),
        "--flow-ckpt",
        str(ckpt["flow"]),
        "--windows",
        "2",
        "--dtype",
        "float32",
        "--width",
        str(WIDTH),
        "--size",
        "32",
        "--num-workers",
        "1",
        "--batch-size",
        "2",
        "--threads",
        "1",
        "--no-progress",
    ]
    assert main(args) == 0
    snap = Snapshot(out)
    assert snap.dtype == np.float32
    for domain, name in (("source", "S"), ("target", "T")):
        rows = _rows(data_root / f"{name}_test.csv")
        assert snap.num_rows(domain) == len(rows) == 3
        assert snap.labels(domain).tolist() == [int(r["verb_class"]) for r in rows]
        clips = EpicClips(data_root, name, "test", size=32, test_clips=2)
        with torch.no_grad():
            for m, model in models.items():
                x = torch.stack([clips[i][m] for i in range(len(clips))])  # segment-major: 2 windows each
                windows = model.extract_features(x).reshape(len(rows), 2, -1)
                assert (windows[:, 0] - windows[:, 1]).abs().max() > 1e-3  # the two windows differ
                expected = windows.mean(1).numpy()
                assert np.abs(expected).mean() > 1e-3
                np.testing.assert_allclose(snap.features(domain, m), expected, rtol=1e-4, atol=1e-6)


def test_checkpoint_mismatch_is_a_clear_error(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = tmp_path / "flow.pt"
    torch.save(InceptionI3d(in_channels=2, width=WIDTH).state_dict(), flow)
    out = tmp_path / "x.h5"
    code = main(
        ["extract", str(data_root), "--source", "S", "--target", "T", "--out", str(out), "--rgb-ckpt", str(flow), *TINY]
    )
    assert code == 2
    captured = capsys.readouterr()
    assert (
        "Traceback" not in captured.err
        and "shape mismatches" in captured.err
        and "RGB checkpoint loaded as flow" in captured.err
    )
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert (
        main(
            [
                "extract",
                str(data_root),
                "--source",
                "S",
                "--target",
                "T",
                "--out",
                str(out),
                "--flow-ckpt",
                str(junk),
                *TINY,
            ]
        )
        == 2
    )
    _one_line_error(capsys, "--flow-ckpt", str(junk))
    assert not out.exists()


def test_usage_errors_are_one_line(
    data_root: Path, train_snapshot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "x.h5")
    assert main(["extract", str(tmp_path / "missing"), "--source", "S", "--target", "T", "--out", out, *TINY]) == 2
    _one_line_error(capsys, "data root not found", "missing")
    assert main(["extract", str(data_root), "--source", "S", "--target", "Q9", "--out", out, *TINY]) == 2
    _one_line_error(capsys, "unknown domain 'Q9'", "D1", "S", "T")
    assert main(["extract", str(data_root), "--source", "S", "--target", "S", "--out", out, *TINY]) == 2
    _one_line_error(capsys, "must be different")
    assert main(["extract", str(tmp_path), "--source", "S", "--target", "T", "--out", out, *TINY]) == 2
    _one_line_error(capsys, "not an EPIC-layout dataset", "rgb/")
    assert main(["extract", str(data_root), "--source", "S", "--target", "T", "--out", str(train_snapshot), *TINY]) == 2
    _one_line_error(capsys, "exists; pass --force")
    assert not Path(out).exists()


def test_missing_frame_names_file_and_uid(data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(data_root, broken)
    row = _rows(broken / "T_train.csv")[1]
    video = broken / "rgb" / row["participant_id"] / row["video_id"]
    for index in range(int(row["start_frame"]), int(row["stop_frame"]) + 1):  # the segment's RGB frames
        (video / f"frame_{index:010d}.jpg").unlink()
    out = tmp_path / "x.h5"
    assert main(["extract", str(broken), "--source", "S", "--target", "T", "--out", str(out), *TINY]) == 2
    _one_line_error(capsys, f"uid={row['uid']}", "missing frame", f"{video}/frame_")
    assert not out.exists() and not Path(f"{out}.tmp").exists()


def test_help_and_process_exit_code(tmp_path: Path) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.cli",
            "extract",
            str(tmp_path / "nope"),
            "--source",
            "S",
            "--target",
            "T",
            "--out",
            str(tmp_path / "x.h5"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [f"mmir extract: error: data root not found: {tmp_path / 'nope'}"]
    with pytest.raises(SystemExit) as exc:
        main(["extract", "--help"])
    assert exc.value.code == 0


def test_feature_backbone_averages_windows_and_seeds_are_reproducible() -> None:
    state = torch.random.get_rng_state()
    a = i3d_feature_backbones(width=WIDTH, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # caller's RNG untouched
    b = i3d_feature_backbones(width=WIDTH, seed=5)
    for m in ("rgb", "flow"):
        for (ka, va), (kb, vb) in zip(a[m].state_dict().items(), b[m].state_dict().items()):
            assert ka == kb and torch.equal(va, vb), ka
    rgb = a["rgb"].eval()
    x = torch.randn(2, 3, 3, 8, 32, 32)
    with torch.no_grad():
        pooled = rgb(x)
        per_window = torch.stack([rgb(x[:, j]) for j in range(3)], 1).mean(1)
        chunked = FeatureBackbone(rgb.backbone, chunk=2).eval()(x)
    assert pooled.shape == (2, rgb.feature_dim)
    torch.testing.assert_close(pooled, per_window, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(chunked, pooled, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="clips must be"):
        rgb(torch.randn(2, 3, 8, 32))
