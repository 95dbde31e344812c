"""Several set Q-networks whose parameters live in ``[G, ...]`` stacks, so a group's forward stacks nothing.

:class:`~agents.grouped.AgentGroup` runs ``G`` Q-networks as one network with batched products over
the group. Stacking their parameters for that every step costs eight copies forward and eight
``unbind`` s with thirty-two gradient accumulations backward: more than the products themselves for
networks this small. :class:`SharedSetQWeights` instead keeps each network's parameters as views of
one leaf stack per layer tensor, so the group's forward reads the stacks as they are. The gradients
the stacks receive are handed to each network's own parameters as they arrive (a post-accumulate
hook), so every optimizer, clipping and checkpoint keeps working on the networks' own parameters,
which read and write the shared storage.

Under ``torch.distributed`` the networks are not shared: DistributedDataParallel all-reduces each
parameter's own gradient as autograd produces it, which a stack's gradient would bypass.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from agents.qnets import CandidateSetQNet


def set_q_parameters(net: CandidateSetQNet) -> tuple[nn.Parameter, ...]:
    """The network's eight layer tensors in the order the group stacks them (w1, b1, w2, b2, w3, b3, w4, b4)."""
    enc, head = net.row_encoder, net.head
    return (
        enc[0].weight,
        enc[0].bias,
        enc[2].weight,
        enc[2].bias,
        head[0].weight,
        head[0].bias,
        head[2].weight,
        head[2].bias,
    )


def shared_weights_blocker(nets: Sequence[object]) -> str | None:
    """Why ``nets`` cannot keep their parameters in one :class:`SharedSetQWeights` (None: they can)."""
    if len(nets) < 2:
        return "sharing needs two or more networks"
    if not all(type(n) is CandidateSetQNet for n in nets):
        return "only CandidateSetQNet networks share their parameters"
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return "under torch.distributed each parameter's own gradient must reach DistributedDataParallel"
    layouts = {tuple((p.shape, p.dtype, p.device, p.requires_grad) for p in set_q_parameters(n)) for n in nets}  # type: ignore[arg-type]
    if len(layouts) != 1:
        return "the networks differ in shape, dtype, device or which parameters train"
    if not all(p.requires_grad for p in set_q_parameters(nets[0])):  # type: ignore[arg-type]
        return "a network has frozen parameters"
    return None


# the group each network's parameters live in now (weak: a network that is gone leaves no group behind)
_SHARED: weakref.WeakKeyDictionary[CandidateSetQNet, SharedSetQWeights] = weakref.WeakKeyDictionary()
# the networks whose state_dict copies their shared parameters (the hook is registered once per network)
_COPYING_STATE: weakref.WeakSet[CandidateSetQNet] = weakref.WeakSet()


class SharedSetQWeights:
    """``G`` :class:`~agents.qnets.CandidateSetQNet` s whose parameters are views of eight ``[G, ...]`` leaf stacks.

    The networks keep their parameter objects (an optimizer's state stays keyed by them); only their
    storage moves into the stacks, with the values they hold. A gradient accumulated in a stack goes
    to the networks' own ``.grad`` (added to what they hold) and leaves the stack's ``.grad`` empty.
    The group holds its networks weakly: it lives as long as they do.
    """

    def __init__(self, nets: Sequence[CandidateSetQNet]) -> None:
        blocker = shared_weights_blocker(nets)
        if blocker is not None:
            raise ValueError(f"these Q-networks cannot share their parameters: {blocker}")
        self._nets = [weakref.ref(n) for n in nets]
        self.parameters = [set_q_parameters(n) for n in nets]  # [G][8]
        with torch.no_grad():
            self.stacks = [torch.stack(column).requires_grad_(True) for column in zip(*self.parameters)]
            for g, params in enumerate(self.parameters):
                for param, stack in zip(params, self.stacks):
                    param.data = stack.detach()[g]
        # where each parameter's values must start for it to read the stacks (checked before every use)
        self._addresses = [param.data_ptr() for params in self.parameters for param in params]
        for column, stack in zip(zip(*self.parameters), self.stacks):
            stack.register_post_accumulate_grad_hook(_hand_out(column))
        for net in nets:
            _SHARED[net] = self
            if net not in _COPYING_STATE:
                net.register_state_dict_post_hook(_own_copies)
                _COPYING_STATE.add(net)

    @staticmethod
    def of(nets: Sequence[CandidateSetQNet]) -> SharedSetQWeights | None:
        """The group these networks share, else a new one (None where :func:`shared_weights_blocker` objects).

        A network whose parameters were given other storage since (``param.data = ...``, ``.to(...)``
        to another device) no longer reads the stacks: the group is made again from the values the
        networks hold now.
        """
        current = _SHARED.get(nets[0]) if nets else None
        if current is not None and current.holds(nets) and current.intact():
            return current
        return None if shared_weights_blocker(nets) is not None else SharedSetQWeights(nets)

    def holds(self, nets: Sequence[CandidateSetQNet]) -> bool:
        """Whether the group is exactly ``nets``, in this order."""
        return len(self._nets) == len(nets) and all(ref() is net for ref, net in zip(self._nets, nets))

    def intact(self) -> bool:
        """Whether every network's parameters still read the stacks (and no process group has started since)."""
        addresses = [param.data_ptr() for params in self.parameters for param in params]
        if addresses != self._addresses:
            return False
        return not (torch.distributed.is_available() and torch.distributed.is_initialized())


def _hand_out(column: Sequence[nn.Parameter]) -> Callable[[Tensor], None]:
    """The hook that moves a stack's accumulated gradient to its networks' own parameters."""

    def hand_out(stack: Tensor) -> None:
        grad, stack.grad = stack.grad, None
        assert grad is not None  # the hook runs after accumulation
        for param, own in zip(column, grad.unbind()):
            param.grad = own if param.grad is None else param.grad + own

    return hand_out


def _own_copies(module: nn.Module, state: dict[str, Tensor], prefix: str, metadata: object) -> None:
    """State-dict post-hook: a shared parameter's entry is a copy of its own values (a view would carry the
    group's whole stack into a checkpoint)."""
    for name, _ in module.named_parameters(prefix=prefix.rstrip("."), recurse=True):
        entry = state.get(name)
        if (
            entry is not None
            and not isinstance(entry, nn.Parameter)
            and entry.untyped_storage().nbytes() > entry.numel() * entry.element_size()
        ):
            state[name] = entry.clone()


__all__ = ["SharedSetQWeights", "set_q_parameters", "shared_weights_blocker"]
