"""Scoring features with a live discriminator (shared by the single and batched environments)."""

from __future__ import annotations

import weakref

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from mmir_env.reward import relevance

# Whether a module holds layers that behave differently in train and eval mode. Cached because
# switching modes walks every submodule, which costs more than a small discriminator's forward.
_MODE_DEPENDENT: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def _mode_dependent(module: nn.Module) -> bool:
    known = _MODE_DEPENDENT.get(module)
    if known is None:
        known = (
            any(isinstance(m, (_BatchNorm, _DropoutNd)) for m in module.modules())
            or type(module).train is not nn.Module.train
        )
        _MODE_DEPENDENT[module] = known
    return known


# A module's first parameter, found once: its ``.device`` follows ``module.to(...)``, which converts parameters
# in place, so the environments' every-step device lookup costs no walk over the module's children.
_FIRST_PARAMETER: weakref.WeakKeyDictionary[nn.Module, Tensor] = weakref.WeakKeyDictionary()


def module_device(module: nn.Module) -> torch.device:
    """Device of a module's first parameter or buffer (CPU for a parameter-free module)."""
    first = _FIRST_PARAMETER.get(module)
    if first is not None:
        return first.device
    for tensor in module.parameters():
        _FIRST_PARAMETER[module] = tensor
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def discriminator_relevance(
    discriminator: nn.Module, features: Tensor, domain: int | Tensor, logit_noise: Tensor | None = None
) -> Tensor:
    """Eq. 3 relevance of ``features: [..., d]`` -> ``[...]`` under the discriminator as it is *now*.

    ``logit_noise`` (same shape as the output) is added to the logits first: the environments'
    emulation of a drifting, co-trained discriminator (see ``InstanceRefinementEnv``).

    The module is switched to eval mode for the forward (no dropout noise in rewards, no
    batch-norm statistics updates) and put back in the mode it was in.
    """
    features = features.to(module_device(discriminator), torch.float32)
    was_training = discriminator.training
    if not (was_training and _mode_dependent(discriminator)):
        logits = discriminator(features)
    else:
        discriminator.eval()
        try:
            logits = discriminator(features)
        finally:
            discriminator.train(was_training)
    if logits.shape != features.shape[:-1]:
        if logits.shape == (*features.shape[:-1], 1):
            logits = logits.squeeze(-1)
        else:
            raise ValueError(
                f"discriminator must map [..., d] features to one logit per row, got output shape "
                f"{tuple(logits.shape)} for input {tuple(features.shape)}"
            )
    logits = logits.float()
    if logit_noise is not None:
        logits = logits + logit_noise.to(logits.device, logits.dtype)
    return relevance(logits, domain)


def resolve_discriminator(discriminator: object, source: object, feature_dim: int) -> nn.Module:
    """``discriminator``, or the source's default one when None; validated against ``feature_dim``."""
    if discriminator is None:
        discriminator = getattr(source, "discriminator", None)
        if discriminator is None:
            raise ValueError("discriminator is required: the source provides no default discriminator")
    return check_discriminator(discriminator, feature_dim)


def check_discriminator(discriminator: object, feature_dim: int) -> nn.Module:
    """Validate that ``discriminator`` is a module scoring ``feature_dim``-wide rows; name what is wrong."""
    if not isinstance(discriminator, nn.Module):
        raise TypeError(f"discriminator must be a torch.nn.Module, got {type(discriminator).__name__}")
    declared = getattr(discriminator, "feature_dim", None)
    if declared is not None and declared != feature_dim:
        raise ValueError(
            f"discriminator expects features of dimension {declared}, but the source provides {feature_dim}"
        )
    if declared is None:
        try:
            discriminator_relevance(discriminator, torch.zeros(2, feature_dim), 0)
        except (RuntimeError, ValueError) as err:
            raise ValueError(
                f"discriminator cannot score features of dimension {feature_dim} from the source: {err}"
            ) from err
    return discriminator
