"""Gradient reversal and the per-modality domain discriminator D^k (paper section 3.3, 4.1).

Here, in the lowest layer, because feature snapshots store and rebuild discriminators
(:mod:`features.snapshot`); training one against features is :func:`mmir_env.discriminator.fit_discriminator`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["DomainDiscriminator", "GradientReversal", "GradientReversalLayer", "grad_reverse", "seeded_discriminator"]


class GradientReversal(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by ``-coeff`` backward (Ganin & Lempitsky, 2015)."""

    @staticmethod
    def forward(ctx, x: Tensor, coeff: float) -> Tensor:  # type: ignore[override]
        ctx.coeff = float(coeff)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad_output.neg() * ctx.coeff, None


def grad_reverse(x: Tensor, coeff: float = 1.0) -> Tensor:
    """Apply :class:`GradientReversal` with coefficient ``coeff`` (lambda)."""
    return GradientReversal.apply(x, coeff)


class GradientReversalLayer(nn.Module):
    """Module form of :func:`grad_reverse`; ``coeff`` may be changed during training (GRL ramps)."""

    def __init__(self, coeff: float = 1.0) -> None:
        super().__init__()
        self.coeff = float(coeff)

    def forward(self, x: Tensor) -> Tensor:
        return grad_reverse(x, self.coeff)

    def extra_repr(self) -> str:
        return f"coeff={self.coeff}"


class DomainDiscriminator(nn.Module):
    """Linear(d, hidden) -> LeakyReLU -> Linear(hidden, 1): one domain logit per feature.

    Paper section 4.1 (hidden 128, LeakyReLU). The logit predicts the *target* domain
    (label 1), so ``sigmoid(logit)`` is P(target | f) and eq. 3's relevance follows from it.
    The gradient reversal belongs to the adversarial loss that trains it (as tllib's
    ``DomainAdversarialLoss``), not to the discriminator: the refinement env scores rows with the
    same module, and a snapshot stores it without any training-time state.

    :param feature_dim: d, the width of the features it scores.
    :param hidden_dim: width of the hidden layer (paper: 128).
    :param negative_slope: LeakyReLU slope (PyTorch default 0.01).
    """

    def __init__(
        self,
        feature_dim: int,
        hidden_dim: int = 128,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        if not isinstance(feature_dim, int) or feature_dim < 1:
            raise ValueError(f"feature_dim must be a positive int, got {feature_dim!r}")
        if not isinstance(hidden_dim, int) or hidden_dim < 1:
            raise ValueError(f"hidden_dim must be a positive int, got {hidden_dim!r}")
        self.feature_dim = feature_dim
        self.net = nn.Sequential(
            nn.Linear(feature_dim, hidden_dim),
            nn.LeakyReLU(negative_slope),
            nn.Linear(hidden_dim, 1),
        )

    def forward(self, features: Tensor) -> Tensor:
        """``features: [..., d]`` -> domain logits ``[...]``."""
        return self.net(features).squeeze(-1)


def seeded_discriminator(feature_dim: int, seed: int, **kwargs: float | int) -> DomainDiscriminator:
    """A :class:`DomainDiscriminator` whose initial weights depend on ``seed`` only (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return DomainDiscriminator(feature_dim, **kwargs)  # type: ignore[arg-type]
