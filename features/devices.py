"""Torch device names, resolved once: ``"auto"`` means CUDA when this machine has it, else the CPU."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` -> ``cuda`` if available, else ``cpu``; any other name (or a device) as :class:`torch.device`.

    An invalid name raises torch's RuntimeError; a CUDA device is not checked for availability here
    (callers that report a missing GPU to a user do that themselves).
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
