"""``mmir/SyntheticRefinement-v0``: a self-contained environment on the synthetic benchmark."""

from __future__ import annotations

from typing import Any

import torch
from gymnasium.vector import AutoresetMode

from mmir_env.batched import BatchedRefinementEnv
from mmir_env.discriminator import fit_discriminator, seeded_discriminator
from mmir_env.env import InstanceRefinementEnv
from mmir_env.sources.synthetic import DISCRIMINATOR_PRETRAIN_STEPS, SyntheticConfig, SyntheticSource

# The synthetic benchmark's discriminator is frozen; this drift stands in for co-training's live
# one (see InstanceRefinementEnv, "Rewards"), so that eq. 4's expected reward ranks the rows.
SYNTHETIC_LOGIT_NOISE = 1.0


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
    **synthetic: Any,
) -> InstanceRefinementEnv:
    """Entry point of ``mmir/SyntheticRefinement-v0``; extra keywords go to :class:`SyntheticConfig`.

    ``seed`` fixes the generated data and the discriminator; episodes are seeded by ``reset(seed=...)``.
    """
    source = make_synthetic_source(seed=seed, modality=modality, pretrain_steps=pretrain_steps, **synthetic)
    return InstanceRefinementEnv(source, domain=domain, n_c=n_c, E=E, tau=tau, reward=reward, logit_noise=logit_noise)


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
    )
