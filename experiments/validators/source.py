"""Validators of the labelled source validation rows: ``source-accuracy``."""

from __future__ import annotations

from experiments.validators.inputs import ValidationInputs

__all__ = ["source_accuracy"]


def source_accuracy(inputs: ValidationInputs) -> float:
    """``source-accuracy``: top-1 accuracy on the source validation rows, ``(1/Ns) sum_i [argmax_c z_ic = y_i]``.

    The baseline every UDA paper reports beside its target numbers: it sees no target data, so it
    cannot tell alignment that helps the target from alignment that hurts it. Musgrave, Belongie
    and Lim 2022 rank it against the label-free validators (pytorch-adapt's ``AccuracyValidator``
    on ``src_val``).
    """
    if inputs.source_labels.numel() == 0:
        raise ValueError("source-accuracy needs source validation rows, got none")
    predicted = inputs.source_logits.argmax(dim=1)
    return float((predicted == inputs.source_labels.to(predicted.device)).double().mean())
