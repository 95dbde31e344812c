"""Validators of the target predictions alone: ``entropy``, ``im``, ``snd``, ``bnm``.

Each reads only ``inputs.target_logits`` (``[N, C]``); ``p_i = softmax(z_i)`` is row ``i``'s
predicted class distribution and ``H(p) = -sum_c p_c log p_c`` its entropy in nats. Every score is
signed so that higher is better.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from experiments.validators.inputs import ValidationInputs, log_probabilities, row_entropy

__all__ = ["batch_nuclear_norm", "entropy", "information_maximisation", "soft_neighbourhood_density"]

#: SND's temperature (Saito et al. 2021 use 0.05).
SND_TEMPERATURE = 0.05
# rows of the similarity matrix SND builds at once: bounds its memory at _SND_BLOCK x N float64
_SND_BLOCK = 2048


def entropy(inputs: ValidationInputs) -> float:
    """``entropy``: the negative mean prediction entropy on the target, ``-(1/N) sum_i H(p_i)``.

    Confident target predictions score high (0 is the maximum, one-hot rows); uniform ones score
    ``-log C``. Morerio, Cavazza and Murino, "Minimal-Entropy Correlation Alignment for
    Unsupervised Deep Domain Adaptation", ICLR 2018 (entropy as a validation criterion); pytorch-adapt's
    ``EntropyValidator``.
    """
    return -float(row_entropy(log_probabilities(inputs.target_logits)).mean())


def information_maximisation(inputs: ValidationInputs) -> float:
    """``im``: information maximisation, ``H(mean_i p_i) - (1/N) sum_i H(p_i)``.

    The mutual information between inputs and predicted classes: confident rows (low mean entropy)
    that use the classes evenly (high entropy of the mean prediction). Maximum ``log C`` (confident
    and balanced), 0 for uniform rows and for confident rows all of one class. Gomes, Krause and
    Perona, "Discriminative Clustering by Regularized Information Maximization", NeurIPS 2010; as a
    validator: Musgrave, Belongie and Lim 2022 (pytorch-adapt's ``IMValidator``).
    """
    log_p = log_probabilities(inputs.target_logits)
    mean = log_p.exp().mean(0, keepdim=True)
    diversity = row_entropy(torch.log(mean))
    return float(diversity[0] - row_entropy(log_p).mean())


def soft_neighbourhood_density(inputs: ValidationInputs, temperature: float = SND_TEMPERATURE) -> float:
    """``snd``: soft neighbourhood density, ``(1/N) sum_i H(softmax_j(s_ij / tau))`` over ``j != i``.

    ``s_ij = cos(p_i, p_j)``, the cosine similarity of two target rows' softmax outputs, and
    ``tau = 0.05``. A row whose neighbours sit in a dense cluster spreads its soft neighbour
    distribution over many of them (high entropy); an isolated row puts it on its nearest one (low).
    Higher: denser neighbourhoods, which Saito et al. find in well-adapted models. Needs at least 2
    rows. Saito, Kim, Teterwak, Sclaroff, Darrell and Saenko, "Tune it the Right Way: Unsupervised
    Validation of Domain Adaptation via Soft Neighborhood Density", ICCV 2021.
    """
    p = torch.nn.functional.normalize(log_probabilities(inputs.target_logits).exp(), dim=1)
    n = p.shape[0]
    if n < 2:
        raise ValueError(f"snd needs at least 2 target rows, got {n}")
    total = torch.zeros((), dtype=p.dtype)
    for start in range(0, n, _SND_BLOCK):  # blocks of rows, not rows: N x N would not fit for large N
        rows = torch.arange(start, min(start + _SND_BLOCK, n))
        similarity = p[rows] @ p.T / temperature
        similarity[torch.arange(len(rows)), rows] = -math.inf  # a row is not its own neighbour
        total = total + row_entropy(torch.log_softmax(similarity, dim=1)).sum()
    return float(total / n)


def batch_nuclear_norm(inputs: ValidationInputs) -> float:
    """``bnm``: batch nuclear-norm, ``||P||_* / N`` for the target softmax matrix ``P`` (``[N, C]``).

    The nuclear norm (sum of singular values) grows with both the confidence and the diversity of
    the predictions: ``P = I`` (one-hot, every class once) scores 1, ``N`` identical one-hot rows
    ``1 / sqrt(N)``. Cui, Wang, Zhuo, Li, Huang and Tian, "Towards Discriminability and Diversity:
    Batch Nuclear-norm Maximization under Label Insufficient Situations", CVPR 2020; as a
    validator: Musgrave, Belongie and Lim 2022 (pytorch-adapt's ``BNMValidator``).
    """
    p: Tensor = log_probabilities(inputs.target_logits).exp()
    return float(torch.linalg.svdvals(p).sum() / p.shape[0])
