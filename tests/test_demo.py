"""``mmir demo``'s job on a tiny generated dataset: three methods, one shared stage 1, the Table-3 rows."""

from __future__ import annotations

import json

from rich.console import Console

from experiments.demo import demo_table, design_overrides, run_demo
from features.data.synthetic_video import generate_video_domains, tiny_config


def test_run_demo_rows_name_the_methods_and_share_stage1(tmp_path):
    root = tmp_path / "video"
    generate_video_domains(root, tiny_config(seed=0), train_clips=20)
    out = tmp_path / "demo"
    rows = run_demo(
        out, seed=0, stage1_steps=2, stage2_steps=2, console=Console(quiet=True), data_root=root, snapshot=False
    )
    assert [(r["method"], r["adversarial"], r["refinement"]) for r in rows] == [
        ("source-only", False, False),
        ("adversarial-only", True, False),
        ("MMIR", True, True),
        ("MMIR robust", True, True),
    ]
    robust = json.loads((out / "MMIR robust" / "config.json").read_text())
    assert robust["method"] == "mmir-robust"
    for key, value in design_overrides("mmir-robust").items():  # the robust design's settings reach its run
        section, _, field = key.partition(".")
        assert robust[section][field] == value, key
    assert all(0.0 <= r["top1_last"] <= 1.0 for r in rows)
    assert "removal_precision" in rows[2] and "removal_precision" not in rows[0]
    assert json.loads((out / "results.json").read_text())[2]["method"] == "MMIR"
    assert json.loads((out / "MMIR" / "summary.json").read_text())["method"] == "mmir"
    console = Console(record=True, width=200)
    console.print(demo_table(rows))
    text = console.export_text()
    assert "source-only" in text and "adversarial-only" in text and "MMIR" in text and "custom" not in text
    narrow = Console(record=True, width=80)  # a plain pipe or CI log
    narrow.print(demo_table(rows))
    assert "…" not in narrow.export_text()


def test_demo_benchmark_part_prints_the_paired_comparison(tmp_path):
    from experiments.demo import run_benchmark_part

    tiny = {"stage1.steps": 2, "stage2.steps": 4, "evaluation.every": 2}
    text = run_benchmark_part(tmp_path, seeds=2, overrides=tiny, console=Console(quiet=True))
    for line in (
        "mmir - random-removal",
        "mmir - adversarial-only",
        "mmir-robust - random-removal",
        "ground-truth-removal - adversarial-only",
        "adversarial-only-clean - adversarial-only",
        "claim: negative transfer",
    ):
        assert line in text, line
    assert (tmp_path / "feature-benchmark" / "demo-comparison.txt").read_text() == text
