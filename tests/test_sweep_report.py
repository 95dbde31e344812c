"""``mmir sweep`` (grid, shared stage 1, resumable, parallel) and ``mmir report`` (tables, Markdown, CSV, plots)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from video_helpers import tiny_pair_config

from experiments.cli import main
from experiments.report import RunRecord, build_tables, markdown

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory) -> Path:
    return tiny_pair_config(tmp_path_factory.mktemp("video"))


@pytest.fixture(scope="module")
def swept(tiny_pair, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep")
    rc = main(
        [
            "sweep",
            "--pairs",
            str(tiny_pair),
            "--methods",
            "source-only,adversarial-only,mmir",
            "--seeds",
            "1",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    return out


def test_sweep_runs_the_grid_with_one_shared_stage1(swept):
    pair = swept / "S-T"
    for method in ("source-only", "adversarial-only", "mmir"):
        summary = json.loads((pair / method / "seed0" / "summary.json").read_text())
        assert summary["method"] == method
        assert summary["evaluations_averaged"] == 2
    assert len(list((pair / "_stage1").iterdir())) == 1  # the three methods share stage 1
    assert (pair / "mmir" / "seed0" / "refinement_stats.json").is_file()
    assert json.loads((swept / "sweep.json").read_text())["methods"] == ["source-only", "adversarial-only", "mmir"]


def test_sweep_skips_finished_runs_and_completes_interrupted_ones(swept, tiny_pair, capsys):
    run = swept / "S-T" / "mmir" / "seed0"
    finished = json.loads((run / "summary.json").read_text())
    (run / "summary.json").unlink()  # as if stopped after its last checkpoint
    capsys.readouterr()
    assert (
        main(
            [
                "sweep",
                "--pairs",
                str(tiny_pair),
                "--methods",
                "source-only,adversarial-only,mmir",
                "--seeds",
                "1",
                "--out",
                str(swept),
            ]
        )
        == 0
    )
    assert "3 runs (2 already done), 0 of 1 shared stage-1 runs to do" in capsys.readouterr().out.replace("\n", " ")
    again = json.loads((run / "summary.json").read_text())
    assert again["evaluations"] == finished["evaluations"]  # resumed from the checkpoint: the same run


def test_sweep_in_parallel_processes(tiny_pair, tmp_path):
    rc = main(
        [
            "sweep",
            "--pairs",
            str(tiny_pair),
            "--methods",
            "source-only,mmd",
            "--seeds",
            "1",
            "--out",
            str(tmp_path),
            "--jobs",
            "2",
        ]
    )
    assert rc == 0
    for method in ("source-only", "mmd"):
        assert (tmp_path / "S-T" / method / "seed0" / "summary.json").is_file()


def test_sweep_rejects_unknown_method_and_pair(tmp_path, capsys):
    assert main(["sweep", "--methods", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert main(["sweep", "--pairs", "D9-D1", "--methods", "mmir", "--out", str(tmp_path)]) == 2
    assert "unknown pair 'D9-D1'" in capsys.readouterr().err


def test_report_prints_tables_and_writes_markdown_csv_and_plots(swept, capsys):
    assert main(["report", str(swept)]) == 0
    out = capsys.readouterr().out
    assert "Table 1" in out and "Table 3" in out and "MMIR" in out
    md = (swept / "report.md").read_text()
    assert "| method | S→T | mean |" in md and "| method | adversarial | IR | S→T | mean |" in md
    assert "| MMIR | ✓ | ✓ |" in md and "| Adversarial-only | ✓ |  |" in md
    rows = list(csv.reader((swept / "report.csv").open()))
    assert rows[0] == ["table", "method", "pair", "mean_top1", "std_top1", "n", "values"]
    assert any(r[:3] == ["1", "mmir", "S→T"] for r in rows)
    for name in ("accuracy", "losses", "agents", "relevance_histograms", "removal_per_class"):
        data = (swept / "plots" / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name


def test_report_errors_clearly_without_runs(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no finished runs" in capsys.readouterr().err


def _record(method: str, pair: str, seed: int, top1: float) -> RunRecord:
    return RunRecord(
        Path(f"/x/{method}/{pair}/{seed}"), method, pair, seed, top1, top1, [{"step": 1, "top1": top1}], {}
    )


def test_tables_mean_std_mean_column_and_bold_best():
    records = [
        _record("source-only", "A→B", 0, 0.40),
        _record("source-only", "A→B", 1, 0.50),
        _record("source-only", "C→B", 0, 0.30),
        _record("mmir", "A→B", 0, 0.60),
        _record("mmir", "C→B", 0, 0.20),
        _record("supervised-target", "→B", 0, 0.90),
    ]
    (table1,) = [t for t in build_tables(records) if t.number == 1]
    assert table1.pairs == ["A→B", "C→B"]
    cell = table1.cells[("source-only", "A→B")]
    assert cell.mean == pytest.approx(0.45) and cell.std == pytest.approx(0.0707107, rel=1e-5)
    assert table1.cells[("source-only", "mean")].mean == pytest.approx((0.45 + 0.30) / 2)
    assert table1.cells[("mmir", "mean")].mean == pytest.approx(0.40)
    # the supervised upper bound on target B fills every pair with target B
    assert table1.cells[("supervised-target", "C→B")].mean == pytest.approx(0.90)
    md = markdown([table1])
    assert "| Source-only | 45.0 ± 7.1 | 30.0 | 37.5 |" in md
    assert "| Supervised target | **90.0** | **90.0** | **90.0** |" in md


def test_paired_differences_on_hand_made_runs(tmp_path):
    """MMIR - adversarial-only over the seeds both have, with a bootstrap interval that brackets the mean."""
    import numpy as np

    from experiments.report import RunRecord, bootstrap_interval, paired_differences

    def record(method: str, seed: int, top1: float) -> RunRecord:
        return RunRecord(tmp_path / f"{method}-{seed}", method, "S→T", seed, top1, top1, [], {})

    gains = [0.01, 0.02, 0.03, 0.04, 0.05]
    runs = [record("adversarial-only", s, 0.5 + 0.01 * s) for s in range(5)]
    runs += [record("mmir", s, 0.5 + 0.01 * s + g) for s, g in enumerate(gains)]
    runs += [record("mmir", 7, 0.9)]  # no adversarial-only run with seed 7: not paired, not counted
    (diff,) = [d for d in paired_differences(runs) if (d.method, d.control) == ("mmir", "adversarial-only")]
    assert diff.n == 5 and diff.differences == pytest.approx(gains)
    assert diff.mean == pytest.approx(0.03)
    assert 0.01 <= diff.low < 0.03 < diff.high <= 0.05 and diff.excludes_zero
    assert diff.text() == f"+3.0 [{100 * diff.low:+.1f}, {100 * diff.high:+.1f}]"
    # the interval of a symmetric sample is symmetric about its mean (up to resampling noise), and constant differences have none
    low, high = bootstrap_interval(np.array([-0.02, -0.01, 0.0, 0.01, 0.02] * 4))
    assert low == pytest.approx(-high, abs=2e-3) and low < 0 < high
    assert bootstrap_interval(np.full(6, 0.02)) == pytest.approx((0.02, 0.02))
    # an interval that straddles zero is reported as such
    noisy = [record("adversarial-only", s, 0.5) for s in range(4)] + [
        record("mmir", s, 0.5 + d) for s, d in enumerate([0.02, -0.03, 0.01, -0.01])
    ]
    (d2,) = [d for d in paired_differences(noisy) if d.control == "adversarial-only"]
    assert d2.low < 0 < d2.high and not d2.excludes_zero


def test_recovery_line_on_hand_made_runs(tmp_path):
    from experiments.report import RunRecord, recovery_line

    def record(method: str, seed: int, top1: float) -> RunRecord:
        return RunRecord(tmp_path / f"{method}-{seed}", method, "S→T", seed, top1, top1, [], {})

    runs = []
    for s in range(4):
        runs += [
            record("adversarial-only", s, 0.60),
            record("adversarial-only-clean", s, 0.70 + 0.01 * s),
            record("ground-truth-removal", s, 0.68),
        ]
    line = recovery_line(runs)  # loss 10-13 points, gain 8: 70% recovered, gain - loss/2 = +2.25 > 0
    assert line is not None and "recovers 70%" in line and "at least half (interval above 0)" in line
    assert (
        recovery_line(runs[:-3]) is not None
        and recovery_line([r for r in runs if r.method != "ground-truth-removal"]) is None
    )
