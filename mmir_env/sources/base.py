"""Candidate sources: where the environment's candidate sets come from.

A source owns a pool of clip features per domain and cuts candidate sets out of it. The
environment only needs :class:`CandidateSource`; :class:`ArraySource` is the in-memory pool that
the synthetic benchmark and snapshot replay build on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from mmir_env.domains import DOMAIN_NAMES, SOURCE, TARGET, domain_id


@dataclass(frozen=True)
class CandidateBatch:
    """``n_sets`` candidate sets of ``n_c`` rows drawn from a source's pool for one domain."""

    features: Tensor  # [n_sets, n_c, d] float32
    index: Tensor  # [n_sets, n_c] int64: rows of the pool
    is_negative: Tensor | None  # [n_sets, n_c] bool, planted ground truth when the source has it
    labels: Tensor | None  # [n_sets, n_c] int64 class labels when known (-1: outside the classes)


@runtime_checkable
class CandidateSource(Protocol):
    """What :class:`~mmir_env.env.InstanceRefinementEnv` needs from a source of candidate sets."""

    feature_dim: int
    has_ground_truth: bool

    def num_samples(self, domain: int | str) -> int:
        """Rows in the pool of ``domain``."""
        ...

    def sample(self, rng: np.random.Generator, domain: int | str, n_sets: int, n_c: int) -> CandidateBatch:
        """Draw ``n_sets`` candidate sets of ``n_c`` distinct rows each, using only ``rng``."""
        ...


# Rejection (today's draw) is kept while a with-replacement set is distinct with at least this
# probability: then the cap below leaves a set undecided with probability < (2/3)**64 ~ 5e-12.
_REJECTION_MIN_ACCEPT = 1.0 / 3.0
_REJECTION_MAX_ROUNDS = 64
# Random keys drawn at once by the exact draw (bounds its memory: 4M float64 = 32 MB).
_EXACT_CHUNK_KEYS = 1 << 22


def sample_distinct_rows(rng: np.random.Generator, pool_size: int, n_sets: int, n_c: int) -> np.ndarray:
    """``[n_sets, n_c]`` row indices, distinct within each set: each set a uniform ordered draw without replacement.

    Exact and bounded for every ``n_c <= pool_size``. When a with-replacement set is likely to be
    distinct (small ``n_c`` against the pool, co-training's case) it draws with replacement and
    redraws the sets that hold a repeat, at most ``_REJECTION_MAX_ROUNDS`` times; any set still
    undecided then, and every set when repeats are likely, is drawn exactly without replacement
    (:func:`_draw_without_replacement`). Both draws give every ordered set of distinct rows the same
    probability, so their mixture does too; which one decides a set never depends on its values.
    """
    if n_c > pool_size:
        raise ValueError(f"n_c={n_c} exceeds the pool size {pool_size}: a candidate set needs distinct rows")
    if n_c < 0 or n_sets < 0:
        raise ValueError(f"n_sets and n_c must be >= 0, got n_sets={n_sets}, n_c={n_c}")
    # P(n_c draws with replacement are distinct) = prod_i (1 - i / pool_size)
    log_accept = float(np.log1p(-np.arange(n_c, dtype=np.float64) / pool_size).sum()) if n_c > 1 else 0.0
    if log_accept < np.log(_REJECTION_MIN_ACCEPT):
        return _draw_without_replacement(rng, pool_size, n_sets, n_c)
    idx = rng.integers(0, pool_size, size=(n_sets, n_c))
    for _ in range(_REJECTION_MAX_ROUNDS):
        ordered = np.sort(idx, axis=1)
        bad = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
        if bad.size == 0:
            return idx
        idx[bad] = rng.integers(0, pool_size, size=(bad.size, n_c))
    ordered = np.sort(idx, axis=1)
    bad = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
    if bad.size:
        idx[bad] = _draw_without_replacement(rng, pool_size, bad.size, n_c)
    return idx


def _draw_without_replacement(rng: np.random.Generator, pool_size: int, n_sets: int, n_c: int) -> np.ndarray:
    """``[n_sets, n_c]``: per set, the rows of the ``n_c`` smallest of ``pool_size`` uniform keys, by key.

    The order of i.i.d. keys is a uniform permutation, so its first ``n_c`` entries are a uniform
    ordered draw without replacement. ``argpartition`` finds them in ``O(pool_size)`` per set; sets
    are processed in chunks so the keys never exceed ``_EXACT_CHUNK_KEYS`` floats.
    """
    out = np.empty((n_sets, n_c), dtype=np.int64)
    if n_sets == 0 or n_c == 0:
        return out
    chunk = max(1, _EXACT_CHUNK_KEYS // pool_size)
    for start in range(0, n_sets, chunk):
        keys = rng.random((min(chunk, n_sets - start), pool_size))
        rows = (
            np.argpartition(keys, n_c - 1, axis=1)[:, :n_c]
            if n_c < pool_size
            else np.broadcast_to(np.arange(pool_size), keys.shape)
        )
        order = np.argsort(np.take_along_axis(keys, rows, axis=1), axis=1)
        out[start : start + keys.shape[0]] = np.take_along_axis(rows, order, axis=1)
    return out


def _as_feature_tensor(name: str, value: object) -> Tensor:
    tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, Tensor) else value)
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [num_samples, feature_dim] array, got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must hold floating-point features, got dtype {tensor.dtype}")
    tensor = tensor.to(torch.float32).contiguous()
    finite = torch.isfinite(tensor).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten()[:5].tolist()
        raise ValueError(f"{name} contains NaN or inf values (rows {bad}{'...' if (~finite).sum() > 5 else ''})")
    return tensor


class ArraySource:
    """An in-memory pool of features per domain; candidate sets are independent uniform draws.

    :param features: ``{"source": [N_s, d], "target": [N_t, d]}`` arrays or tensors (finite floats).
    :param labels: optional per-domain int class labels (``-1`` = outside the source classes).
    :param is_negative: optional per-domain bool ground truth (planted negatives).
    :param discriminator: a default discriminator for environments built on this source.
    """

    def __init__(
        self,
        features: Mapping[str, object],
        labels: Mapping[str, object] | None = None,
        is_negative: Mapping[str, object] | None = None,
        discriminator: nn.Module | None = None,
    ) -> None:
        missing = [name for name in DOMAIN_NAMES.values() if name not in features]
        if missing:
            raise ValueError(f"features must have keys 'source' and 'target'; missing {missing}")
        self._features = {
            d: _as_feature_tensor(f"features[{name!r}]", features[name]) for d, name in DOMAIN_NAMES.items()
        }
        dims = {name: self._features[d].shape[1] for d, name in DOMAIN_NAMES.items()}
        if len(set(dims.values())) != 1:
            raise ValueError(f"features of both domains must share feature_dim, got {dims}")
        self.feature_dim: int = dims["source"]
        self._labels = self._per_domain("labels", labels, torch.int64)
        self._is_negative = self._per_domain("is_negative", is_negative, torch.bool)
        self.has_ground_truth: bool = self._is_negative is not None
        self.discriminator = discriminator

    def _per_domain(
        self, name: str, values: Mapping[str, object] | None, dtype: torch.dtype
    ) -> dict[int, Tensor] | None:
        if values is None:
            return None
        out: dict[int, Tensor] = {}
        for d, dname in DOMAIN_NAMES.items():
            if dname not in values:
                raise ValueError(f"{name} must have keys 'source' and 'target'; missing {dname!r}")
            tensor = torch.as_tensor(np.asarray(values[dname])).to(dtype)
            expected = (self._features[d].shape[0],)
            if tuple(tensor.shape) != expected:
                raise ValueError(f"{name}[{dname!r}] must have shape {expected}, got {tuple(tensor.shape)}")
            out[d] = tensor
        return out

    def num_samples(self, domain: int | str) -> int:
        return int(self._features[domain_id(domain)].shape[0])

    def features(self, domain: int | str) -> Tensor:
        """The whole pool of ``domain``: ``[N, d]`` float32 (shared, do not modify)."""
        return self._features[domain_id(domain)]

    def labels(self, domain: int | str) -> Tensor | None:
        return None if self._labels is None else self._labels[domain_id(domain)]

    def is_negative(self, domain: int | str) -> Tensor | None:
        return None if self._is_negative is None else self._is_negative[domain_id(domain)]

    def gather(self, domain: int | str, index: Tensor) -> CandidateBatch:
        """The candidate sets made of pool rows ``index: [n_sets, n_c]``."""
        d = domain_id(domain)
        return CandidateBatch(
            features=self._features[d][index],
            index=index,
            is_negative=None if self._is_negative is None else self._is_negative[d][index],
            labels=None if self._labels is None else self._labels[d][index],
        )

    def sample(self, rng: np.random.Generator, domain: int | str, n_sets: int, n_c: int) -> CandidateBatch:
        index = sample_distinct_rows(rng, self.num_samples(domain), n_sets, n_c)
        return self.gather(domain, torch.from_numpy(index))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(feature_dim={self.feature_dim}, source={self.num_samples(SOURCE)}, "
            f"target={self.num_samples(TARGET)}, ground_truth={self.has_ground_truth})"
        )
