"""Several agents' replay buffers of one shape written and sampled as one.

Co-training's four agents each store a handful of transitions per step and replay a minibatch of
a few dozen: per buffer, six small writes and seven small gathers, so four buffers cost four times
the same kernel launches. A :class:`ReplayGroup` holds the buffers' transitions as views of
``[G, capacity, ...]`` stacks: the group writes every buffer's transitions with one write per
field and gathers every buffer's minibatch with one gather per field. Each buffer still draws its
own minibatch indices from its agent's generator (the same random numbers as sampling alone) and
keeps working on its own (``add``, ``sample``, ``state_dict``) on the shared storage.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from agents.replay import ReplayBuffer, ReplaySample


def replay_group_blocker(buffers: Sequence[ReplayBuffer]) -> str | None:
    """Why ``buffers`` cannot be written and sampled as one :class:`ReplayGroup` (None: they can)."""
    if len(buffers) < 2:
        return "a group needs two or more replay buffers"
    first = buffers[0]
    shape = (first.capacity, first.n_c, first.feature_dim, first.states.dtype, first.device)
    for buffer in buffers:
        if (buffer.capacity, buffer.n_c, buffer.feature_dim, buffer.states.dtype, buffer.device) != shape:
            return "the buffers differ in capacity, n_c, feature_dim, storage dtype or device"
        if buffer.indexed:
            return "buffers of pool rows (pool=) sample each from its own pool"
        if (buffer.pos, buffer.size) != (first.pos, first.size):
            return "the buffers hold different numbers of transitions"
    return None


class ReplayGroup:
    """``G`` replay buffers of one shape (:func:`replay_group_blocker`) whose transitions live in ``[G, ...]`` stacks.

    :meth:`add` and :meth:`sample` give every buffer exactly what its own ``add`` and ``sample``
    would (the same slots, the same indices from the same generators, the same values).
    """

    def __init__(self, buffers: Sequence[ReplayBuffer]) -> None:
        blocker = replay_group_blocker(buffers)
        if blocker is not None:
            raise ValueError(f"these replay buffers cannot work as one group: {blocker}")
        self.buffers = list(buffers)
        self.stacks = {name: torch.stack([getattr(b, name) for b in buffers]) for name in ReplayBuffer.FIELDS}
        for i, buffer in enumerate(buffers):
            buffer.share_storage(self, **{name: stack[i] for name, stack in self.stacks.items()})
        first = buffers[0]
        self.capacity, self.device = first.capacity, first.device
        # each buffer's first row in the flattened [G * capacity, ...] stacks
        self._offsets = (torch.arange(len(buffers), device=first.device) * first.capacity).unsqueeze(1)

    @staticmethod
    def of(buffers: Sequence[ReplayBuffer]) -> ReplayGroup | None:
        """The group these buffers already share, else a new one (None where :func:`replay_group_blocker` objects:
        also once a buffer has been written alone, so that the buffers hold different numbers of transitions)."""
        current = buffers[0].group if buffers else None
        if (
            current is not None
            and len(current.buffers) == len(buffers)
            and all(a is b for a, b in zip(current.buffers, buffers))
        ):
            return current if replay_group_blocker(buffers) is None else None
        return None if replay_group_blocker(buffers) is not None else ReplayGroup(buffers)

    @property
    def size(self) -> int:
        """Transitions stored in each buffer."""
        return self.buffers[0].size

    def add(
        self, states: Tensor, masks: Tensor, actions: Tensor, rewards: Tensor, next_masks: Tensor, dones: Tensor
    ) -> None:
        """Every buffer's :meth:`~agents.replay.ReplayBuffer.add` at once: each argument ``[G, B, ...]``."""
        first = self.buffers[0]
        b = int(actions.shape[1])
        values = (states, masks, next_masks, actions, rewards, dones)
        if b > self.capacity:  # only the newest fit
            values = tuple(v[:, b - self.capacity :] for v in values)
            b = self.capacity
        slots: slice | Tensor = (
            slice(first.pos, first.pos + b)
            if first.pos + b <= self.capacity
            else (first.pos + torch.arange(b, device=self.device)) % self.capacity
        )
        for name, value in zip(ReplayBuffer.FIELDS, values):
            store = self.stacks[name]
            store[:, slots] = value.to(self.device, store.dtype)
        pos, size = (first.pos + b) % self.capacity, min(self.capacity, first.size + b)
        for buffer in self.buffers:
            buffer.pos, buffer.size = pos, size

    def sample(self, batch_size: int, generators: Sequence[torch.Generator | None]) -> ReplaySample:
        """Every buffer's :meth:`~agents.replay.ReplayBuffer.sample` at once, buffer ``i`` drawing from ``generators[i]``:
        a :class:`~agents.replay.ReplaySample` whose fields are ``[G, batch_size, ...]``."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        draws = [torch.randint(self.size, (batch_size,), generator=g, device="cpu") for g in generators]
        idx = (torch.stack(draws).to(self.device) + self._offsets).reshape(-1)
        g = len(self.buffers)

        def gather(name: str) -> Tensor:
            stack = self.stacks[name]
            return stack.flatten(0, 1).index_select(0, idx).reshape(g, batch_size, *stack.shape[2:])

        mask = gather("masks")
        base = gather("states").float()
        return ReplaySample(
            base * mask.unsqueeze(-1),
            mask,
            gather("actions"),
            gather("rewards"),
            gather("next_masks"),
            gather("dones"),
            base,
        )


__all__ = ["ReplayGroup", "replay_group_blocker"]
