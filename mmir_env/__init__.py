"""The instance-refinement environment of MMIR and everything its reward needs.

Importing this package registers ``mmir/InstanceRefinement-v0`` (pass ``source=`` and
``discriminator=``) and ``mmir/SyntheticRefinement-v0`` (self-contained) with Gymnasium. Both have a
vector entry point, the natively batched :class:`BatchedRefinementEnv`:
``gym.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")``.
"""

from __future__ import annotations

import gymnasium

from mmir_env.batched import BatchedRefinementEnv
from mmir_env.discriminator import (
    DomainDiscriminator,
    GradientReversal,
    GradientReversalLayer,
    fit_discriminator,
    grad_reverse,
    seeded_discriminator,
)
from mmir_env.domains import DOMAIN_NAMES, SOURCE, TARGET, domain_id
from mmir_env.env import InstanceRefinementEnv
from mmir_env.env_group import EnvGroup
from mmir_env.reward import REWARD_KINDS, rank_reward, refinement_reward, relevance
from mmir_env.scoring import discriminator_relevance
from mmir_env.signals import (
    SIGNALS,
    RelevanceSignal,
    SignalInputs,
    SignalReward,
    negative_auc,
    register_signal,
)
from mmir_env.sources import (
    ArraySource,
    CandidateBatch,
    CandidateSource,
    SnapshotSource,
    SyntheticConfig,
    SyntheticSource,
    generate_synthetic_domains,
)
from mmir_env.synthetic_env import (
    make_synthetic_batched_env,
    make_synthetic_refinement_env,
    make_synthetic_source,
    synthetic_row_inputs,
)

INSTANCE_REFINEMENT_ID = "mmir/InstanceRefinement-v0"
SYNTHETIC_REFINEMENT_ID = "mmir/SyntheticRefinement-v0"


def _register() -> None:
    registry = gymnasium.envs.registration.registry
    if INSTANCE_REFINEMENT_ID not in registry:
        gymnasium.register(
            id=INSTANCE_REFINEMENT_ID,
            entry_point="mmir_env.env:InstanceRefinementEnv",
            vector_entry_point="mmir_env.batched:BatchedRefinementEnv",
        )
    if SYNTHETIC_REFINEMENT_ID not in registry:
        gymnasium.register(
            id=SYNTHETIC_REFINEMENT_ID,
            entry_point="mmir_env.synthetic_env:make_synthetic_refinement_env",
            vector_entry_point="mmir_env.synthetic_env:make_synthetic_batched_env",
        )


_register()

__all__ = [
    "ArraySource",
    "CandidateBatch",
    "CandidateSource",
    "DOMAIN_NAMES",
    "DomainDiscriminator",
    "GradientReversal",
    "GradientReversalLayer",
    "INSTANCE_REFINEMENT_ID",
    "InstanceRefinementEnv",
    "REWARD_KINDS",
    "RelevanceSignal",
    "SIGNALS",
    "SOURCE",
    "SYNTHETIC_REFINEMENT_ID",
    "SignalInputs",
    "SignalReward",
    "SnapshotSource",
    "BatchedRefinementEnv",
    "EnvGroup",
    "SyntheticConfig",
    "SyntheticSource",
    "TARGET",
    "discriminator_relevance",
    "domain_id",
    "fit_discriminator",
    "generate_synthetic_domains",
    "grad_reverse",
    "make_synthetic_batched_env",
    "make_synthetic_refinement_env",
    "make_synthetic_source",
    "negative_auc",
    "rank_reward",
    "refinement_reward",
    "register_signal",
    "relevance",
    "seeded_discriminator",
    "synthetic_row_inputs",
]
