"""``mmir train`` end to end on a tiny synthetic EPIC-layout dataset (two-stream I3D, width 1/16)."""

from __future__ import annotations

import json

import pytest
from video_helpers import tiny_run_toml

from experiments.cli import main
from features.data.synthetic_video import generate_video_domains, tiny_config


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    generate_video_domains(root, tiny_config(seed=0), train_clips=10)
    return root


def test_train_runs_both_stages_and_writes_outputs(tmp_path, tiny_root, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        tiny_run_toml(
            tiny_root,
            stage2="lr = 0.001\nobjectives = {adversarial = 1.0}\nrefinement = true",
            snapshots='dtype = "float32"',
        )
    )
    rc = main(["train", str(cfg), "--set", f"output_dir={json.dumps(str(tmp_path / 'runs'))}"])
    assert rc == 0, capsys.readouterr().err
    run = tmp_path / "runs" / "tiny"
    summary = json.loads((run / "summary.json").read_text())
    assert [e["step"] for e in summary["evaluations"]] == [2, 3]  # the protocol: the last 2, every 1 step
    assert summary["evaluations"][0]["segments"] == 3  # every target test segment
    assert (run / "checkpoint.pt").is_file() and (run / "stage1.pt").is_file()
    from features.snapshot import Snapshot

    snaps = sorted((run / "snapshots").glob("*.h5"))
    assert [p.name for p in snaps] == ["step000003.h5"]
    snap = Snapshot(snaps[0])
    snap.validate()
    assert set(snap.modalities) == {"rgb", "flow"}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"]) for r in records] == [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3)]
    assert "target top-1" in capsys.readouterr().out


def test_train_config_errors_are_clean(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[stage1]\nlrr = 0.1\n")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) stage1.lrr" in err and str(cfg) in err and "Traceback" not in err
    cfg.write_text('[data]\nroot = "/nonexistent/epic"\n')
    assert main(["train", str(cfg)]) == 2
    assert "data.root /nonexistent/epic does not exist" in capsys.readouterr().err


def test_add_your_own_method_doc_runs_without_editing_the_package(tmp_path, tiny_root, capsys):
    """docs/add-your-own-method.md: its coral.py and coral.toml, written as they are, train through the loop."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "add-your-own-method.md").read_text()
    (python,) = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    (toml,) = re.findall(r"```toml\n(.*?)```", doc, flags=re.S)
    plugin = tmp_path / "my-method"
    plugin.mkdir()
    (plugin / "coral.py").write_text(python)
    (plugin / "coral.toml").write_text(toml)
    base = tmp_path / "tiny.toml"
    base.write_text(tiny_run_toml(tiny_root, snapshots="enabled = false"))
    rc = main(
        [
            "train",
            str(base),
            "--method",
            str(plugin / "coral.toml"),
            "--set",
            f"output_dir={json.dumps(str(tmp_path / 'runs'))}",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    run = tmp_path / "runs" / "tiny"
    assert json.loads((run / "summary.json").read_text())["method"] == "coral"
    stage2 = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"stage": 2' in line]
    assert stage2 and all(r["coral"] > 0 and r["adv"] == 0 for r in stage2)  # the new term, and only it, aligns
    assert all(r["loss"] == pytest.approx(r["cls"] + r["coral"], rel=1e-6) for r in stage2)
