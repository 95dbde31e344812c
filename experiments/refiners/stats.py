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
        # per agent: relevance histograms [2, BINS] (kept, removed) and class counts [2, C] (kept, removed) as
        # tensors on the rows' device between checkpoints: adding them costs no host synchronisation
        self._counts: dict[str, tuple[Tensor, Tensor]] = {}

    def add(self, key: str, result: RefinementResult, labels: Tensor | None) -> None:
        keep = result.keep
        entry = self._counts.get(key)
        if entry is None or entry[0].device != keep.device:  # first add, or restored from a checkpoint on the CPU
            entry = self._counts[key] = (
                torch.zeros((2, self.BINS), dtype=torch.int64, device=keep.device)
                if entry is None
                else entry[0].to(keep.device),
                torch.zeros((2, self.num_classes), dtype=torch.int64, device=keep.device)
                if entry is None
                else entry[1].to(keep.device),
            )
        histograms, classes = entry
        removed = (~keep).long()
        if result.relevance is not None:
            bins = (result.relevance.to(keep.device) * self.BINS).long().clamp(0, self.BINS - 1)
            # one bincount for both rows: code = bin + BINS * removed
            histograms += torch.bincount(bins + self.BINS * removed, minlength=2 * self.BINS).view(2, self.BINS)
        if labels is not None:
            labels = labels.to(keep.device).long()
            valid = (labels >= 0) & (labels < self.num_classes)
            codes = (labels + self.num_classes * removed)[valid]
            classes += torch.bincount(codes, minlength=2 * self.num_classes).view(2, self.num_classes)

    @property
    def agents(self) -> dict[str, dict[str, list[int]]]:
        """Per agent (``modality/domain``): the four count lists."""
        out = {}
        for key, (histograms, classes) in self._counts.items():
            hist, cls = histograms.tolist(), classes.tolist()
            out[key] = {
                "kept_histogram": hist[0],
                "removed_histogram": hist[1],
                "seen_per_class": [k + r for k, r in zip(cls[0], cls[1])],
                "removed_per_class": cls[1],
            }
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"bins": self.BINS, "num_classes": self.num_classes, "agents": self.agents}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_classes = int(state["num_classes"])
        self._counts = {}
        for key, entry in state["agents"].items():
            seen, removed = (
                torch.tensor(list(entry[n]), dtype=torch.int64) for n in ("seen_per_class", "removed_per_class")
            )
            histograms = torch.tensor(
                [list(entry["kept_histogram"]), list(entry["removed_histogram"])], dtype=torch.int64
            )
            self._counts[key] = (histograms, torch.stack([seen - removed, removed]))
