"""What the refiners did over a run: relevance histograms of kept and removed rows, removals per class.

The refinement policies are the rest of :mod:`experiments.refiners`.
"""

from __future__ import annotations

from collections.abc import Mapping
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

    def add_all(self, results: Mapping[str, RefinementResult], labels: Mapping[str, Tensor | None]) -> None:
        """:meth:`add` of every agent's result (``modality/domain`` keys; ``labels`` by domain) in one batched count.

        The counts are those of one :meth:`add` per agent; batching needs results of one shape and
        device with relevance for all (or none), else the agents are added one by one.
        """
        keys = list(results)
        items = [results[k] for k in keys]
        domain_labels = [labels.get(k.rpartition("/")[2]) for k in keys]
        rows = {(r.keep.shape, r.keep.device, r.relevance is None) for r in items}
        rels = {r.relevance.dtype for r in items if r.relevance is not None}
        if len(rows) == 1 and len(rels) <= 1 and len({x is None for x in domain_labels}) == 1:
            self._count(keys, items, domain_labels)
        else:
            for key, result, lab in zip(keys, items, domain_labels):
                self._count([key], [result], [lab])

    def add(self, key: str, result: RefinementResult, labels: Tensor | None) -> None:
        """Count one agent's step: its kept and removed rows by relevance bin and by class (``labels`` of its half)."""
        self._count([key], [result], [labels])

    def _count(self, keys: list[str], results: list[RefinementResult], labels: list[Tensor | None]) -> None:
        """Add ``K`` agents' steps in one bincount per count kind: results of one shape and device, relevance and
        labels present for all or for none. Each agent's codes are offset by its index, so the bins stay apart."""
        device, k = results[0].keep.device, len(keys)
        entries = [self._entry(key, device) for key in keys]
        removed = (~torch.stack([r.keep for r in results])).long()  # [K, B]
        offsets = torch.arange(k, device=device).unsqueeze(1)
        if results[0].relevance is not None:
            relevance = torch.stack([r.relevance for r in results]).to(device)  # type: ignore[misc]
            bins = (relevance * self.BINS).long().clamp(0, self.BINS - 1)
            codes = bins + self.BINS * removed + 2 * self.BINS * offsets  # code = bin + BINS * removed, per agent
            histograms = torch.bincount(codes.flatten(), minlength=k * 2 * self.BINS).view(k, 2, self.BINS)
            for (hist, _), h in zip(entries, histograms):
                hist += h
        if labels[0] is not None:
            lab = torch.stack([x.to(device) for x in labels]).long()  # type: ignore[union-attr]
            valid = (lab >= 0) & (lab < self.num_classes)
            codes = (lab + self.num_classes * removed + 2 * self.num_classes * offsets)[valid]
            counts = torch.bincount(codes, minlength=k * 2 * self.num_classes).view(k, 2, self.num_classes)
            for (_, classes), c in zip(entries, counts):
                classes += c

    def _entry(self, key: str, device: torch.device) -> tuple[Tensor, Tensor]:
        """The agent's count tensors on ``device`` (created at its first add, moved after a restore on the CPU)."""
        entry = self._counts.get(key)
        if entry is None or entry[0].device != device:
            entry = self._counts[key] = (
                torch.zeros((2, self.BINS), dtype=torch.int64, device=device) if entry is None else entry[0].to(device),
                torch.zeros((2, self.num_classes), dtype=torch.int64, device=device)
                if entry is None
                else entry[1].to(device),
            )
        return entry

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
