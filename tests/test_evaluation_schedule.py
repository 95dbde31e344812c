"""Which stage-2 steps evaluate on what: the protocol's last evaluations, the cheap monitor, the old schedule."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cotrain_helpers import toy_config, toy_datasets, toy_model

from experiments.config import ConfigError, RunConfig, from_dict, validate
from experiments.cotrain import CoTrainer
from experiments.evaluation.schedule import full_evaluation_steps, monitor_indices, monitor_steps


def test_protocol_evaluates_the_last_n_steps_every_apart_ending_at_the_last_step():
    # the paper's schedule: 8000 steps, the mean of the last 9 evaluations every 50 steps
    assert full_evaluation_steps(8000, 50, 9) == [7600, 7650, 7700, 7750, 7800, 7850, 7900, 7950, 8000]
    # MM-SADA's released test script: checkpoints of steps 5600-6000 every 50
    assert full_evaluation_steps(6000, 50, 9) == list(range(5600, 6001, 50))
    assert full_evaluation_steps(10, 4, 3) == [2, 6, 10]  # ends at the last step even off the grid
    assert full_evaluation_steps(10, 4, 9) == [2, 6, 10]  # never before step 1
    assert full_evaluation_steps(0, 50, 9) == []


def test_every_schedule_is_the_old_one_every_n_steps_and_the_last():
    assert full_evaluation_steps(10, 4, 9, "every") == [4, 8, 10]
    assert full_evaluation_steps(200, 20, 9, "every") == list(range(20, 201, 20))
    assert full_evaluation_steps(3, 50, 9, "every") == [3]


def test_both_schedules_average_the_same_steps_when_the_stage_is_a_multiple_of_every():
    for total, every, last in ((200, 20, 9), (8000, 50, 9), (200, 20, 5), (100, 25, 3)):
        old = full_evaluation_steps(total, every, last, "every")[-last:]
        assert full_evaluation_steps(total, every, last, "protocol") == old


def test_monitor_runs_every_n_steps_but_never_where_a_full_evaluation_runs():
    full = full_evaluation_steps(8000, 50, 9)
    steps = monitor_steps(8000, 200, full)
    assert steps == list(range(200, 7401, 200))  # 7600, 7800 and 8000 are full evaluations
    assert not set(steps) & set(full)
    assert monitor_steps(8000, 0, full) == []


def test_monitor_windows_are_a_fixed_seeded_subsample():
    first = monitor_indices(2175, 200)
    assert first == monitor_indices(2175, 200)  # the same windows at every monitor
    assert len(first) == len(set(first)) == 200 and first == sorted(first) and 0 <= first[0] and first[-1] < 2175
    assert monitor_indices(30, 200) == list(range(30))  # fewer windows than asked: all of them


def test_a_run_evaluates_the_whole_split_at_the_protocol_steps_and_monitors_between(tmp_path):
    cfg = toy_config(tmp_path)  # stage 2: 10 steps
    cfg.evaluation.every, cfg.evaluation.last = 3, 2
    cfg.evaluation.monitor_every, cfg.evaluation.monitor_windows = 2, 7
    trainer = CoTrainer(cfg, datasets=toy_datasets(), model=toy_model())
    assert trainer.evaluation_steps() == ([7, 10], [2, 4, 6, 8])
    summary = trainer.run()
    assert [e["step"] for e in summary["evaluations"]] == [7, 10]
    assert all(e["segments"] == 30 for e in summary["evaluations"])  # the whole test split
    assert summary["top1_last"] == pytest.approx(np.mean([e["top1"] for e in summary["evaluations"]]))
    records = [json.loads(x) for x in (tmp_path / "toy" / "metrics.jsonl").read_text().splitlines()]
    stage2 = {r["step"]: r for r in records if r["stage"] == 2}
    assert [s for s, r in stage2.items() if "monitor/top1" in r] == [2, 4, 6, 8]
    assert [s for s, r in stage2.items() if "eval/top1" in r] == [7, 10]


def test_monitors_change_no_training_number(tmp_path):
    runs = []
    for i, monitor_every in enumerate((0, 2)):
        cfg = toy_config(tmp_path / str(i))
        cfg.evaluation.monitor_every = monitor_every
        runs.append(CoTrainer(cfg, datasets=toy_datasets(), model=toy_model()).run())
    assert runs[0]["evaluations"] == runs[1]["evaluations"]


def test_every_schedule_evaluates_every_n_steps(tmp_path):
    cfg = toy_config(tmp_path)
    cfg.evaluation.schedule, cfg.evaluation.every, cfg.evaluation.monitor_every = "every", 4, 2
    trainer = CoTrainer(cfg, datasets=toy_datasets(), model=toy_model())
    assert trainer.evaluation_steps() == ([4, 8, 10], [])  # no monitor: every evaluation is a full one


def test_an_unknown_schedule_is_refused_naming_the_choices():
    with pytest.raises(ConfigError, match="evaluation.schedule must be one of protocol, every, got 'often'"):
        from_dict(RunConfig, {"evaluation": {"schedule": "often"}})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("monitor_every", -1, "evaluation.monitor_every must be >= 0"),
        ("monitor_windows", 0, "evaluation.monitor_windows must be >= 1"),
    ],
)
def test_bad_schedule_settings_are_refused(tmp_path, key, value, message):
    cfg = toy_config(tmp_path)
    setattr(cfg.evaluation, key, value)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)
