"""Training the per-modality domain discriminator D^k (paper section 3.3, 4.1).

The modules themselves (gradient reversal, :class:`DomainDiscriminator`) live in
:mod:`features.domain_discriminator`, since snapshots store them; they are re-exported here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from features.domain_discriminator import (
    DomainDiscriminator,
    GradientReversal,
    GradientReversalLayer,
    grad_reverse,
    seeded_discriminator,
)

__all__ = [
    "DomainDiscriminator",
    "GradientReversal",
    "GradientReversalLayer",
    "fit_discriminator",
    "grad_reverse",
    "seeded_discriminator",
]


def fit_discriminator(
    discriminator: nn.Module,
    source_features: Tensor,
    target_features: Tensor,
    steps: int = 200,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
) -> list[float]:
    """Train ``discriminator`` briefly to tell source (0) from target (1) with BCE; returns the losses.

    Minibatches are balanced (half per domain) and drawn with a seeded ``torch.Generator``, so the
    result is deterministic on CPU. The module is left in eval mode.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    gen = torch.Generator().manual_seed(int(seed))
    device = next(discriminator.parameters()).device
    src = source_features.to(device=device, dtype=torch.float32)
    tgt = target_features.to(device=device, dtype=torch.float32)
    half = max(1, batch_size // 2)
    labels = torch.cat([torch.zeros(half, device=device), torch.ones(half, device=device)])
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr)
    losses: list[float] = []
    discriminator.train()
    for _ in range(steps):
        i_src = torch.randint(src.shape[0], (half,), generator=gen).to(device)
        i_tgt = torch.randint(tgt.shape[0], (half,), generator=gen).to(device)
        logits = discriminator(torch.cat([src[i_src], tgt[i_tgt]]))
        loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    discriminator.eval()
    return losses
