"""Shared fixtures: small synthetic sources so that unit tests stay fast on 2 cores."""

from __future__ import annotations

import pytest

from mmir_env import InstanceRefinementEnv, make_synthetic_source
from mmir_env.sources import SyntheticSource


@pytest.fixture(scope="session")
def small_source() -> SyntheticSource:
    """d=32 synthetic source with a pre-trained discriminator (seed 0)."""
    return make_synthetic_source(seed=0, feature_dim=32, num_source=400, num_target=400, pretrain_steps=100)


@pytest.fixture
def small_env(small_source: SyntheticSource) -> InstanceRefinementEnv:
    return InstanceRefinementEnv(small_source, domain="source", n_c=5, E=1)
