"""Choosing a design by a label-free validator: the choice, the oracle beside it, the correlations, the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from experiments import design_selection as ds
from experiments.report import RunRecord


def _run(
    tmp: Path, method: str, seed: int, top1: float, validators: dict[str, float], aucs: dict | None = None
) -> RunRecord:
    path = tmp / f"{method}-seed{seed}"
    path.mkdir(parents=True, exist_ok=True)
    lines = [{"stage": 2, "step": 1, **{f"diag/auc/{k}": v for k, v in (aucs or {}).items()}}]
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return RunRecord(
        path=path,
        method=method,
        pair="S->T",
        seed=seed,
        top1=top1,
        mean_class_accuracy=top1,
        evaluations=[{"step": 1, "top1": top1, **{f"val/{k}": v for k, v in validators.items()}}],
        config={},
    )


def test_the_validator_chooses_the_best_mean_score_and_the_oracle_the_best_accuracy(tmp_path: Path) -> None:
    # design b scores higher on the validator in both geometries; design a is more accurate: the oracle differs
    records = {
        "g1": [
            _run(tmp_path / "g1", "a", 0, 0.70, {"im": 0.1}),
            _run(tmp_path / "g1", "b", 0, 0.60, {"im": 0.5}),
            _run(tmp_path / "g1", "adversarial-only", 0, 0.65, {"im": 0.2}),
        ],
        "g2": [
            _run(tmp_path / "g2", "a", 0, 0.80, {"im": 0.2}),
            _run(tmp_path / "g2", "b", 0, 0.70, {"im": 0.3}),
            _run(tmp_path / "g2", "adversarial-only", 0, 0.75, {"im": 0.1}),
        ],
    }
    choice = ds.choose(records, ["adversarial-only", "a", "b"], "im")
    assert choice["chosen"] == "b" and choice["oracle"] == "a"
    assert choice["scores"]["b"] == pytest.approx(0.4)
    assert choice["regret"] == pytest.approx(0.75 - 0.65)


def test_a_design_without_the_validator_on_some_geometry_is_not_chosen(tmp_path: Path) -> None:
    records = {
        "g1": [_run(tmp_path / "g1", "a", 0, 0.7, {"im": 0.9}), _run(tmp_path / "g1", "b", 0, 0.6, {"im": 0.1})],
        "g2": [_run(tmp_path / "g2", "a", 0, 0.7, {}), _run(tmp_path / "g2", "b", 0, 0.6, {"im": 0.1})],
    }
    assert ds.choose(records, ["a", "b"], "im")["chosen"] == "b"


def test_correlations_over_runs_and_over_design_means(tmp_path: Path) -> None:
    runs = [
        _run(tmp_path, "a", 0, 0.1, {"snd": 1.0}),
        _run(tmp_path, "a", 1, 0.2, {"snd": 2.0}),
        _run(tmp_path, "b", 0, 0.3, {"snd": 3.0}),
        _run(tmp_path, "b", 1, 0.4, {"snd": 0.5}),
    ]
    c = ds.correlations(runs, ["a", "b"], "snd")
    assert c["n_runs"] == 4 and c["n_designs"] == 2
    assert c["designs"] == pytest.approx(1.0)  # means a (1.5, 0.15) and b (1.75, 0.35): the same order
    assert c["runs"] == pytest.approx(-0.2)  # validator ranks 2, 3, 4, 1 against accuracy ranks 1, 2, 3, 4


def test_signal_aucs_average_over_steps_and_modalities_per_domain(tmp_path: Path) -> None:
    runs = [
        _run(
            tmp_path,
            "a",
            0,
            0.5,
            {},
            {"density/rgb/source": 0.8, "density/flow/source": 0.6, "entropy/rgb/target": 0.4},
        ),
        _run(tmp_path, "a", 1, 0.5, {}, {"density/rgb/source": 1.0}),
    ]
    aucs = ds.signal_aucs(r.metrics_path for r in runs)
    assert aucs["source"]["density"] == pytest.approx(0.8)
    assert aucs["target"]["entropy"] == pytest.approx(0.4)


def test_ground_truth_share_is_the_ratio_of_mean_gains(tmp_path: Path) -> None:
    runs = [
        _run(tmp_path, "adversarial-only", 0, 0.60, {}),
        _run(tmp_path, "ground-truth-removal", 0, 0.70, {}),
        _run(tmp_path, "d", 0, 0.65, {}),
        _run(tmp_path, "adversarial-only", 1, 0.50, {}),
        _run(tmp_path, "ground-truth-removal", 1, 0.70, {}),
        _run(tmp_path, "d", 1, 0.50, {}),
    ]
    assert ds.gt_share(runs, "d") == pytest.approx(0.025 / 0.15)
    assert math.isnan(ds.gt_share(runs, "missing"))


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--designs", "no-such-design"], "--designs: unknown preset"),
        (["--designs", "ground-truth-removal"], "cannot be a label-free choice"),
        (["--designs", "mmir", "--geometries", "flat-earth"], "--geometries: unknown"),
        (["--designs", "mmir", "--validators", "vibes"], "--validators: unknown"),
        (["--designs", "mmir", "--seeds", "x"], "error:"),
    ],
)
def test_bad_command_lines_exit_with_a_one_line_error(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        ds.main([*argv, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert says in err[-1] and "Traceback" not in "\n".join(err)
