"""``benchmarks/gpu_cotrain.py --smoke`` on CPU: every path that needs no CUDA runs, and the tables have every row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from benchmark_scripts import load_benchmark

import experiments.cotrain as loop

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_cotrain.py"


def test_smoke_run_prints_every_row_and_writes_json(tmp_path):
    script = load_benchmark("gpu_cotrain")
    out = tmp_path / "smoke.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "240", "PYTHONUNBUFFERED": "1"}  # wide: rows unwrapped
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert seconds < 60, f"--smoke took {seconds:.0f} s"
    text = proc.stdout
    missing = [row for row in script.ALL_ROWS if row not in text]
    assert not missing, f"rows missing from the output: {missing}"
    assert script.NA in text and "CPU SMOKE" in text
    results = json.loads(out.read_text())
    assert results["mode"].startswith("smoke")
    steps = results["steps"]
    for row in script.STEP_ROWS[:9]:
        assert row in steps, row
    for row in (
        script.STEP_ROWS[0],
        script.STEP_ROWS[1],
        script.STEP_ROWS[5],
        script.STEP_ROWS[6],
        script.STEP_ROWS[7],
        script.STEP_ROWS[8],
    ):
        assert steps[row]["s_per_step_median"] > 0, row  # measured on CPU
    for row in script.STEP_ROWS[2:5]:
        assert steps[row]["error"] == script.NA  # bf16 / cudnn / compile: CUDA only
    assert "gloo" in steps[script.STEP_ROWS[5]]["variant"]
    assert "refinement_share" in results and "refiners_own" in results
    assert [r["workers"] for r in results["data"]["cpu"]] == [0, 1]
    assert all(v["max"] == 0 for v in results["data"]["fallback"].values())  # the fallback is decode="cpu" exactly
    assert "projection" not in results  # a CPU projection would be meaningless; only the code path ran
    projection = results["projection_of_smoke_numbers_not_meaningful"]
    assert (projection["evaluations"], projection["monitors"]) == (9, 37)  # the protocol: steps 7600-8000 every 50
    assert steps[script.STEP_ROWS[11]]["s_per_step_median"] > 0  # the joint-BatchNorm step ran
    assert set(results["evaluation_batches"]) == {"4", "8"}  # the evaluation forward at each batch size
    assert steps[script.STEP_ROWS[8]]["clips"] in (4, 8)  # the fastest of them


def test_projection_arithmetic():
    script = load_benchmark("gpu_cotrain")
    cfg = script.paper_config()
    p = script.project(
        cfg, step1_s=0.5, step2_s=0.4, forward_clips_s=1000.0, loader_cpu_clips_s=160.0, gpu_decode_s_per_clip=0.001
    )
    # the protocol's 9 full passes over the D1 test split (435 segments x 5 windows), 37 monitors of 200 windows
    # (every 200 steps, but at 7600 and 7800, which are full evaluations, and at 8000)
    assert p["pair"] == "D2->D1" and (p["evaluations"], p["monitors"]) == (9, 37)
    assert p["evaluation_clips"] == 9 * 435 * 5 + 37 * 200
    assert p["evaluations_gpu_decode_h"] == pytest.approx(p["evaluation_clips"] * (1 / 1000.0 + 0.001) / 3600)
    assert p["total_gpu_decode_h"] == pytest.approx(
        p["stage1_gpu_decode_h"] + p["stage2_gpu_decode_h"] + p["evaluations_gpu_decode_h"] + p["snapshot_h"]
    )
    assert p["stage1_compute_h"] == pytest.approx(4000 * 0.5 / 3600)
    assert p["stage2_cpu_decode_h"] == pytest.approx(8000 * max(0.4, 80 / 160) / 3600)  # loader-bound: 0.5 s a step
    assert p["stage2_gpu_decode_h"] == pytest.approx(8000 * (0.4 + 80 * 0.001) / 3600)
    assert p["snapshot_clips"] == 2495 + 1543
    assert "total_gpu_decode_prefetched_h" not in p  # no fed steps measured: no prefetched projection
    fed = script.project(
        cfg, 0.5, 0.4, 1000.0, 160.0, gpu_decode_s_per_clip=0.001, prefetched_step_factor=1.25
    )  # a fed, prefetched step 25% over compute
    assert fed["total_gpu_decode_prefetched_h"] == pytest.approx(
        (4000 * 0.5 + 8000 * 0.4) * 1.25 / 3600 + fed["evaluations_gpu_decode_h"] + fed["snapshot_h"]
    )


def test_bad_arguments_are_one_line_errors(capsys):
    script = load_benchmark("gpu_cotrain")
    for argv, expected in (
        (["--smoke", "--workers", "2,x"], "--workers must be comma-separated integers"),
        (["--smoke", "--steps", "0"], "--steps must be >= 1"),
    ):
        with pytest.raises(SystemExit) as exit_:
            script.parse_args(argv)
        assert exit_.value.code == 2
        assert expected in capsys.readouterr().err
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            script.parse_args([])
        assert "no CUDA device: run with --smoke" in capsys.readouterr().err


def test_the_refiners_own_time_counts_the_joint_refine_and_every_after_backward():
    script = load_benchmark("gpu_cotrain")

    class Refiner:
        def after_backward(self) -> None:
            time.sleep(0.002)

    class Module:
        def refine(self) -> None:  # the refiners run together from here, never through a refiner's own refine()
            time.sleep(0.006)

    class Run:
        device = torch.device("cpu")

        def __init__(self) -> None:
            self.trainer = SimpleNamespace(module=Module(), refiners={"a": Refiner(), "b": Refiner()})

        def step(self) -> float:
            start = time.perf_counter()
            self.trainer.module.refine()
            loop.after_backward_all(list(self.trainer.refiners.values()))  # as the loop calls it: by its module name
            time.sleep(0.010)  # the rest of the step
            return time.perf_counter() - start

    original = loop.after_backward_all
    run = Run()
    shares = script.refiner_share(run, steps=3)
    assert len(shares) == 3 and all(0.35 < s < 0.7 for s in shares)  # 10 of 20 ms: refine and both after_backward
    assert "refine" not in vars(run.trainer.module)  # the timing wrappers are gone afterwards
    assert loop.after_backward_all is original
