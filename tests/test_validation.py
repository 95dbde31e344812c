"""Bad input gets a clear ValueError/TypeError naming the argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmir_env import ArraySource, DomainDiscriminator, InstanceRefinementEnv, SyntheticSource


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"n_c": 1}, ValueError, "n_c must be >= 2"),
        ({"n_c": 2.5}, TypeError, "n_c must be an int"),
        ({"E": 5}, ValueError, r"E \(selections per episode\) must be < n_c=5"),
        ({"E": 0}, ValueError, "E must be >= 1"),
        ({"tau": 0.0}, ValueError, r"tau must lie strictly inside \(0, 1\)"),
        ({"tau": 1.0}, ValueError, r"tau must lie strictly inside \(0, 1\)"),
        ({"tau": "0.5"}, TypeError, "tau must be a float"),
        ({"reward": "dense"}, ValueError, "reward must be one of"),
        ({"domain": "middle"}, ValueError, "domain must be 'source' or 'target'"),
    ],
)
def test_bad_env_arguments(small_source, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        InstanceRefinementEnv(small_source, **kwargs)


def test_nan_and_inf_features_rejected():
    good = np.zeros((10, 4), dtype=np.float32)
    bad = good.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"features\['source'\] contains NaN or inf values \(rows \[3\]\)"):
        ArraySource({"source": bad, "target": good})
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match=r"features\['target'\] contains NaN or inf"):
        ArraySource({"source": good, "target": bad})


def test_nan_in_handed_in_features(small_env):
    feats = np.zeros((5, 32), dtype=np.float32)
    feats[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"options\['features'\] contains NaN"):
        small_env.reset(options={"features": feats})
    with pytest.raises(ValueError, match=r"options\['features'\] must have shape \(n_c, d\) = \(5, 32\)"):
        small_env.reset(options={"features": np.zeros((4, 32), dtype=np.float32)})


def test_feature_dim_mismatch_with_discriminator(small_source):
    with pytest.raises(ValueError, match="discriminator expects features of dimension 64, but the source provides 32"):
        InstanceRefinementEnv(small_source, discriminator=DomainDiscriminator(64))
    with pytest.raises(ValueError, match="discriminator cannot score features of dimension 32"):
        InstanceRefinementEnv(small_source, discriminator=torch.nn.Linear(16, 1))
    with pytest.raises(TypeError, match="discriminator must be a torch.nn.Module"):
        InstanceRefinementEnv(small_source, discriminator=lambda x: x)


def test_source_shape_errors():
    with pytest.raises(ValueError, match="must have keys 'source' and 'target'; missing \\['target'\\]"):
        ArraySource({"source": np.zeros((3, 4))})
    with pytest.raises(ValueError, match="share feature_dim"):
        ArraySource({"source": np.zeros((3, 4)), "target": np.zeros((3, 5))})
    with pytest.raises(ValueError, match=r"2-D \[num_samples, feature_dim\]"):
        ArraySource({"source": np.zeros(3), "target": np.zeros((3, 5))})
    with pytest.raises(ValueError, match=r"is_negative\['source'\] must have shape \(3,\)"):
        ArraySource(
            {"source": np.zeros((3, 4)), "target": np.zeros((3, 4))}, is_negative={"source": [1], "target": [0, 0, 0]}
        )
    with pytest.raises(TypeError, match="unknown SyntheticSource parameters \\['dims'\\]"):
        SyntheticSource(dims=3)
    with pytest.raises(ValueError, match="feature_dim must be at least num_classes \\+ 3"):
        SyntheticSource(feature_dim=5)


@pytest.mark.parametrize("action, exc", [(5, ValueError), (-1, ValueError), (1.5, TypeError), ([0, 1], TypeError)])
def test_action_out_of_range(small_env, action, exc):
    small_env.reset(seed=0)
    with pytest.raises(exc, match="action must be"):
        small_env.step(action)


def test_n_c_larger_than_pool():
    src = ArraySource({"source": np.zeros((3, 4)), "target": np.zeros((8, 4))}, discriminator=torch.nn.Linear(4, 1))
    with pytest.raises(ValueError, match="n_c=5 exceeds the 3 samples of the source pool"):
        InstanceRefinementEnv(src, n_c=5)


def test_source_must_follow_protocol():
    with pytest.raises(TypeError, match="source must implement CandidateSource"):
        InstanceRefinementEnv(object(), discriminator=torch.nn.Linear(4, 1))
