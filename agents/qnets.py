"""Q-networks over a candidate set: one Q-value per row (paper eq. 2)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def rows_present(obs: Tensor) -> Tensor:
    """``[..., n_c]`` bool: rows of ``obs: [..., n_c, d]`` that were not zeroed out."""
    return obs.ne(0).any(dim=-1)


def masked_q(q: Tensor, mask: Tensor) -> Tensor:
    """Q-values with unselectable rows set to -inf, so argmax/max never pick them."""
    return q.masked_fill(~mask, float("-inf"))


class CandidateSetQNet(nn.Module):
    """Permutation-equivariant Q-network (the default).

    A shared row encoder ``phi`` embeds each row; the set context is the mean of ``phi`` over the
    rows still present; a shared head scores ``[phi(f_i), context]`` to ``Q_i``. Permuting the
    rows permutes the Q-values, so the order of a candidate set does not matter, and the same
    weights serve any ``n_c``.

    :param feature_dim: d.
    :param n_c: candidate-set size (recorded for checks; the network itself works for any n_c).
    :param hidden_dim: width of the row embedding and the head.
    """

    def __init__(self, feature_dim: int, n_c: int, hidden_dim: int = 64) -> None:
        super().__init__()
        self.feature_dim, self.n_c, self.hidden_dim = int(feature_dim), int(n_c), int(hidden_dim)
        self.row_encoder = nn.Sequential(
            nn.Linear(feature_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim), nn.ReLU()
        )
        self.head = nn.Sequential(nn.Linear(2 * hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))

    def forward(self, obs: Tensor, mask: Tensor | None = None) -> Tensor:
        """``obs: [B, n_c, d]``, ``mask: [B, n_c]`` (default: non-zero rows) -> Q ``[B, n_c]``."""
        if mask is None:
            mask = rows_present(obs)
        phi = self.row_encoder(obs)  # [B, n_c, h]
        weights = mask.unsqueeze(-1).to(phi.dtype)
        context = (phi * weights).sum(-2) / weights.sum(-2).clamp_min(1.0)  # [B, h]
        joint = torch.cat([phi, context.unsqueeze(-2).expand_as(phi)], dim=-1)
        return self.head(joint).squeeze(-1)


class FlatQNet(nn.Module):
    """Flatten ``n_c x d`` -> 1024 -> 512 -> n_c with LeakyReLU(0.2): the authors' released-code network.

    The obvious baseline: it sees row order, so it must learn the same thing ``n_c`` times.
    """

    def __init__(self, feature_dim: int, n_c: int, hidden_dims: tuple[int, ...] = (1024, 512)) -> None:
        super().__init__()
        self.feature_dim, self.n_c = int(feature_dim), int(n_c)
        layers: list[nn.Module] = []
        width = n_c * feature_dim
        for h in hidden_dims:
            layers += [nn.Linear(width, h), nn.LeakyReLU(0.2)]
            width = h
        layers.append(nn.Linear(width, n_c))
        self.net = nn.Sequential(*layers)

    def forward(self, obs: Tensor, mask: Tensor | None = None) -> Tensor:
        """``obs: [B, n_c, d]`` -> Q ``[B, n_c]`` (``mask`` is accepted for a uniform signature)."""
        if obs.shape[-2] != self.n_c:
            raise ValueError(f"FlatQNet was built for n_c={self.n_c}, got candidate sets of {obs.shape[-2]} rows")
        return self.net(obs.flatten(-2))


Q_NETWORKS: dict[str, type[nn.Module]] = {"set": CandidateSetQNet, "flat": FlatQNet}
