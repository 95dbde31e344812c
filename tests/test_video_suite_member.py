"""``benchmarks/video_suite_member.py``: the demo video data's suite-membership test (GT removal vs adversarial-only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark


def test_finished_seeds_are_reused_and_the_filter_applies_to_the_mean_gain(tmp_path: Path) -> None:
    script = load_benchmark("video_suite_member")
    stored = {
        "0": {"adversarial-only": 50.0, "ground-truth-removal": 54.0},
        "1": {"adversarial-only": 40.0, "ground-truth-removal": 43.0},
        "2": {"adversarial-only": 60.0, "ground-truth-removal": 59.0},
    }
    (tmp_path / "results.json").write_text(json.dumps(stored))
    member = script.main(["--seeds", "0-1", "--out", str(tmp_path)])  # nothing to train: both seeds stored
    assert member["gain"] == pytest.approx(3.5) and member["member"]
    assert member["low"] == pytest.approx(3.0) and member["high"] == pytest.approx(4.0)
    not_member = script.main(["--seeds", "0,2", "--out", str(tmp_path)])
    assert not_member["gain"] == pytest.approx(1.5) and not not_member["member"]
    assert json.loads((tmp_path / "results.json").read_text()) == stored  # untouched


@pytest.mark.parametrize("seeds", ["a-b", "3", "1.5,2"])
def test_bad_seed_lists_exit_2_naming_the_argument(
    tmp_path: Path, seeds: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        load_benchmark("video_suite_member").main(["--seeds", seeds, "--out", str(tmp_path)])
    assert stop.value.code == 2
    assert "--seeds" in capsys.readouterr().err
