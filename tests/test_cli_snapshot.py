"""``mmir snapshot inspect|validate|synth``: verdicts, exit codes and no tracebacks on bad files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from snapshot_helpers import BROKEN_KINDS, broken_snapshot, small_snapshot

from agents.heuristics import OracleAgent, RandomAgent
from experiments.cli import main
from experiments.study import evaluate_selection
from mmir_env import InstanceRefinementEnv, make_synthetic_source
from mmir_env.sources.snapshot import SnapshotSource

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--feature-dim", "32", "--num-source", "300", "--num-target", "300", "--pretrain-steps", "50"]


@pytest.fixture(scope="module")
def synth_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "synth.h5"
    assert main(["snapshot", "synth", str(out), "--seed", "2", *SMALL]) == 0
    return out


def test_synth_then_validate_and_inspect(synth_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["snapshot", "validate", str(synth_file)]) == 0
    assert "VALID" in capsys.readouterr().out
    assert main(["snapshot", "inspect", str(synth_file)]) == 0
    out = capsys.readouterr().out
    for word in (
        "schema_version",
        "mmir-snapshot",
        "/source/features/rgb",
        "planted negatives",
        "Feature statistics",
        "DomainDiscriminator",
        "VALID",
        "300",
    ):
        assert word in out, word


def test_synth_snapshot_reproduces_the_in_memory_study(synth_file: Path) -> None:
    """What `mmir study --snapshot` relies on: same data, same discriminator, same selections."""
    for modality in ("rgb", "flow"):
        memory = make_synthetic_source(
            seed=2, modality=modality, feature_dim=32, num_source=300, num_target=300, pretrain_steps=50
        )
        snap = SnapshotSource(synth_file, modality)
        assert torch.equal(snap.features("target"), memory.features("target"))
        for key, value in memory.discriminator.state_dict().items():
            assert torch.equal(snap.discriminator.state_dict()[key], value), key
    for domain, make in (
        ("source", OracleAgent),
        ("target", OracleAgent),
        ("target", lambda env: RandomAgent(env, seed=1)),
    ):
        envs = [InstanceRefinementEnv(s, domain=domain) for s in (memory, snap)]  # the flow pair
        stats = [evaluate_selection(make(env), env, 100, seed=0) for env in envs]
        assert stats[0].precision == stats[1].precision and stats[0].recall == stats[1].recall


def test_synth_refuses_to_overwrite_without_force(synth_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["snapshot", "synth", str(synth_file), *SMALL]) == 2
    assert "exists; pass --force" in capsys.readouterr().err


def test_synth_bad_arguments_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["snapshot", "synth", str(tmp_path / "x.h5"), "--feature-dim", "4"]) == 2
    err = capsys.readouterr().err
    assert "feature_dim must be at least" in err and "Traceback" not in err
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "x.h5.tmp").exists()


@pytest.mark.parametrize("kind", BROKEN_KINDS)
def test_bad_files_give_a_verdict_not_a_traceback(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path, words = broken_snapshot(tmp_path / f"{kind}.h5", kind)
    for action in ("validate", "inspect"):
        assert main(["snapshot", action, str(path)]) == 1, action
        out = capsys.readouterr().out
        assert "INVALID" in out
        flat = " ".join(out.split())  # rich may wrap long lines
        for word in words:
            assert " ".join(word.split()) in flat, (action, word, out)


def test_missing_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["snapshot", "validate", str(tmp_path / "nope.h5")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_process_exit_codes_without_traceback(tmp_path: Path) -> None:
    bad, _ = broken_snapshot(tmp_path / "trunc.h5", "truncated")
    good = small_snapshot(tmp_path / "good.h5")
    cmd = [sys.executable, "-m", "experiments.cli", "snapshot", "validate"]
    res_bad = subprocess.run([*cmd, str(bad)], cwd=REPO, capture_output=True, text=True, timeout=120)
    res_good = subprocess.run([*cmd, str(good)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res_bad.returncode == 1 and "truncated file" in res_bad.stdout
    assert res_good.returncode == 0, res_good.stdout + res_good.stderr
    assert "Traceback" not in res_bad.stdout + res_bad.stderr + res_good.stderr
