"""Shared helpers for the video-side tests (features.i3d, features.data)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

#: Files the tests read (origin and licence of each: tests/data/README.md).
TEST_DATA = Path(__file__).resolve().parent / "data"


def i3d_reference(in_channels: int) -> dict[str, Any]:
    """Facts about the pytorch-i3d port for ``in_channels`` from ``tests/data/i3d_state_dict_keys.json``."""
    path = TEST_DATA / "i3d_state_dict_keys.json"
    return json.loads(path.read_text())["models"][f"in_channels={in_channels}"]


def tiny_video_root(tmp_path_factory: pytest.TempPathFactory, seed: int = 0) -> Path:
    """A tiny two-domain synthetic dataset in the EPIC layout (``S`` and ``T`` domains)."""
    from features.data.synthetic_video import generate_video_domains, tiny_config

    return generate_video_domains(tmp_path_factory.mktemp("epic_layout"), tiny_config(seed))


TINY_RUN_TOML = """
name = "tiny"
seed = 0
device = "cpu"
[data]
root = "{root}"
source = "S"
target = "T"
size = 24
frames = 8
num_workers = 0
[model]
width = 0.0625
num_classes = 3
[stage1]
steps = 2
batch_size = 4
[stage2]
steps = 3
batch_size = 10
{stage2}
[agents]
batch_size = 2
learning_starts = 2
[evaluation]
every = 1
last = 2
windows = 2
[checkpoints]
every = 1
[snapshots]
{snapshots}
"""


def tiny_run_toml(root: Path, stage2: str = "", snapshots: str = "") -> str:
    """A co-training run of a few steps on a tiny synthetic dataset at ``root`` (``S`` -> ``T``), as TOML text."""
    return TINY_RUN_TOML.format(root=root, stage2=stage2, snapshots=snapshots)


def tiny_pair_config(root: Path) -> Path:
    """A tiny generated S -> T pair under ``root`` and its run config (snapshots off): the sweep tests' pair."""
    from features.data.synthetic_video import generate_video_domains, tiny_config

    generate_video_domains(root, tiny_config(seed=0), train_clips=10)
    path = root / "tiny-S-T.toml"
    path.write_text(tiny_run_toml(root, snapshots="enabled = false"))
    return path


def wait_for_record(metrics: Path, proc: subprocess.Popen, predicate, timeout: float = 120.0) -> None:
    """Wait until a line of a running ``mmir train``'s ``metrics.jsonl`` satisfies ``predicate`` (the process must live)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.is_file() and any(
            predicate(json.loads(line)) for line in metrics.read_text().splitlines() if line.endswith("}")
        ):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"no such record in {metrics} after {timeout} s")
