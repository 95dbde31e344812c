"""What the refiners did over a run: relevance histograms of kept and removed rows, removals per class.

The refinement policies are the rest of :mod:`experiments.refiners`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from experiments.refiners import RefinementResult


class RefinementStats:
    """What the agents did over stage 2, per agent: relevance histograms of kept and removed rows, removals per class.

    Class counts use the batches' labels, the target's included: they are statistics for reports and
    never reach a loss.
    """

    BINS = 20  # relevance in [0, 1]

    def __init__(self, num_classes: int) -> None:
        self.num_classes = int(num_classes)
        self.agents: dict[str, dict[str, list[int]]] = {}

    def add(self, key: str, result: RefinementResult, labels: Tensor | None) -> None:
        entry = self.agents.setdefault(
            key,
            {
                "kept_histogram": [0] * self.BINS,
                "removed_histogram": [0] * self.BINS,
                "seen_per_class": [0] * self.num_classes,
                "removed_per_class": [0] * self.num_classes,
            },
        )
        keep = result.keep.cpu()
        if result.relevance is not None:
            bins = (result.relevance.cpu() * self.BINS).long().clamp(0, self.BINS - 1)
            for name, rows in (("kept_histogram", keep), ("removed_histogram", ~keep)):
                counts = torch.bincount(bins[rows], minlength=self.BINS).tolist()
                entry[name] = [a + b for a, b in zip(entry[name], counts)]
        if labels is not None:
            labels = labels.cpu().long()
            valid = (labels >= 0) & (labels < self.num_classes)
            for name, rows in (("seen_per_class", valid), ("removed_per_class", valid & ~keep)):
                counts = torch.bincount(labels[rows], minlength=self.num_classes).tolist()
                entry[name] = [a + b for a, b in zip(entry[name], counts)]

    def state_dict(self) -> dict[str, Any]:
        return {"bins": self.BINS, "num_classes": self.num_classes, "agents": self.agents}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_classes = int(state["num_classes"])
        self.agents = {k: {n: list(v) for n, v in entry.items()} for k, entry in state["agents"].items()}
