"""DAN: multi-kernel maximum mean discrepancy between the halves' features, per modality (objective ``mmd``).

Long, Cao, Wang, Jordan. "Learning Transferable Features with Deep Adaptation Networks", ICML 2015.
DAN adds ``MK-MMD^2(f_s, f_t)`` between source and target features to the classification loss.
The kernel is a sum of Gaussians whose bandwidths are a geometric family around the mean pairwise
squared distance of the joint sample (the common DAN implementation: equal kernel weights rather
than the paper's learned ones, and the biased estimator over all pairs).
"""

from __future__ import annotations

import torch
from torch import Tensor

from experiments.objectives import Objective, ObjectiveContext, StepOutputs


def gaussian_kernel_sum(x: Tensor, y: Tensor, bandwidths: Tensor) -> Tensor:
    """``sum_i exp(-||x_a - y_b||^2 / bandwidth_i)`` for every pair: ``[len(x), len(y)]``."""
    sq = torch.cdist(x, y).pow(2)
    return torch.exp(-sq.unsqueeze(0) / bandwidths.view(-1, 1, 1)).sum(0)


def kernel_bandwidths(source: Tensor, target: Tensor, kernel_mul: float = 2.0, kernel_num: int = 5) -> Tensor:
    """``kernel_num`` bandwidths ``base * kernel_mul^(i - kernel_num // 2)``, base = mean pairwise squared distance.

    The base is computed without gradient (it sets the kernel's scale, it is not a term to minimise).
    """
    with torch.no_grad():
        joint = torch.cat([source, target])
        n = joint.shape[0]
        sq = torch.cdist(joint, joint).pow(2)
        base = sq.sum() / max(1, n * n - n)
        base = base.clamp_min(torch.finfo(joint.dtype).tiny)
    exponents = torch.arange(kernel_num, device=source.device, dtype=source.dtype) - kernel_num // 2
    return base * kernel_mul**exponents


def mk_mmd(
    source: Tensor, target: Tensor, kernel_mul: float = 2.0, kernel_num: int = 5, bandwidths: Tensor | None = None
) -> Tensor:
    """Biased MK-MMD^2 estimate ``mean K(s,s') + mean K(t,t') - 2 mean K(s,t)`` of ``[n_s, d]`` and ``[n_t, d]`` features.

    ``bandwidths`` fixes the Gaussians' ``2 sigma^2`` values (default: :func:`kernel_bandwidths`).
    """
    if source.dim() != 2 or target.dim() != 2 or source.shape[1] != target.shape[1]:
        raise ValueError(
            f"mk_mmd needs [n_s, d] and [n_t, d] features, got {tuple(source.shape)} and {tuple(target.shape)}"
        )
    if bandwidths is None:
        bandwidths = kernel_bandwidths(source, target, kernel_mul, kernel_num)
    bandwidths = torch.as_tensor(bandwidths, dtype=source.dtype, device=source.device)
    k_ss = gaussian_kernel_sum(source, source, bandwidths).mean()
    k_tt = gaussian_kernel_sum(target, target, bandwidths).mean()
    k_st = gaussian_kernel_sum(source, target, bandwidths).mean()
    return k_ss + k_tt - 2 * k_st


class MMDObjective(Objective):
    """Term ``mmd``: MK-MMD^2 between the halves' features, summed over modalities."""

    def __init__(self, context: ObjectiveContext) -> None:
        super().__init__()

    def forward(self, outputs: StepOutputs) -> dict[str, Tensor]:
        assert outputs.target_features is not None
        total = torch.zeros((), device=outputs.labels.device)
        for m in outputs.modalities:
            total = total + mk_mmd(outputs.source_features[m].float(), outputs.target_features[m].float())
        return {"mmd": total}
