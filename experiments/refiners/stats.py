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
        # counts stay tensors on the rows' device between checkpoints: adding them costs no host synchronisation
        self._counts: dict[str, dict[str, Tensor]] = {}

    def add(self, key: str, result: RefinementResult, labels: Tensor | None) -> None:
        keep = result.keep
        entry = self._counts.get(key)
        if entry is None:
            zeros = {"kept_histogram": self.BINS, "removed_histogram": self.BINS}
            zeros |= {"seen_per_class": self.num_classes, "removed_per_class": self.num_classes}
            entry = self._counts[key] = {
                name: torch.zeros(size, dtype=torch.int64, device=keep.device) for name, size in zeros.items()
            }
        elif entry["seen_per_class"].device != keep.device:  # restored from a checkpoint on the CPU
            entry = self._counts[key] = {name: t.to(keep.device) for name, t in entry.items()}
        if result.relevance is not None:
            bins = (result.relevance.to(keep.device) * self.BINS).long().clamp(0, self.BINS - 1)
            for name, rows in (("kept_histogram", keep), ("removed_histogram", ~keep)):
                entry[name] += torch.bincount(bins[rows], minlength=self.BINS)
        if labels is not None:
            labels = labels.to(keep.device).long()
            valid = (labels >= 0) & (labels < self.num_classes)
            for name, rows in (("seen_per_class", valid), ("removed_per_class", valid & ~keep)):
                entry[name] += torch.bincount(labels[rows], minlength=self.num_classes)

    @property
    def agents(self) -> dict[str, dict[str, list[int]]]:
        """Per agent (``modality/domain``): the four count lists."""
        return {key: {name: t.tolist() for name, t in entry.items()} for key, entry in self._counts.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"bins": self.BINS, "num_classes": self.num_classes, "agents": self.agents}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_classes = int(state["num_classes"])
        self._counts = {
            key: {name: torch.tensor(list(values), dtype=torch.int64) for name, values in entry.items()}
            for key, entry in state["agents"].items()
        }
