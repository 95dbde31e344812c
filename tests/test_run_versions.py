"""A run folder written by an earlier mmir, before a config key existed, still holds the same run.

Benchmarks skip finished runs and ``--resume`` continues one only when the stored ``config.json`` is
the current config; a key added since (at its default, which keeps the behaviour from before it
existed) must not turn every finished run into one to train again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.config import RunConfig
from experiments.runs import RunFolderError, config_differences, finished_run, prepare_run_folder, with_defaults


def _write_run(cfg: RunConfig, stored: dict, timing: bool = True) -> Path:
    run_dir = cfg.run_dir()
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(stored))
    (run_dir / "summary.json").write_text(json.dumps({"final": {"top1": 0.5}}))
    if timing:
        (run_dir / "timing.json").write_text(json.dumps({"seconds": 3.0}))
    return run_dir


def _without_replay_key(cfg: RunConfig) -> dict:
    """``cfg`` as an mmir from before ``checkpoints.replay`` existed wrote it."""
    stored = cfg.to_dict()
    del stored["checkpoints"]["replay"]
    return stored


@pytest.fixture
def cfg(tmp_path) -> RunConfig:
    return RunConfig(name="run-seed0", output_dir=str(tmp_path))


def test_a_key_the_stored_config_lacks_counts_as_its_default(cfg):
    stored = _without_replay_key(cfg)
    assert with_defaults(stored) == cfg.to_dict()
    assert config_differences(stored, cfg.to_dict()) == []
    changed = RunConfig(name=cfg.name, output_dir=cfg.output_dir)
    changed.checkpoints.replay = False
    assert config_differences(stored, changed.to_dict()) == ["checkpoints.replay: true -> false"]


def test_finished_run_is_found_across_a_new_default_key_and_merges_the_extra_files(cfg):
    _write_run(cfg, _without_replay_key(cfg))
    assert finished_run(cfg, extra=("timing.json",)) == {"final": {"top1": 0.5}, "seconds": 3.0}


@pytest.mark.parametrize(
    "case", ["other seed", "new key not at its default", "unknown key", "no timing", "unreadable config"]
)
def test_finished_run_is_none_unless_it_is_the_same_finished_run(cfg, case):
    stored = _without_replay_key(cfg)
    current = cfg
    if case == "other seed":
        stored["seed"] = cfg.seed + 1
    elif case == "new key not at its default":
        current = RunConfig(name=cfg.name, output_dir=cfg.output_dir)
        current.checkpoints.replay = False
    elif case == "unknown key":  # written by a version with a key this one does not know
        stored["stage2"]["removed_option"] = 1
    run_dir = _write_run(cfg, stored, timing=case != "no timing")
    if case == "unreadable config":
        (run_dir / "config.json").write_text("{truncated")
    assert finished_run(current, extra=("timing.json",)) is None


def test_resume_accepts_a_run_written_before_a_key_existed_and_still_refuses_real_changes(cfg):
    run_dir = _write_run(cfg, _without_replay_key(cfg))
    prepare_run_folder(run_dir, cfg.to_dict(), resume=True, overwrite=False)
    other = RunConfig(name=cfg.name, output_dir=cfg.output_dir, seed=cfg.seed + 1)
    with pytest.raises(RunFolderError, match=r"seed: 0 -> 1"):
        prepare_run_folder(run_dir, other.to_dict(), resume=True, overwrite=False)
