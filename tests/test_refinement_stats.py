"""RefinementStats: the batched count of every agent's step equals one count per agent."""

from __future__ import annotations

import pytest
import torch

from experiments.refiners import RefinementResult
from experiments.refiners.stats import RefinementStats

KEYS = ("rgb/source", "rgb/target", "flow/source", "flow/target")


def results(seed: int, relevance: bool = True, rows: int = 12) -> dict[str, RefinementResult]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key in KEYS:
        rel = torch.rand(rows, generator=g) if relevance else None
        if rel is not None:
            rel[0], rel[1] = 0.0, 1.0  # the edges of the first and last bin
        out[key] = RefinementResult(
            keep=torch.rand(rows, generator=g) > 0.3,
            mean_reward=0.0,
            removed=0,
            negatives_removed=0,
            negatives_present=0,
            relevance=rel,
        )
    return out


def labels(seed: int, rows: int = 12, with_labels: bool = True) -> dict[str, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed + 100)
    if not with_labels:
        return {"source": None, "target": None}
    source = torch.randint(0, 5, (rows,), generator=g)
    target = torch.randint(-1, 6, (rows,), generator=g)  # -1 and 5: outside the 5 classes, not counted
    return {"source": source, "target": target}


@pytest.mark.parametrize("relevance", [True, False])
@pytest.mark.parametrize("with_labels", [True, False])
def test_counting_all_agents_at_once_equals_counting_each(relevance, with_labels):
    together, apart = RefinementStats(5), RefinementStats(5)
    for step in range(3):
        res, lab = results(step, relevance), labels(step, with_labels=with_labels)
        together.add_all(res, lab)
        for key, result in res.items():
            apart.add(key, result, lab[key.rpartition("/")[2]])
    assert together.agents == apart.agents
    assert sum(sum(a["kept_histogram"]) + sum(a["removed_histogram"]) for a in together.agents.values()) == (
        3 * 4 * 12 if relevance else 0
    )


def test_agents_of_other_shapes_are_counted_one_by_one():
    res = {k: v for k, v in results(0).items() if k != "rgb/target"}
    res["flow/target"] = results(1, rows=8)["flow/target"]  # another half size: no batched count
    lab = {"source": labels(0)["source"], "target": labels(1, rows=8)["target"]}
    together, apart = RefinementStats(5), RefinementStats(5)
    together.add_all(res, lab)
    for key, result in res.items():
        apart.add(key, result, lab[key.rpartition("/")[2]])
    assert together.agents == apart.agents and len(together.agents) == 3
