"""Q-networks whose parameters live in shared stacks: the same bits, gradients and checkpoints as their own."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from agents.grouped import AgentGroup, arrange_set_q_weights, stack_set_q_weights, stacked_set_q
from agents.qnets import CandidateSetQNet
from agents.shared_weights import SharedSetQWeights, set_q_parameters, shared_weights_blocker
from agents.stepwise import make_stepwise_agent


def _nets(g: int = 3, d: int = 6, n_c: int = 4) -> list[CandidateSetQNet]:
    torch.manual_seed(0)
    return [CandidateSetQNet(d, n_c, hidden_dim=8) for _ in range(g)]


def _inputs(g: int = 3, d: int = 6, n_c: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    obs = torch.randn(g, 5, n_c, d, generator=gen)
    mask = torch.rand(g, 5, n_c, generator=gen) > 0.3
    return obs, mask


def test_shared_networks_give_the_bits_and_gradients_of_stacked_ones():
    stacked, shared = _nets(), _nets()
    obs, mask = _inputs()
    q_stacked = stacked_set_q(stack_set_q_weights(stacked), obs, mask)
    group = SharedSetQWeights(shared)
    q_shared = stacked_set_q(arrange_set_q_weights(group.stacks), obs, mask)
    assert torch.equal(q_stacked, q_shared)
    (q_stacked**2).sum().backward()
    (q_shared**2).sum().backward()
    for a, b in zip(stacked, shared):
        for p, q in zip(set_q_parameters(a), set_q_parameters(b)):
            assert torch.equal(p.grad, q.grad)
    assert all(stack.grad is None for stack in group.stacks)  # handed out, nothing left to count twice


def test_a_second_backward_adds_to_the_gradients_the_networks_hold():
    nets = _nets()
    group = SharedSetQWeights(nets)
    obs, mask = _inputs()
    for _ in range(2):
        stacked_set_q(arrange_set_q_weights(group.stacks), obs, mask).sum().backward()
    once = _nets()
    stacked_set_q(stack_set_q_weights(once), obs, mask).sum().backward()
    for a, b in zip(nets, once):
        for p, q in zip(set_q_parameters(a), set_q_parameters(b)):
            assert torch.equal(p.grad, 2 * q.grad)


def test_what_an_optimizer_writes_into_a_network_is_what_the_group_reads():
    nets = _nets()
    group = SharedSetQWeights(nets)
    obs, mask = _inputs()
    optimizer = torch.optim.Adam(nets[1].parameters(), lr=0.1)
    stacked_set_q(arrange_set_q_weights(group.stacks), obs, mask).sum().backward()
    optimizer.step()
    for k, param in enumerate(set_q_parameters(nets[1])):
        assert torch.equal(group.stacks[k][1], param)
    own = [copy.deepcopy(n) for n in nets]  # the values the networks hold, in their own storage
    assert torch.equal(
        stacked_set_q(arrange_set_q_weights(group.stacks), obs, mask),
        stacked_set_q(stack_set_q_weights(own), obs, mask),
    )


def test_a_shared_networks_state_dict_and_copies_hold_their_own_values_only():
    nets = _nets()
    SharedSetQWeights(nets)
    state = nets[0].state_dict()
    for name, value in state.items():
        assert value.untyped_storage().nbytes() == value.numel() * value.element_size(), name
    assert all(isinstance(v, torch.nn.Parameter) for v in nets[0].state_dict(keep_vars=True).values())
    alone, shared = io.BytesIO(), io.BytesIO()
    torch.save(_nets()[0].state_dict(), alone)
    torch.save(state, shared)
    assert len(shared.getvalue()) <= len(alone.getvalue()) + 256  # not the group's three networks
    twin = copy.deepcopy(nets[0])
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(1.0)
    assert torch.equal(next(nets[0].parameters()) + 1.0, next(twin.parameters()))
    assert SharedSetQWeights.of([twin, nets[1]]) is not SharedSetQWeights.of(nets)


def test_a_network_given_new_storage_leaves_the_group_and_a_new_group_holds_its_values():
    nets = _nets()
    first = SharedSetQWeights.of(nets)
    assert first is not None and SharedSetQWeights.of(nets) is first
    weight = nets[2].row_encoder[0].weight
    weight.data = weight.data.clone() + 1.0  # as a load with assign=True or a move to another device would
    second = SharedSetQWeights.of(nets)
    assert second is not None and second is not first
    assert torch.equal(second.stacks[0][2], weight)


def test_under_torch_distributed_the_group_stacks_each_step_instead(monkeypatch):
    agents = [make_stepwise_agent("mmir-dqn", n_c=4, feature_dim=6, device="cpu", seed=s) for s in range(2)]
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    assert "DistributedDataParallel" in shared_weights_blocker([a.q_net for a in agents])
    weights = AgentGroup(agents).weights()
    assert SharedSetQWeights.of([a.q_net for a in agents]) is None
    first = agents[0].q_net.row_encoder[0].weight
    assert first.untyped_storage().nbytes() == first.numel() * first.element_size()  # still its own storage
    assert torch.equal(weights[1][0], first.t())


@pytest.mark.parametrize(
    "nets, reason",
    [
        (lambda: _nets(1), "two or more"),
        (lambda: [_nets(1)[0], CandidateSetQNet(6, 4, hidden_dim=16)], "differ"),
        (lambda: [n.requires_grad_(False) for n in _nets(2)], "frozen"),
    ],
)
def test_networks_that_cannot_share_are_named_with_why(nets, reason):
    blocker = shared_weights_blocker(nets())
    assert blocker is not None and reason in blocker
    with pytest.raises(ValueError, match=reason):
        SharedSetQWeights(nets())
