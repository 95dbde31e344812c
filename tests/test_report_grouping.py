"""``mmir report`` pools seeds of one setting only: other budgets are rows of their own, a repeated seed counts once.

Run folders are written by hand (config.json from RunConfig, a summary.json): no training needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from experiments.cli import main
from experiments.config import RunConfig
from experiments.report import build_tables, find_runs, markdown, paired_differences


def write_run(
    root: Path, name: str, method: str, seed: int, top1: float, settings: dict[str, Any] | None = None
) -> Path:
    """A finished run folder ``root/name`` of ``method`` on D2 -> D1 with ``settings`` (dotted keys) changed."""
    cfg = RunConfig(name=name, method=method, seed=seed, output_dir=str(root))
    for dotted, value in (settings or {}).items():
        section, _, key = dotted.rpartition(".")
        setattr(getattr(cfg, section) if section else cfg, key, value)
    run = root / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    evaluation = {"step": cfg.stage2.steps, "top1": top1, "mean_class_accuracy": top1}
    summary = {
        "name": name,
        "method": method,
        "evaluations": [evaluation],
        "top1_last": top1,
        "mean_class_accuracy_last": top1,
        "evaluations_averaged": 1,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_runs_of_other_step_budgets_are_rows_of_their_own_and_a_repeated_seed_counts_once(tmp_path, capsys):
    write_run(tmp_path, "a", "mmir", 0, 0.60, {"stage2.steps": 300})
    write_run(tmp_path, "b", "mmir", 0, 0.70, {"stage2.steps": 100})
    write_run(tmp_path, "c", "mmir", 0, 0.62, {"stage2.steps": 300})  # seed 0 at 300 steps again
    write_run(tmp_path, "d", "mmir", 0, 0.70, {"stage2.steps": 100})
    assert main(["report", str(tmp_path), "--no-plots"]) == 0
    captured = capsys.readouterr()
    skipped = [line for line in captured.err.splitlines() if "counted once" in line]
    assert len(skipped) == 2 and all("skipping" in line and "seed 0" in line for line in skipped)
    assert f"{tmp_path / 'c'}: a second run of mmir on D2→D1" in skipped[0] and str(tmp_path / "a") in skipped[0]
    assert f"{tmp_path / 'd'}: a second run" in skipped[1] and str(tmp_path / "b") in skipped[1]
    md = (tmp_path / "report.md").read_text()
    assert "| MMIR [stage2.steps=100] | **70.0** | **70.0** |" in md
    assert "| MMIR [stage2.steps=300] | 60.0 | 60.0 |" in md  # the first of the two, not their mean
    assert " ± " not in md.split("\n\n")[1]  # no cell of the table pools two runs
    assert "4 runs" not in captured.out


def test_runs_that_differ_only_in_where_and_how_they_ran_share_a_cell(tmp_path):
    write_run(tmp_path, "s0", "mmir", 0, 0.60)
    write_run(tmp_path, "s1", "mmir", 1, 0.70, {"threads": 2, "data.num_workers": 0, "checkpoints.every": 10})
    old = write_run(tmp_path, "s2", "mmir", 2, 0.80)
    stored = json.loads((old / "config.json").read_text())
    del stored["threads"]  # written by an mmir from before the key: read as its default
    (old / "config.json").write_text(json.dumps(stored))
    skipped: list[str] = []
    records = find_runs([tmp_path], skipped)
    assert not skipped and {r.variant for r in records} == {""}
    (table,) = build_tables(records)
    assert table.rows == ["mmir"] and table.cells[("mmir", "D2→D1")].values == (0.60, 0.70, 0.80)


def test_every_method_of_one_budget_is_labelled_and_paired_within_that_budget(tmp_path):
    for steps in (100, 300):
        for seed in (0, 1):
            write_run(tmp_path, f"m{steps}-{seed}", "mmir", seed, 0.6 + steps / 1000, {"stage2.steps": steps})
            write_run(tmp_path, f"a{steps}-{seed}", "adversarial-only", seed, 0.5 + seed / 100, {"stage2.steps": steps})
    records = find_runs([tmp_path])
    tables = {t.number: t for t in build_tables(records)}
    assert tables[3].rows == [
        "adversarial-only [stage2.steps=100]",
        "adversarial-only [stage2.steps=300]",
        "mmir [stage2.steps=100]",
        "mmir [stage2.steps=300]",
    ]
    assert "| Adversarial-only [stage2.steps=300] | ✓ |  |" in markdown([tables[3]])
    diffs = {d.pair: d for d in paired_differences(records) if (d.method, d.control) == ("mmir", "adversarial-only")}
    assert set(diffs) == {"D2→D1 [stage2.steps=100]", "D2→D1 [stage2.steps=300]"}
    assert diffs["D2→D1 [stage2.steps=100]"].differences == pytest.approx((0.2, 0.19))
    assert diffs["D2→D1 [stage2.steps=300]"].differences == pytest.approx((0.4, 0.39))
