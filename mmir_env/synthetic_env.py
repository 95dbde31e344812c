"""``mmir/SyntheticRefinement-v0``: a self-contained environment on the synthetic benchmark."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from gymnasium.vector import AutoresetMode
from torch import Tensor, nn

from mmir_env.batched import BatchedRefinementEnv
from mmir_env.discriminator import fit_discriminator, seeded_discriminator
from mmir_env.env import InstanceRefinementEnv
from mmir_env.sources.synthetic import (
    DISCRIMINATOR_PRETRAIN_STEPS,
    SyntheticConfig,
    SyntheticSource,
    generate_synthetic_domains,
)

# The synthetic benchmark's discriminator is frozen; this drift stands in for co-training's live
# one (see InstanceRefinementEnv, "Rewards"), so that eq. 4's expected reward ranks the rows.
SYNTHETIC_LOGIT_NOISE = 1.0
# Adam steps that fit the benchmark's linear classifier heads (synthetic_row_inputs)
CLASSIFIER_FIT_STEPS = 200


def make_synthetic_source(
    seed: int = 0,
    modality: str = "rgb",
    pretrain_steps: int = DISCRIMINATOR_PRETRAIN_STEPS,
    **synthetic: Any,
) -> SyntheticSource:
    """A :class:`SyntheticSource` with a discriminator pre-trained briefly on its two pools.

    Everything (data, discriminator initialisation and minibatches) is a function of ``seed``.
    """
    cfg = SyntheticConfig(**{**SyntheticConfig().to_dict(), "seed": seed, "modalities": (modality,), **synthetic})
    source = SyntheticSource(cfg, modality=modality)
    disc = seeded_discriminator(source.feature_dim, seed=seed)
    fit_discriminator(disc, source.features("source"), source.features("target"), steps=pretrain_steps, seed=seed)
    source.discriminator = disc
    return source


def fit_linear_classifier(features: Tensor, labels: Tensor, num_classes: int, steps: int, seed: int) -> nn.Linear:
    """A linear softmax head fit on labelled rows (full-batch Adam): the benchmark's stand-in for ``C^k``."""
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(features.shape[1], num_classes)
    with torch.no_grad():
        head.weight.copy_(0.01 * torch.randn(head.weight.shape, generator=gen))
        head.bias.zero_()
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(head(features), labels).backward()
        opt.step()
    return head.requires_grad_(False)


def synthetic_row_inputs(
    source: SyntheticSource, other_modality: str | None = None, steps: int = CLASSIFIER_FIT_STEPS, seed: int = 0
) -> dict[str, dict[str, Tensor]]:
    """Classifier logits of every pool row, for the logit-based relevance signals (the envs' ``row_inputs``).

    Per modality, a linear head is fit on the labelled *source* pool only (what an unsupervised run
    has; target labels are never read) and applied to both pools: ``logits`` for the source's own
    modality, ``other_logits`` for ``other_modality`` (default: "flow" for "rgb", else "rgb"), whose
    features are generated from the same config (labels and negatives are shared across modalities).
    """
    other = other_modality or ("flow" if source.modality == "rgb" else "rgb")
    if other == source.modality:
        raise ValueError(f"other_modality must differ from the source's modality {source.modality!r}")
    labels = source.labels("source")
    assert labels is not None  # a synthetic source always has labels
    domains = generate_synthetic_domains(replace(source.config, modalities=(other,)))
    pools = {
        "logits": {d: source.features(d) for d in ("source", "target")},
        "other_logits": {d: torch.from_numpy(domains.features[d][other]) for d in ("source", "target")},
    }
    out: dict[str, dict[str, Tensor]] = {}
    for key, pool in pools.items():
        head = fit_linear_classifier(pool["source"], labels, source.num_classes, steps, seed)
        out[key] = {d: head(x) for d, x in pool.items()}
    return out


def make_synthetic_refinement_env(
    domain: str | int = "source",
    n_c: int = 5,
    E: int = 1,
    tau: float = 0.5,
    reward: str = "threshold",
    logit_noise: float = SYNTHETIC_LOGIT_NOISE,
    seed: int = 0,
    modality: str = "rgb",
    pretrain_steps: int = DISCRIMINATOR_PRETRAIN_STEPS,
    observation_signals: Sequence[str] | None = None,
    reward_signals: Mapping[str, float] | None = None,
    signal_options: Mapping[str, Mapping[str, Any]] | None = None,
    classifier_logits: bool = False,
    **synthetic: Any,
) -> InstanceRefinementEnv:
    """Entry point of ``mmir/SyntheticRefinement-v0``; extra keywords go to :class:`SyntheticConfig`.

    ``seed`` fixes the generated data and the discriminator; episodes are seeded by ``reset(seed=...)``.
    ``classifier_logits=True`` gives the logit-based signals their inputs (:func:`synthetic_row_inputs`).
    """
    source = make_synthetic_source(seed=seed, modality=modality, pretrain_steps=pretrain_steps, **synthetic)
    return InstanceRefinementEnv(
        source,
        domain=domain,
        n_c=n_c,
        E=E,
        tau=tau,
        reward=reward,
        logit_noise=logit_noise,
        observation_signals=observation_signals,
        reward_signals=reward_signals,
        signal_options=signal_options,
        row_inputs=synthetic_row_inputs(source, seed=seed) if classifier_logits else None,
    )


def make_synthetic_batched_env(
    num_envs: int = 1024,
    domain: str | int = "source",
    n_c: int = 5,
    E: int = 1,
    tau: float = 0.5,
    reward: str = "threshold",
    logit_noise: float = SYNTHETIC_LOGIT_NOISE,
    seed: int = 0,
    modality: str = "rgb",
    pretrain_steps: int = DISCRIMINATOR_PRETRAIN_STEPS,
    autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
    device: torch.device | str | None = None,
    observation_signals: Sequence[str] | None = None,
    reward_signals: Mapping[str, float] | None = None,
    signal_options: Mapping[str, Mapping[str, Any]] | None = None,
    classifier_logits: bool = False,
    **synthetic: Any,
) -> BatchedRefinementEnv:
    """Vector entry point of ``mmir/SyntheticRefinement-v0``: the same MDP as ``num_envs`` sets in one tensor.

    ``gym.make_vec("mmir/SyntheticRefinement-v0", num_envs=N, vectorization_mode="vector_entry_point")``
    calls it; the data and discriminator are those of :func:`make_synthetic_refinement_env` with
    the same ``seed`` and keywords.
    """
    source = make_synthetic_source(seed=seed, modality=modality, pretrain_steps=pretrain_steps, **synthetic)
    return BatchedRefinementEnv(
        source,
        num_envs=num_envs,
        domain=domain,
        n_c=n_c,
        E=E,
        tau=tau,
        reward=reward,
        logit_noise=logit_noise,
        autoreset_mode=autoreset_mode,
        device=device,
        observation_signals=observation_signals,
        reward_signals=reward_signals,
        signal_options=signal_options,
        row_inputs=synthetic_row_inputs(source, seed=seed) if classifier_logits else None,
    )
