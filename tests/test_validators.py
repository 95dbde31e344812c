"""Label-free validators: each formula on hand-made inputs, their collection from a model, Spearman with ties,
``mmir report --rank-by`` on hand-written run folders and ``mmir sweep --select-by`` on a finished sweep."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from experiments.cli import main
from experiments.config import RunConfig
from experiments.report import average_ranks, find_runs, run_validators, select_designs, spearman
from experiments.validators import (
    VALIDATORS,
    UnknownNameError,
    ValidationInputs,
    collect_validation_inputs,
    compute_validators,
    register_validator,
    validation_metrics,
)
from experiments.validators.dev import dev_risk, domain_importance_weights
from features.two_stream import TwoStream

BIG = 60.0  # a logit this far ahead gives a one-hot softmax to float64 precision
BUILT_INS = ["bnm", "dev", "entropy", "im", "snd", "source-accuracy"]


def inputs(target: torch.Tensor, source: torch.Tensor | None = None, labels: torch.Tensor | None = None, **kw: Any):
    source = torch.zeros(1, target.shape[1]) if source is None else source
    labels = torch.zeros(len(source), dtype=torch.long) if labels is None else labels
    return ValidationInputs(source, labels, target, **kw)


def score(name: str, case: ValidationInputs) -> float:
    return compute_validators([name], case)[name]


def one_hot(classes: list[int], num_classes: int) -> torch.Tensor:
    return BIG * torch.eye(num_classes)[classes]


# ---- the registry ---------------------------------------------------------------------------------------------
def test_the_built_in_validators_are_registered_and_an_unknown_name_lists_them():
    assert VALIDATORS.names() == BUILT_INS
    with pytest.raises(UnknownNameError) as err:
        compute_validators(["entropy", "nope"], inputs(torch.zeros(2, 3)))
    assert str(err.value) == f"evaluation.validators 'nope' is not known; choose one of {', '.join(BUILT_INS)}"


def test_a_plug_in_validator_is_computed_by_name():
    register_validator("rows", lambda case: float(case.target_logits.shape[0]))
    try:
        assert compute_validators(["rows", "entropy"], inputs(torch.zeros(5, 2))) == pytest.approx(
            {"rows": 5.0, "entropy": -math.log(2)}
        )
    finally:
        VALIDATORS.pop("rows")


def test_inputs_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="disagree on the classes"):
        ValidationInputs(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="source_labels must be"):
        ValidationInputs(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="no rows"):
        ValidationInputs(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.zeros(0, 3))


# ---- source accuracy, entropy, information maximisation, BNM, SND ---------------------------------------------
def test_source_accuracy_counts_correct_source_rows():
    source = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 4.0]])
    case = inputs(torch.zeros(1, 2), source, torch.tensor([0, 1, 1]))
    assert score("source-accuracy", case) == pytest.approx(2 / 3)


def test_entropy_is_zero_for_confident_rows_and_minus_log_c_for_uniform_ones():
    assert score("entropy", inputs(one_hot([0, 1, 2, 2], 3))) == pytest.approx(0.0, abs=1e-20)
    assert score("entropy", inputs(torch.zeros(4, 3))) == pytest.approx(-math.log(3))
    # one row [1/2, 1/2], one confident: mean entropy log(2) / 2
    assert score("entropy", inputs(torch.tensor([[0.0, 0.0], [BIG, 0.0]]))) == pytest.approx(-math.log(2) / 2)


def test_information_maximisation_rewards_confident_and_balanced_predictions():
    assert score("im", inputs(one_hot([0, 1, 2, 3], 4))) == pytest.approx(math.log(4))  # confident, every class
    assert score("im", inputs(one_hot([0, 0, 0, 0], 4))) == pytest.approx(0.0, abs=1e-12)  # confident, one class
    assert score("im", inputs(torch.zeros(4, 4))) == pytest.approx(0.0, abs=1e-12)  # uniform
    # rows [1, 0] and [1/2, 1/2]: mean prediction [3/4, 1/4], mean entropy log(2) / 2
    mixed = inputs(torch.tensor([[BIG, 0.0], [0.0, 0.0]]))
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) - math.log(2) / 2
    assert score("im", mixed) == pytest.approx(expected)


def test_bnm_of_an_identity_a_rank_one_and_a_uniform_matrix():
    assert score("bnm", inputs(one_hot([0, 1, 2, 3], 4))) == pytest.approx(1.0)  # singular values 1, 1, 1, 1
    assert score("bnm", inputs(one_hot([2, 2, 2, 2], 4))) == pytest.approx(0.5)  # one singular value sqrt(4)
    # P = ones(4, 4) / 4: one singular value 1, over 4 rows
    assert score("bnm", inputs(torch.zeros(4, 4))) == pytest.approx(0.25)


def test_snd_of_two_tight_clusters_by_hand_and_above_spread_predictions():
    clusters = inputs(one_hot([0, 0, 0, 2, 2, 2], 3))
    # each row: 2 neighbours at cosine 1 and 3 at cosine 0, softmax over s / 0.05 of [20, 20, 0, 0, 0]
    inside, outside = math.exp(20) / (2 * math.exp(20) + 3), 1 / (2 * math.exp(20) + 3)
    by_hand = -2 * inside * math.log(inside) - 3 * outside * math.log(outside)
    assert score("snd", clusters) == pytest.approx(by_hand, rel=1e-6)
    a = torch.linspace(-3, 3, 6)
    spread = inputs(torch.stack([a, torch.zeros(6), -a], dim=1))  # rows along an arc: one near neighbour each
    assert score("snd", spread) < score("snd", clusters) - 0.1
    # rows of distinct classes: every cosine is 0, the soft neighbours are uniform over the other 3
    assert score("snd", inputs(one_hot([0, 1, 2, 3], 4))) == pytest.approx(math.log(3))


def test_snd_in_blocks_equals_snd_at_once(monkeypatch):
    from experiments.validators import predictions

    case = inputs(torch.randn(50, 4, generator=torch.Generator().manual_seed(0)))
    whole = score("snd", case)
    monkeypatch.setattr(predictions, "_SND_BLOCK", 7)
    assert score("snd", case) == pytest.approx(whole, rel=1e-12)


# ---- DEV --------------------------------------------------------------------------------------------------------
def test_dev_risk_by_hand():
    # L = w l = [1, 3]; Cov(L, w) = 2, Var(w) = 2, eta = -1: 2 - 1 * 2 + 1 = 1 (constant loss 1: the risk is 1)
    assert float(dev_risk(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 1.0]))) == pytest.approx(1.0)
    # L = [1, 0]; Cov(L, w) = -0.5, Var(w) = 0.5, eta = 1: 0.5 + 1 * 1 - 1 = 0.5
    assert float(dev_risk(torch.tensor([0.5, 1.5]), torch.tensor([2.0, 0.0]))) == pytest.approx(0.5)
    # equal weights: no control variate, the plain mean loss
    assert float(dev_risk(torch.ones(3), torch.tensor([1.0, 2.0, 6.0]))) == pytest.approx(3.0)


def test_dev_with_equal_domains_is_the_plain_source_loss():
    source = torch.tensor(
        [[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, -1.0], [0.0, 0.0], [1.0, 2.0], [2.0, 2.0], [0.5, 0]]
    )
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 1, 0])
    plain = float(torch.nn.functional.cross_entropy(source.double(), labels))
    given = inputs(torch.zeros(4, 2), source, labels, dev_weights=torch.ones(8))
    assert score("dev", given) == pytest.approx(-plain)
    # features that cannot tell the domains apart: the domain classifier stays at 1/2, every weight is 1
    same = inputs(torch.zeros(8, 2), source, labels, source_features=torch.ones(8, 3), target_features=torch.ones(8, 3))
    assert score("dev", same) == pytest.approx(-plain, rel=1e-9)


def test_dev_weights_the_source_rows_that_look_like_the_target():
    g = torch.Generator().manual_seed(0)
    near, far = torch.randn(20, 4, generator=g) + 3, torch.randn(20, 4, generator=g) - 3
    labels = torch.zeros(40, dtype=torch.long)
    logits = torch.cat([torch.tensor([[0.0, 2.0]]).repeat(20, 1), torch.tensor([[4.0, 0.0]]).repeat(20, 1)])
    loss = torch.nn.functional.cross_entropy(logits.double(), labels, reduction="none")  # high near, low far
    target = torch.randn(40, 4, generator=g) + 3  # the target looks like the "near" rows
    case = inputs(torch.zeros(40, 2), logits, labels, source_features=torch.cat([near, far]), target_features=target)
    weights = domain_importance_weights(torch.cat([near, far]), target)
    assert weights[:20].mean() > 10 * weights[20:].mean()
    dev = score("dev", case)
    assert abs(dev + float(loss[:20].mean())) < abs(dev + float(loss.mean()))  # nearer the target's loss
    assert score("dev", case) == dev  # deterministic given the seed


# ---- collecting inputs from a two-stream model ------------------------------------------------------------------
def tiny_model() -> TwoStream:
    torch.manual_seed(0)
    return TwoStream(
        {"rgb": nn.Linear(3, 4), "flow": nn.Linear(2, 5)}, num_classes=3, feature_dims={"rgb": 4, "flow": 5}
    )


def items(n: int, offset: int, with_labels: bool = True) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(offset)
    out = []
    for i in range(n):
        item = {"rgb": torch.randn(3, generator=g), "flow": torch.randn(2, generator=g), "uid": offset + i}
        if with_labels:
            item["label"] = i % 3
        out.append(item)
    return out


CFG = SimpleNamespace(
    evaluation=SimpleNamespace(batch_size=4, validators=["entropy", "dev"]), data=SimpleNamespace(num_workers=0)
)


def test_collect_validation_inputs_forwards_subsets_of_source_and_target_rows():
    model = tiny_model().train()
    datasets = {"source": items(30, 0), "target": items(20, 100), "test": items(5, 200)}
    case = collect_validation_inputs(model, datasets, CFG, torch.device("cpu"), source_rows=10, target_rows=0)
    assert model.training  # put back as it was
    assert case.source_logits.shape == (10, 3) and case.target_logits.shape == (20, 3)
    assert case.source_features.shape == (10, 9) and case.target_features.shape == (20, 9)  # [f^rgb, f^flow]
    again = collect_validation_inputs(model, datasets, CFG, torch.device("cpu"), source_rows=10, target_rows=0)
    assert torch.equal(case.source_logits, again.source_logits)  # the same fixed rows every time
    model.eval()
    chosen = [datasets["source"][i] for i in range(30)]
    row = {m: torch.stack([item[m] for item in chosen]) for m in ("rgb", "flow")}
    out = model(row)
    matches = (out.logits[:, None, :] - case.source_logits[None]).abs().amax(-1) < 1e-6
    assert matches.any(0).all()  # every collected row is a source row's fused logits
    labels = torch.tensor([item["label"] for item in chosen])[matches.float().argmax(0)]
    assert torch.equal(labels, case.source_labels)


def test_a_held_out_source_split_is_used_when_there_is_one_and_target_labels_are_not_needed():
    datasets = {"source": items(30, 0), "source_val": items(6, 50), "target": items(8, 100, with_labels=False)}
    case = collect_validation_inputs(tiny_model(), datasets, CFG, torch.device("cpu"))
    assert case.source_logits.shape[0] == 6 and case.target_logits.shape[0] == 8


def test_validation_metrics_names_each_validator_val_slash_name():
    datasets = {"source": items(12, 0), "target": items(12, 100)}
    metrics = validation_metrics(tiny_model(), datasets, CFG, torch.device("cpu"))
    assert list(metrics) == ["val/entropy", "val/dev"] and all(math.isfinite(v) for v in metrics.values())
    assert validation_metrics(tiny_model(), datasets, CFG, torch.device("cpu"), names=[]) == {}


# ---- Spearman -----------------------------------------------------------------------------------------------------
def test_average_ranks_share_ties():
    assert average_ranks([5, 7, 7, 9]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert average_ranks([3, 1, 3, 3]).tolist() == [3.0, 1.0, 3.0, 3.0]


def test_spearman_with_ties_by_hand():
    # ranks [1, 2.5, 2.5, 4] and [1, 3, 2, 4]: sum dx dy = 4.5, sum dx^2 = 4.5, sum dy^2 = 5
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])) and math.isnan(spearman([1], [2]))
    # without ties: 1 - 6 sum d^2 / (n (n^2 - 1))
    x, y = [1, 2, 3, 4, 5, 6], [1, 2, 6, 5, 3, 4]
    d2 = sum((a - b) ** 2 for a, b in zip(x, y))
    assert spearman(x, y) == pytest.approx(1 - 6 * d2 / (6 * 35))


def test_spearman_matches_pearson_of_ranks_on_random_data():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, 30), rng.normal(size=30)  # many ties in x
    rx, ry = average_ranks(x), average_ranks(y)
    assert spearman(x, y) == pytest.approx(float(np.corrcoef(rx, ry)[0, 1]))


# ---- mmir report --rank-by ------------------------------------------------------------------------------------------
# (method, seed) -> (top-1, val/entropy, val/snd); by entropy mmir ranks first, by top-1 adversarial-only
RUNS = {
    ("source-only", 0): (0.50, -0.9, 1.0),
    ("source-only", 1): (0.52, -0.8, 1.0),
    ("adversarial-only", 0): (0.60, -0.5, 2.0),
    ("adversarial-only", 1): (0.58, -0.4, 2.0),
    ("mmir", 0): (0.55, -0.3, 3.0),
    ("mmir", 1): (0.57, -0.2, 3.0),
}


def write_run(
    root: Path, method: str, seed: int, top1: float, values: dict[str, float], config: dict | None = None
) -> Path:
    """A finished run: three evaluations, the last two averaged; the first one's validator values are far off."""
    cfg = config or RunConfig(name=f"seed{seed}", method=method, seed=seed, output_dir=str(root / method)).to_dict()
    run = Path(cfg["output_dir"]) / cfg["name"]
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(cfg))
    step = cfg["stage2"]["steps"]
    early = {f"val/{k}": 100.0 for k in values}
    last = [{f"val/{k}": v + d for k, v in values.items()} for d in (-0.05, 0.05)]  # mean: the value
    evaluations = [
        {"step": step - 2, "top1": 0.1, "mean_class_accuracy": 0.1, **early},
        {"step": step - 1, "top1": top1, "mean_class_accuracy": top1, **last[0]},
        {"step": step, "top1": top1, "mean_class_accuracy": top1, **last[1]},
    ]
    summary = {
        "name": cfg["name"],
        "method": method,
        "evaluations": evaluations,
        "top1_last": top1,
        "mean_class_accuracy_last": top1,
        "evaluations_averaged": 2,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    return run


@pytest.fixture
def swept_runs(tmp_path) -> Path:
    for (method, seed), (top1, entropy, snd) in RUNS.items():
        write_run(tmp_path, method, seed, top1, {"entropy": entropy, "snd": snd})
    return tmp_path


def test_run_validators_average_the_evaluations_that_top1_averages(swept_runs):
    (record,) = [r for r in find_runs([swept_runs]) if r.method == "mmir" and r.seed == 1]
    assert run_validators(record) == pytest.approx({"entropy": -0.2, "snd": 3.0})


def test_run_validators_fall_back_on_metrics_jsonl(tmp_path):
    run = write_run(tmp_path, "mmir", 0, 0.5, {})
    rows = [
        {"stage": 1, "step": 5, "eval/val/entropy": 9.0},
        {"stage": 2, "step": 10, "loss": 1.0},
        {"stage": 2, "step": 11, "eval/top1": 0.5, "eval/val/entropy": 7.0},
        {"stage": 2, "step": 12, "eval/top1": 0.5, "eval/val/entropy": -0.4},
        {"stage": 2, "step": 13, "eval/top1": 0.5, "eval/val/entropy": -0.6},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (record,) = find_runs([tmp_path])
    assert run_validators(record) == pytest.approx({"entropy": -0.5})


def test_select_designs_ranks_by_the_validator_beside_the_oracle(swept_runs):
    (selection,) = select_designs(find_runs([swept_runs]), "entropy")
    assert [d.row for d in selection.designs] == ["mmir", "adversarial-only", "source-only"]
    assert selection.chosen.target == pytest.approx(0.56) and selection.oracle.row == "adversarial-only"
    assert selection.regret == pytest.approx(0.03)
    # ranks by entropy 1..6, by top-1 [1, 2, 6, 5, 3, 4] (runs in RUNS order): sum d^2 = 18
    assert selection.spearman == pytest.approx(1 - 6 * 18 / (6 * 35)) and selection.runs == 6


def test_report_rank_by_prints_the_ranking_and_every_validators_spearman(swept_runs, capsys):
    assert main(["report", str(swept_runs), "--no-plots", "--rank-by", "entropy"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines to the terminal
    assert "Designs ranked by entropy" in out
    assert (
        "D2→D1: entropy selects MMIR (target top-1 56.0); the oracle (target top-1) selects Adversarial-only (59.0); regret 3.0 points; Spearman over 6 runs +0.49"
        in out
    )
    md = (swept_runs / "report.md").read_text()
    assert "| D2→D1 | 1 | MMIR | -0.25 | 56.0 | 2 | 2 |" in md
    assert "| D2→D1 | 2 | Adversarial-only | -0.45 | 59.0 | 1 | 2 |" in md
    snd = spearman([1, 1, 2, 2, 3, 3], [0.50, 0.52, 0.60, 0.58, 0.55, 0.57])  # tied validator values
    assert f"| snd | {snd:+.2f} (n=6) |" in md and "| entropy | +0.49 (n=6) |" in md


def test_runs_that_differ_only_in_their_validators_share_a_cell(tmp_path):
    write_run(tmp_path, "mmir", 0, 0.5, {"snd": 1.0})
    run = write_run(tmp_path, "mmir", 1, 0.7, {})
    config = json.loads((run / "config.json").read_text())
    config["evaluation"].update(validators=["snd"], validator_rows=64)  # measured, not trained differently
    (run / "config.json").write_text(json.dumps(config))
    assert {r.variant for r in find_runs([tmp_path])} == {""}


def test_report_without_rank_by_is_unchanged(swept_runs, capsys):
    assert main(["report", str(swept_runs), "--no-plots"]) == 0
    assert "Spearman" not in capsys.readouterr().out and "Spearman" not in (swept_runs / "report.md").read_text()


def test_report_rank_by_refuses_an_unknown_or_unrecorded_validator_in_one_line(swept_runs, capsys):
    assert main(["report", str(swept_runs), "--no-plots", "--rank-by", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--rank-by 'nope' is not a known validator; choose one of bnm, dev, entropy, im, snd, source-accuracy" in err
    assert len(err.splitlines()) == 1
    assert main(["report", str(swept_runs), "--no-plots", "--rank-by", "dev"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--rank-by dev: no run below" in err and "recorded val/dev" in err and len(err.splitlines()) == 1


def test_report_rank_by_leaves_out_runs_without_the_values_with_a_warning(swept_runs, capsys):
    bare = write_run(swept_runs / "more", "mmd", 0, 0.9, {})
    assert main(["report", str(swept_runs), "--no-plots", "--rank-by", "entropy"]) == 0
    captured = capsys.readouterr()
    assert f"{bare} has no val/entropy; left out of the ranking" in captured.err
    out = " ".join(captured.out.split())
    assert "selects MMIR" in out and "over 6 runs" in out


# ---- mmir sweep --select-by ---------------------------------------------------------------------------------------
PAIR = str(
    Path(__file__).resolve().parents[1] / "experiments" / "configs" / "feature-benchmark" / "adversarial-only.toml"
)


def sweep_args(out: Path, *extra: str) -> list[str]:
    return [
        "sweep",
        "--pairs",
        PAIR,
        "--methods",
        "adversarial-only,mmir",
        "--seeds",
        "2",
        "--out",
        str(out),
        "--no-tensorboard",
        *extra,
    ]


def test_sweep_select_by_chooses_a_design_of_a_finished_sweep_beside_the_oracle(tmp_path, capsys):
    from experiments.sweep import SweepOptions, plan

    validators = ("evaluation.validators", ["entropy", "snd"])  # configured; only entropy was recorded
    options = SweepOptions(
        out=tmp_path,
        methods=("adversarial-only", "mmir"),
        pairs=(PAIR,),
        seeds=(0, 1),
        tensorboard=False,
        overrides=(validators,),
    )
    stage1, stage2 = plan(options)
    for job in stage1:  # the shared stage 1, done
        job.run_dir.mkdir(parents=True)
        (job.run_dir / "stage1.pt").write_bytes(b"")
    for job in stage2:  # every run done with the sweep's settings: nothing trains
        top1, entropy, _ = RUNS[(job.method, job.seed)]
        write_run(tmp_path, job.method, job.seed, top1, {"entropy": entropy}, config=job.config)
    configured = ("--set", 'evaluation.validators=["entropy", "snd"]')
    assert main(sweep_args(tmp_path, *configured, "--select-by", "entropy")) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "4 runs (4 already done)" in out
    assert (
        "S→T: entropy selects MMIR (target top-1 56.0); the oracle (target top-1) selects Adversarial-only (59.0)"
        in out
    )
    assert main(sweep_args(tmp_path, *configured, "--select-by", "snd")) == 2
    assert "--select-by snd: no finished run of the sweep recorded val/snd" in capsys.readouterr().err


def test_sweep_select_by_an_unknown_validator_fails_before_anything_runs(tmp_path, capsys):
    assert main(sweep_args(tmp_path / "out", "--select-by", "nope")) == 2
    err = capsys.readouterr().err.strip()
    assert (
        "--select-by 'nope' is not a known validator; choose one of bnm, dev, entropy, im, snd, source-accuracy" in err
    )
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_sweep_select_by_refuses_runs_configured_without_that_validator(tmp_path, monkeypatch):
    from experiments import sweep
    from experiments.config import ConfigError

    job = sweep.Job("stage2", "S-T", "mmir", 0, {"evaluation": {"validators": ["entropy"]}}, str(tmp_path))
    monkeypatch.setattr(sweep, "plan", lambda options: ([], [job]))
    options = sweep.SweepOptions(out=tmp_path, methods=("mmir",), pairs=(PAIR,), seeds=(0,))
    sweep.check_selection(options, "entropy")
    with pytest.raises(ConfigError, match=r"--select-by snd: the runs do not compute it .*evaluation.validators="):
        sweep.check_selection(options, "snd")
