"""The ``mmir`` command: help, study output, errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from experiments.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "study" in out and "demo" in out


def test_study_prints_table(capsys):
    rc = main(["study", "--agent", "random,oracle", "--episodes", "200", "--feature-dim", "32", "--domain", "source"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "precision" in out and "oracle" in out and "random" in out


def test_study_unknown_agent_is_a_clean_error(capsys):
    rc = main(["study", "--agent", "bogus", "--episodes", "10", "--feature-dim", "32"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown agent" in err and "bogus" in err and "Traceback" not in err


def test_console_script_bad_argument_exit_code():
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "study", "--n-c", "1", "--episodes", "5", "--feature-dim", "32"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "n_c must be >= 2" in proc.stderr and "Traceback" not in proc.stderr


def test_study_trains_agents_over_seeds_and_writes_out(tmp_path, capsys):
    import json

    out = tmp_path / "study"
    rc = main(
        [
            "study",
            "--agent",
            "mmir-dqn,random",
            "--timesteps",
            "2048",
            "--num-envs",
            "256",
            "--seeds",
            "2",
            "--episodes",
            "100",
            "--feature-dim",
            "32",
            "--domain",
            "target",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "mmir-dqn" in text and "±" in text and "mean ± std over 2 seeds" in text
    payload = json.loads((out / "results.json").read_text())
    assert [r["agent"] for r in payload["summary"]] == ["mmir-dqn", "random"]
    runs = payload["runs"]
    assert len(runs) == 4 and {r["seed"] for r in runs} == {0, 1}
    assert all(r["train_timesteps"] >= 2048 for r in runs if r["agent"] == "mmir-dqn")
    saved = sorted(p.name for p in (out / "agents").iterdir())
    assert saved == ["mmir-dqn-target-seed0.pt", "mmir-dqn-target-seed1.pt"]
    from agents import RefinementDQN

    agent = RefinementDQN.load(out / "agents" / "mmir-dqn-target-seed1.pt")
    assert agent.num_timesteps >= 2048


def test_study_on_a_snapshot_matches_the_in_memory_source(tmp_path, capsys):
    import json

    snap = tmp_path / "synth.h5"
    assert main(["snapshot", "synth", str(snap), "--seed", "3", "--feature-dim", "32"]) == 0
    common = ["--agent", "random,oracle", "--episodes", "300", "--seed", "3", "--feature-dim", "32", "--domain", "both"]
    assert main(["study", *common, "--out", str(tmp_path / "mem")]) == 0
    assert main(["study", *common, "--snapshot", str(snap), "--out", str(tmp_path / "snap")]) == 0
    capsys.readouterr()
    mem = json.loads((tmp_path / "mem" / "results.json").read_text())["summary"]
    snp = json.loads((tmp_path / "snap" / "results.json").read_text())["summary"]
    for a, b in zip(mem, snp):
        assert (a["agent"], a["domain"]) == (b["agent"], b["domain"])
        assert abs(a["precision"][0] - b["precision"][0]) < 0.05, (a, b)


def test_study_missing_snapshot_is_a_clean_error(tmp_path, capsys):
    rc = main(["study", "--snapshot", str(tmp_path / "nope.h5"), "--episodes", "5"])
    assert rc == 2
    assert "snapshot file not found" in capsys.readouterr().err
