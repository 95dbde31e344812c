"""The Python examples in the docs run as written."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_plug_in_example_runs_and_the_bandit_learns(capsys):
    blocks = python_blocks(DOCS / "plug-in-your-own-algorithm.md")
    assert len(blocks) == 2
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(blocks[0], "plug-in-example", "exec"), namespace)
    out = capsys.readouterr().out
    precision = {m[0]: float(m[1]) for m in re.findall(r"^(\S+)\s+precision ([\d.]+)%", out, flags=re.M)}
    assert set(precision) == {"linear-bandit", "random", "oracle"}
    assert precision["linear-bandit"] > 2 * precision["random"]
    from agents import registry

    registry.AGENTS.pop("linear-bandit", None)


def test_sb3_example_runs():
    block = python_blocks(DOCS / "plug-in-your-own-algorithm.md")[1]
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(block, "sb3-example", "exec"), namespace)
    assert namespace["model"].num_timesteps >= 1_024
