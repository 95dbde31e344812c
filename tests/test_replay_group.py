"""Replay buffers written and sampled as one group: every buffer gets what its own add and sample would give."""

from __future__ import annotations

import copy

import pytest
import torch

from agents.replay import ReplayBuffer
from agents.replay_group import ReplayGroup, replay_group_blocker

G, N_C, D = 3, 4, 6


def buffers(capacity: int = 10, n: int = G, **kw) -> list[ReplayBuffer]:
    return [ReplayBuffer(capacity, N_C, D, **kw) for _ in range(n)]


def transitions(b: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(G, b, N_C, generator=g) > 0.3
    return (
        torch.randn(G, b, N_C, D, generator=g),
        masks,
        torch.randint(N_C, (G, b), generator=g),
        torch.randn(G, b, generator=g),
        masks & (torch.rand(G, b, N_C, generator=g) > 0.3),
        torch.rand(G, b, generator=g) > 0.5,
    )


def stored(buffer: ReplayBuffer) -> dict:
    return buffer.state_dict()


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a
    )


@pytest.mark.parametrize("batches", [(3, 3, 3), (4, 5, 3), (12,)])  # plain, wrapping around, more than the capacity
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_group_writes_and_samples_each_buffer_as_its_own_add_and_sample(batches, dtype):
    alone = buffers(dtype=dtype)
    grouped = copy.deepcopy(alone)
    group = ReplayGroup(grouped)
    for step, b in enumerate(batches):
        data = transitions(b, step)
        for i, buffer in enumerate(alone):
            buffer.add(*(t[i] for t in data))
        group.add(*data)
    for a, b in zip(alone, grouped):
        assert same(stored(a), stored(b))
    gens_alone = [torch.Generator().manual_seed(i) for i in range(G)]
    gens_grouped = [torch.Generator().manual_seed(i) for i in range(G)]
    want = [buffer.sample(7, gen) for buffer, gen in zip(alone, gens_alone)]
    got = group.sample(7, gens_grouped)
    for i, sample in enumerate(want):
        member = got.member(i)
        for name in ("obs", "mask", "actions", "rewards", "next_mask", "dones", "states"):
            assert torch.equal(getattr(sample, name), getattr(member, name)), name
        assert torch.equal(gens_alone[i].get_state(), gens_grouped[i].get_state())


def test_each_buffer_keeps_working_alone_and_then_leaves_the_group():
    alone = buffers()
    grouped = copy.deepcopy(alone)
    group = ReplayGroup.of(grouped)
    assert group is not None and ReplayGroup.of(grouped) is group  # the same group, not a second copy
    data = transitions(3, 0)
    for i, buffer in enumerate(alone):
        buffer.add(*(t[i] for t in data))
    group.add(*data)
    alone[1].add(*(t[1] for t in transitions(2, 1)))
    grouped[1].add(*(t[1] for t in transitions(2, 1)))  # written alone: on the group's storage
    assert same(stored(alone[1]), stored(grouped[1]))
    assert ReplayGroup.of(grouped) is None
    assert replay_group_blocker(grouped) == "the buffers hold different numbers of transitions"


def test_a_grouped_buffers_checkpoint_holds_its_own_rows_only():
    grouped = buffers(capacity=50)
    group = ReplayGroup(grouped)
    group.add(*transitions(3, 0))
    state = grouped[1].state_dict()
    assert state["states"].untyped_storage().nbytes() == 3 * N_C * D * 4  # not the group's [G, capacity] stack
    fresh = buffers(capacity=50)[0]
    fresh.load_state_dict(state)
    assert same(fresh.state_dict(), state)
    grouped[2].load_state_dict(state)  # loads into the group's storage
    assert same(grouped[2].state_dict(), state) and grouped[2].group is group


def test_buffers_that_differ_are_not_grouped_and_the_blocker_says_why():
    assert replay_group_blocker(buffers(n=1)) == "a group needs two or more replay buffers"
    assert "capacity" in replay_group_blocker([*buffers(10, n=1), *buffers(11, n=1)])
    pool = torch.randn(20, D)
    assert "pool rows" in replay_group_blocker(buffers(n=2, pool=pool))
    with pytest.raises(ValueError, match="cannot work as one group"):
        ReplayGroup(buffers(n=1))
