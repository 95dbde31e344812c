"""A bounded tensor replay buffer on the agent's device.

Each transition stores the state, its mask, the action, the reward, the *next* state's mask and
the done flag. The next state is not stored: in the refinement MDP it is the state with the
selected row zeroed, i.e. ``state * next_mask`` -- half the memory and traffic of storing it.
With a fixed feature pool (a snapshot, the synthetic source) a state can be stored as the pool
rows of its candidate set instead of their features (``pool=``): a few integers per transition.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class ReplaySample:
    obs: Tensor  # [B, n_c, d]
    mask: Tensor  # [B, n_c]
    actions: Tensor  # [B]
    rewards: Tensor  # [B]
    next_mask: Tensor  # [B, n_c]
    dones: Tensor  # [B]
    states: Tensor  # [B, n_c, d] the stored sets before any row was zeroed

    def member(self, i: int) -> ReplaySample:
        """Buffer ``i``'s minibatch of a :class:`~agents.replay_group.ReplayGroup`'s sample (fields ``[G, B, ...]``)."""
        return ReplaySample(*(getattr(self, f.name)[i] for f in fields(self)))

    @property
    def next_obs(self) -> Tensor:
        """``[B, n_c, d]`` the next states (built on demand: with ``E = 1`` no TD target bootstraps from them)."""
        return self.states * self.next_mask.unsqueeze(-1)


class ReplayBuffer:
    """Circular buffer of ``capacity`` transitions.

    :param pool: optional ``[P, d]`` feature pool; then ``add`` takes pool row indices ``[B, n_c]``
        as states instead of features.
    :param dtype: storage dtype of features (float32, or float16 to halve memory).
    """

    def __init__(
        self,
        capacity: int,
        n_c: int,
        feature_dim: int,
        device: torch.device | str = "cpu",
        pool: Tensor | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.n_c, self.feature_dim = int(capacity), int(n_c), int(feature_dim)
        self.device = torch.device(device)
        self.pool = None if pool is None else pool.to(self.device)
        if self.pool is None:
            self.states = torch.zeros((capacity, n_c, feature_dim), dtype=dtype, device=self.device)
        else:
            self.states = torch.zeros((capacity, n_c), dtype=torch.int64, device=self.device)
        self.masks = torch.zeros((capacity, n_c), dtype=torch.bool, device=self.device)
        self.next_masks = torch.zeros((capacity, n_c), dtype=torch.bool, device=self.device)
        self.actions = torch.zeros(capacity, dtype=torch.int64, device=self.device)
        self.rewards = torch.zeros(capacity, dtype=torch.float32, device=self.device)
        self.dones = torch.zeros(capacity, dtype=torch.bool, device=self.device)
        self.pos = 0
        self.size = 0
        self._group: Any = None

    #: the stored tensors, ``[capacity, ...]`` each
    FIELDS = ("states", "masks", "next_masks", "actions", "rewards", "dones")

    def share_storage(self, group: Any, **fields: Tensor) -> None:
        """Keep the transitions in ``fields`` (one tensor per name of :attr:`FIELDS`, each shaped as now: views of a
        :class:`~agents.replay_group.ReplayGroup`'s stacks, so that the group writes and samples every buffer at
        once) from now on; what is stored is copied in, and every method keeps working on it."""
        if set(fields) != set(self.FIELDS):
            raise ValueError(
                f"share_storage needs exactly the fields {', '.join(self.FIELDS)}, got {', '.join(fields)}"
            )
        for name, new in fields.items():
            old = getattr(self, name)
            if new.shape != old.shape or new.dtype != old.dtype or new.device != old.device:
                raise ValueError(
                    f"share_storage: {name} must be {tuple(old.shape)} {old.dtype} on {old.device}, "
                    f"got {tuple(new.shape)} {new.dtype} on {new.device}"
                )
            new.copy_(old)
        for name, new in fields.items():
            setattr(self, name, new)
        self._group = group

    @property
    def group(self) -> Any:
        """The :class:`~agents.replay_group.ReplayGroup` whose stacks hold this buffer's transitions, or None."""
        return self._group

    @property
    def indexed(self) -> bool:
        return self.pool is not None

    def __len__(self) -> int:
        return self.size

    def add(
        self, states: Tensor, masks: Tensor, actions: Tensor, rewards: Tensor, next_masks: Tensor, dones: Tensor
    ) -> None:
        """Append a batch of transitions (one tensor op per field, wrapping around)."""
        b = int(actions.shape[0])
        if b > self.capacity:  # only the newest fit
            sl = slice(b - self.capacity, b)
            states, masks, actions, rewards, next_masks, dones = (
                t[sl] for t in (states, masks, actions, rewards, next_masks, dones)
            )
            b = self.capacity
        # a contiguous run of slots is a slice copy (cheaper than an index_put); a wrap-around is indexed
        slots: slice | Tensor = (
            slice(self.pos, self.pos + b)
            if self.pos + b <= self.capacity
            else (self.pos + torch.arange(b, device=self.device)) % self.capacity
        )
        for store, values in (
            (self.states, states),
            (self.masks, masks),
            (self.actions, actions),
            (self.rewards, rewards),
            (self.next_masks, next_masks),
            (self.dones, dones),
        ):
            store[slots] = values.to(self.device, store.dtype)
        self.pos = (self.pos + b) % self.capacity
        self.size = min(self.capacity, self.size + b)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> ReplaySample:
        """``batch_size`` transitions drawn uniformly with replacement."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = torch.randint(self.size, (batch_size,), generator=generator, device="cpu").to(self.device)
        # index_select, not indexing: the same rows, in a fraction of the time for the [capacity, n_c, d] states
        mask, next_mask = self.masks.index_select(0, idx), self.next_masks.index_select(0, idx)
        if self.pool is None:
            base = self.states.index_select(0, idx).float()
        else:
            base = self.pool[self.states.index_select(0, idx)]
        obs = base * mask.unsqueeze(-1)
        return ReplaySample(
            obs,
            mask,
            self.actions.index_select(0, idx),
            self.rewards.index_select(0, idx),
            next_mask,
            self.dones.index_select(0, idx),
            base,
        )

    def spread(self, limit: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Up to ``limit`` stored transitions evenly spaced over the buffer: ``(obs, mask, actions, rewards)``.

        Draws no random numbers (diagnostics must not change a run); uniform replay sampling makes the
        share of anything over these the expected share in replayed minibatches.
        """
        if self.size == 0:
            raise RuntimeError("the replay buffer is empty")
        n = min(int(limit), self.size)
        idx = torch.linspace(0, self.size - 1, n, device=self.device).round().long()
        mask = self.masks.index_select(0, idx)
        states = self.states.index_select(0, idx)
        base = states.float() if self.pool is None else self.pool[states]
        return base * mask.unsqueeze(-1), mask, self.actions.index_select(0, idx), self.rewards.index_select(0, idx)

    def state_dict(self) -> dict[str, Tensor | int]:
        # copies of the stored rows: a view would carry its whole storage (the unused capacity, a group's other
        # buffers) into a checkpoint
        state: dict[str, Tensor | int] = {
            name: getattr(self, name)[: self.size].to("cpu", copy=True) for name in self.FIELDS
        }
        return {**state, "pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict[str, Tensor | int]) -> None:
        size = int(state["size"])
        if size > self.capacity:
            raise ValueError(f"replay state holds {size} transitions, more than the capacity {self.capacity}")
        for name in self.FIELDS:
            getattr(self, name)[:size] = state[name].to(self.device)  # type: ignore[union-attr]
        self.size, self.pos = size, int(state["pos"])
