"""Candidate sets replayed from an HDF5 feature snapshot (``features.snapshot``), for offline agent studies."""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from features.snapshot import Snapshot, SnapshotWriter
from mmir_env.discriminator import fit_discriminator, seeded_discriminator
from mmir_env.domains import DOMAIN_NAMES, SOURCE, TARGET, domain_id
from mmir_env.sources.base import ArraySource, CandidateBatch, sample_distinct_rows
from mmir_env.sources.synthetic import DISCRIMINATOR_PRETRAIN_STEPS, SyntheticConfig, generate_synthetic_domains

SAMPLING_MODES: tuple[str, ...] = ("random", "epoch")
DEFAULT_BATCH_SIZE = 40  # clips per domain in a stage-2 batch (paper: 80 = 40 source + 40 target)
DEFAULT_MEMORY_BUDGET = 2 << 30  # bytes of float32 features loaded into RAM by in_memory="auto"
_MAX_EPOCH_STREAMS = 16  # per domain: one per live generator (envs sharing this source each have one)


@dataclass
class _EpochStream:
    """The co-training layout for one generator: shuffled epochs cut into batches, batches into sets."""

    rng: np.random.Generator
    n_c: int
    sets: np.ndarray  # [num_sets_in_epoch, n_c] pool rows of the current epoch
    cursor: int = 0
    epoch: int = 0


class SnapshotSource:
    """A :class:`~mmir_env.sources.CandidateSource` over one modality of a snapshot file.

    ``mode="random"``: every candidate set is ``n_c`` distinct rows drawn uniformly (as
    :class:`~mmir_env.sources.ArraySource`). ``mode="epoch"`` reproduces what the agents see during
    co-training: each domain's pool is shuffled into an epoch, cut into batches of ``batch_size``
    clips (an incomplete last batch is dropped, as the training loader does), and each batch is cut
    into ``batch_size // n_c`` candidate sets (rows left over in a batch are not shown). The epoch is
    drawn from the ``rng`` passed to :meth:`sample` and belongs to that generator, so an environment
    reseeded with ``reset(seed=...)`` starts a fresh, reproducible epoch.

    The matrix of the modality is loaded into RAM when it fits (``in_memory="auto"``: at most
    ``memory_budget`` bytes as float32); otherwise rows are read on demand from the file (memory
    mapped for contiguous snapshots, sorted de-duplicated HDF5 reads otherwise). On-demand reads are
    checked for NaN/inf only by the snapshot's sampled validation.

    :param snapshot: a path or an open :class:`~features.snapshot.Snapshot` (validated on open).
    :param modality: which modality's features form the candidate sets.
    :param mode: ``"random"`` or ``"epoch"``.
    :param batch_size: clips per domain in a co-training batch (``"epoch"`` mode; default 40).
    :param discriminator: the reward's discriminator; default: the one stored for ``modality``.
    :param in_memory: ``"auto"``, ``True`` (always load) or ``False`` (always read from the file).
    :param memory_budget: byte limit of ``in_memory="auto"``.
    """

    def __init__(
        self,
        snapshot: str | os.PathLike[str] | Snapshot,
        modality: str,
        mode: str = "random",
        batch_size: int = DEFAULT_BATCH_SIZE,
        discriminator: nn.Module | None = None,
        in_memory: bool | str = "auto",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ) -> None:
        self.snapshot = snapshot if isinstance(snapshot, Snapshot) else Snapshot(snapshot)
        if modality not in self.snapshot.modalities:
            raise ValueError(
                f"modality must be one of {self.snapshot.modalities} (stored in {self.snapshot.path}), got {modality!r}"
            )
        if mode not in SAMPLING_MODES:
            raise ValueError(f"mode must be one of {SAMPLING_MODES}, got {mode!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 2:
            raise ValueError(f"batch_size must be an int >= 2, got {batch_size!r}")
        if in_memory not in ("auto", True, False):
            raise ValueError(f"in_memory must be 'auto', True or False, got {in_memory!r}")
        self.modality = modality
        self.mode = mode
        self.batch_size = int(batch_size)
        self.feature_dim: int = self.snapshot.feature_dim
        self.num_classes: int = self.snapshot.num_classes
        names = {d: DOMAIN_NAMES[d] for d in (SOURCE, TARGET)}
        self._num = {d: self.snapshot.num_rows(name) for d, name in names.items()}
        if mode == "epoch":
            small = {names[d]: n for d, n in self._num.items() if n < self.batch_size}
            if small:
                raise ValueError(
                    f"mode='epoch' needs at least batch_size={self.batch_size} clips per domain; {self.snapshot.path} has {small}"
                )
        self._labels = {d: _tensor(self.snapshot.labels(name), torch.int64) for d, name in names.items()}
        self._is_negative = {d: _tensor(self.snapshot.is_negative(name), torch.bool) for d, name in names.items()}
        self.has_ground_truth: bool = all(v is not None for v in self._is_negative.values())
        need = 4 * self.feature_dim * sum(self._num.values())
        self.in_memory = bool(need <= memory_budget) if in_memory == "auto" else bool(in_memory)
        self._pool: ArraySource | None = None
        if self.in_memory:
            # ArraySource converts to float32 once and rejects NaN/inf rows, naming them.
            self._pool = ArraySource({name: self.snapshot.features(name, modality) for name in names.values()})
        if discriminator is None and self.snapshot.has_discriminator(modality):
            discriminator = self.snapshot.load_discriminator(modality)
        self.discriminator = discriminator
        self._streams: dict[int, OrderedDict[int, _EpochStream]] = {SOURCE: OrderedDict(), TARGET: OrderedDict()}

    # -- CandidateSource ------------------------------------------------------------------------
    def num_samples(self, domain: int | str) -> int:
        return self._num[domain_id(domain)]

    def sample(self, rng: np.random.Generator, domain: int | str, n_sets: int, n_c: int) -> CandidateBatch:
        """``n_sets`` candidate sets of ``n_c`` distinct rows of ``domain``, drawn with ``rng`` only."""
        d = domain_id(domain)
        if self.mode == "random":
            index = sample_distinct_rows(rng, self._num[d], n_sets, n_c)
        else:
            index = self._next_epoch_sets(rng, d, n_sets, n_c)
        return self.gather(d, torch.from_numpy(index))

    # -- helpers --------------------------------------------------------------------------------
    def gather(self, domain: int | str, index: Tensor) -> CandidateBatch:
        """The candidate sets made of pool rows ``index: [n_sets, n_c]``."""
        d = domain_id(domain)
        if self._pool is not None:
            features = self._pool.features(d)[index]
        else:
            rows = self.snapshot.read_rows(DOMAIN_NAMES[d], self.modality, index.numpy())
            features = torch.from_numpy(rows.astype(np.float32, copy=False))
        labels, negative = self._labels[d], self._is_negative[d]
        return CandidateBatch(
            features=features,  # [n_sets, n_c, d] float32
            index=index,
            is_negative=None if negative is None else negative[index],
            labels=None if labels is None else labels[index],
        )

    def features(self, domain: int | str) -> Tensor:
        """The whole pool of ``domain`` as ``[N, d]`` float32 (read from the file if not in memory)."""
        d = domain_id(domain)
        if self._pool is not None:
            return self._pool.features(d)
        return torch.from_numpy(self.snapshot.features(DOMAIN_NAMES[d], self.modality).astype(np.float32))

    def labels(self, domain: int | str) -> Tensor | None:
        return self._labels[domain_id(domain)]

    def is_negative(self, domain: int | str) -> Tensor | None:
        return self._is_negative[domain_id(domain)]

    @property
    def negative_fraction(self) -> dict[str, float]:
        """Fraction of planted negatives per domain (NaN where the snapshot has no ground truth)."""
        return {
            DOMAIN_NAMES[d]: float("nan") if neg is None or neg.numel() == 0 else float(np.mean(neg.numpy()))
            for d, neg in self._is_negative.items()
        }

    def _next_epoch_sets(self, rng: np.random.Generator, d: int, n_sets: int, n_c: int) -> np.ndarray:
        if n_c > self.batch_size:
            raise ValueError(
                f"n_c={n_c} exceeds batch_size={self.batch_size}: a batch must hold at least one candidate set"
            )
        streams = self._streams[d]
        stream = streams.get(id(rng))
        if stream is None or stream.rng is not rng or stream.n_c != n_c:
            # A generator we have not seen (e.g. after reset(seed=...)) starts its own epoch.
            stream = _EpochStream(rng=rng, n_c=n_c, sets=self._epoch_sets(rng, d, n_c))
            streams[id(rng)] = stream
            while len(streams) > _MAX_EPOCH_STREAMS:
                streams.popitem(last=False)
        streams.move_to_end(id(rng))
        parts: list[np.ndarray] = []
        needed = n_sets
        while needed > 0:  # loops over epochs, not rows
            if stream.cursor == stream.sets.shape[0]:
                stream.sets, stream.cursor = self._epoch_sets(rng, d, n_c), 0
                stream.epoch += 1
            take = min(needed, stream.sets.shape[0] - stream.cursor)
            parts.append(stream.sets[stream.cursor : stream.cursor + take])
            stream.cursor += take
            needed -= take
        return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()

    def _epoch_sets(self, rng: np.random.Generator, d: int, n_c: int) -> np.ndarray:
        """One shuffled epoch as ``[batches * (batch_size // n_c), n_c]`` pool rows."""
        batches = self._num[d] // self.batch_size
        per_batch = self.batch_size // n_c
        order = rng.permutation(self._num[d])[: batches * self.batch_size].reshape(batches, self.batch_size)
        return order[:, : per_batch * n_c].reshape(batches * per_batch, n_c)

    def __repr__(self) -> str:
        return (
            f"SnapshotSource({str(self.snapshot.path)!r}, modality={self.modality!r}, mode={self.mode!r}, "
            f"source={self._num[SOURCE]}, target={self._num[TARGET]}, d={self.feature_dim}, "
            f"in_memory={self.in_memory}, ground_truth={self.has_ground_truth})"
        )


def _tensor(values: np.ndarray | None, dtype: torch.dtype) -> Tensor | None:
    return None if values is None else torch.from_numpy(np.ascontiguousarray(values)).to(dtype)


def write_synthetic_snapshot(
    path: str | os.PathLike[str],
    seed: int = 0,
    dtype: str = "float32",
    pretrain_steps: int | None = None,
    **synthetic: Any,
) -> Path:
    """Write the synthetic benchmark (both modalities) as a snapshot, with pre-trained discriminators.

    Data and discriminators are exactly those of :func:`~mmir_env.make_synthetic_source` with the
    same ``seed``, modality and ``synthetic`` overrides (each modality draws its own stream, so
    generating both at once changes nothing), so a study on the snapshot can be compared with one
    on the in-memory source. With ``dtype="float16"`` the stored features are rounded, the
    discriminators are those trained on the float32 features.
    """
    steps = DISCRIMINATOR_PRETRAIN_STEPS if pretrain_steps is None else int(pretrain_steps)
    cfg = SyntheticConfig(**{**SyntheticConfig().to_dict(), "seed": seed, **synthetic})
    data = generate_synthetic_domains(cfg)
    rows = {name: int(data.labels[name].shape[0]) for name in ("source", "target")}
    config = {
        "generator": "mmir_env.sources.snapshot.write_synthetic_snapshot",
        "synthetic": cfg.to_dict(),
        "pretrain_steps": steps,
    }
    with SnapshotWriter(
        path,
        feature_dim=cfg.feature_dim,
        num_classes=cfg.num_classes,
        modalities=cfg.modalities,
        dtype=dtype,
        num_rows=rows,
        config=config,
    ) as writer:
        for name, n in rows.items():
            uid = np.char.add(f"{name}-", np.char.zfill(np.arange(n).astype(str), 6))
            writer.append(
                name, data.features[name], label=data.labels[name], uid=uid, is_negative=data.is_negative[name]
            )
        for modality in cfg.modalities:
            # As make_synthetic_source: seeded init, fit on the float32 pools with the same seed.
            disc = seeded_discriminator(cfg.feature_dim, seed=seed)
            src = torch.as_tensor(data.features["source"][modality]).to(torch.float32).contiguous()
            tgt = torch.as_tensor(data.features["target"][modality]).to(torch.float32).contiguous()
            fit_discriminator(disc, src, tgt, steps=steps, seed=seed)
            writer.save_discriminator(modality, disc)
    return Path(path)
