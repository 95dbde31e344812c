"""The instance-refinement MDP over one candidate set (paper section 3.2)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from mmir_env.domains import DOMAIN_NAMES, domain_id
from mmir_env.reward import REWARD_KINDS, check_tau, compute_reward
from mmir_env.scoring import discriminator_relevance, resolve_discriminator
from mmir_env.sources.base import CandidateSource

# Observations are finite (sources reject NaN/inf), so the Box spans every finite float32 rather than
# +-inf; Gymnasium's checker rightly warns about infinite bounds.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; ``TypeError``/``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_logit_noise(value: object) -> float:
    """Validate ``logit_noise``: a float >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"logit_noise must be a float >= 0, got {type(value).__name__}")
    if not value >= 0.0 or value == float("inf"):
        raise ValueError(f"logit_noise must be a finite float >= 0, got {value}")
    return float(value)


def check_refinement_args(n_c: object, E: object, tau: object, reward: object) -> tuple[int, int, float, str]:
    """Validate the arguments shared by the single and batched environments."""
    n_c = check_int("n_c", n_c, 2)
    E = check_int("E", E, 1)
    if E >= n_c:
        raise ValueError(f"E (selections per episode) must be < n_c={n_c}, got E={E}")
    if reward not in REWARD_KINDS:
        raise ValueError(f"reward must be one of {REWARD_KINDS}, got {reward!r}")
    return n_c, E, check_tau(tau), str(reward)  # type: ignore[arg-type]


class InstanceRefinementEnv(gym.Env[np.ndarray, np.int64]):
    """Select negative samples out of a candidate set, rewarded by a live domain discriminator.

    ## Description
    The S-agent (``domain="source"``) or T-agent (``domain="target"``) of one modality looks at a
    candidate set of ``n_c`` clip features and selects out the sample least relevant to the other
    domain (paper section 3.2, Fig. 3). A selected row is replaced by zeros.

    ## Action Space
    ``Discrete(n_c)``: the index of the row to select out. ``action_masks()`` (the sb3-contrib
    contract) and ``info["action_mask"]`` say which rows are still selectable. Selecting a row that
    was already removed is *invalid*: reward -1, the state is unchanged, and
    ``info["invalid_action"]`` is True. An invalid attempt still uses one of the ``E`` steps, so an
    episode always ends (masked agents never make one). An action outside ``[0, n_c)`` raises.

    ## Observation Space
    ``Box(-f32max, f32max, (n_c, d), float32)``: the candidate-set matrix with removed rows zeroed
    (any finite float32: sources reject NaN and inf).

    ## Rewards
    With domain label source = 0 and target = 1, relevance (eq. 3) of the chosen row is
    ``sigmoid(D(f))`` for a source sample and ``1 - sigmoid(D(f))`` for a target sample.
    ``reward="threshold"`` (the paper's eq. 4, default): +1 if relevance < ``tau`` else -1.
    ``reward="rank"``: +1 if the chosen row has the lowest relevance of the rows still selectable.
    ``reward="margin"``: ``tau - relevance`` of the chosen row (eq. 4's sign, with its size).
    ``D`` is the discriminator *object*: when a training loop updates its weights, the next reward
    uses them. It is scored in eval mode and without gradients.

    ``logit_noise`` (default 0: eq. 4 exactly) adds Gaussian noise of that std to the logit before
    eq. 3, drawn from ``self.np_random``. It emulates the discriminator of co-training, which
    moves between the agent's observation and its reward. Why it matters: with a frozen
    discriminator eq. 4 pays every row below ``tau`` alike, so no agent can learn to prefer the
    *least* relevant row; with drift, the expected reward falls strictly with relevance.

    ## Starting State
    ``n_c`` distinct rows drawn from the source's pool of ``domain`` with ``self.np_random``, or a
    candidate set handed in with ``reset(options={"features": array [n_c, d]})``.

    ## Episode End
    Terminates after ``E`` steps (``E < n_c``). Never truncates by itself.

    ## Info
    ``action_mask`` (bool ``[n_c]``), ``candidate_index`` (pool rows of the set, reset only),
    ``relevance`` (NaN for an invalid action) and ``invalid_action`` (step only), ``is_negative`` of the chosen row when the
    source has planted ground truth (never part of the observation).

    ## Arguments
    ``source`` (a :class:`~mmir_env.sources.CandidateSource`), ``discriminator`` (a module mapping
    ``[..., d]`` to logits ``[...]``; defaults to ``source.discriminator``), ``domain``
    ("source"/"target" or 0/1), ``n_c`` (5), ``E`` (1), ``tau`` (0.5; the paper's tau_s or tau_t),
    ``reward`` ("threshold", "rank" or "margin"), ``logit_noise`` (0.0).

    ## Vectorized environment
    :class:`~mmir_env.batched.BatchedRefinementEnv` holds thousands of candidate sets in one tensor
    and scores them in one discriminator forward. It is the registered vector entry point:
    ``gym.make_vec("mmir/InstanceRefinement-v0", num_envs=N, vectorization_mode="vector_entry_point",
    source=..., discriminator=...)`` builds one (``SyncVectorEnv``/``AsyncVectorEnv`` also work).

    ## Version History
    * v0: initial version.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        source: CandidateSource,
        discriminator: nn.Module | None = None,
        domain: int | str = "source",
        n_c: int = 5,
        E: int = 1,
        tau: float = 0.5,
        reward: str = "threshold",
        logit_noise: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(source, CandidateSource):
            raise TypeError(
                f"source must implement CandidateSource (feature_dim, has_ground_truth, num_samples, sample), "
                f"got {type(source).__name__}"
            )
        self.n_c, self.E, self.tau, self.reward_kind = check_refinement_args(n_c, E, tau, reward)
        self.domain = domain_id(domain)
        self.logit_noise = check_logit_noise(logit_noise)
        self.source = source
        if self.n_c > source.num_samples(self.domain):
            raise ValueError(
                f"n_c={self.n_c} exceeds the {source.num_samples(self.domain)} samples of the "
                f"{DOMAIN_NAMES[self.domain]} pool"
            )
        self.feature_dim = int(source.feature_dim)
        self.discriminator = resolve_discriminator(discriminator, source, self.feature_dim)
        self.observation_space = spaces.Box(
            -FLOAT32_MAX, FLOAT32_MAX, shape=(self.n_c, self.feature_dim), dtype=np.float32
        )
        self.action_space = spaces.Discrete(self.n_c)
        self._features = np.zeros((self.n_c, self.feature_dim), dtype=np.float32)
        self._mask = np.zeros(self.n_c, dtype=bool)
        self._is_negative: np.ndarray | None = None
        self._steps = 0
        self._needs_reset = True

    # -- gymnasium API --------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        if "features" in options:
            self._features = self._handed_in_features(options["features"])
            neg = options.get("is_negative")
            self._is_negative = None if neg is None else np.asarray(neg, dtype=bool).reshape(self.n_c).copy()
            index = np.full(self.n_c, -1, dtype=np.int64)
        else:
            batch = self.source.sample(self.np_random, self.domain, 1, self.n_c)
            self._features = batch.features[0].numpy().astype(np.float32, copy=True)
            self._is_negative = None if batch.is_negative is None else batch.is_negative[0].numpy().copy()
            index = batch.index[0].numpy().astype(np.int64, copy=True)
        self._mask = np.ones(self.n_c, dtype=bool)
        self._steps = 0
        self._needs_reset = False
        return self._observation(), {"action_mask": self._mask.copy(), "candidate_index": index}

    def step(self, action: object) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("the episode has ended (or never started): call reset() before step()")
        a = self._check_action(action)
        valid = bool(self._mask[a])
        if self.reward_kind == "rank":
            rel = discriminator_relevance(
                self.discriminator, torch.from_numpy(self._features), self.domain, self._drift(self.n_c)
            )
        else:  # the threshold and margin rewards need the chosen row only
            rel = torch.full((self.n_c,), float("nan"))
            rel[a] = discriminator_relevance(
                self.discriminator, torch.from_numpy(self._features[a]), self.domain, self._drift(())
            )
        if valid:
            reward = compute_reward(
                self.reward_kind, rel.cpu(), torch.tensor(a), torch.from_numpy(self._mask), self.tau
            )
            self._mask[a] = False
        else:
            reward = torch.tensor(-1.0)
        self._steps += 1
        terminated = self._steps >= self.E
        self._needs_reset = terminated
        info: dict[str, Any] = {
            "action_mask": self._mask.copy(),
            # an invalid choice names a row that is no longer in the candidate set: no relevance
            "relevance": float(rel[a]) if valid else float("nan"),
            "invalid_action": not valid,
        }
        if self._is_negative is not None:
            info["is_negative"] = bool(self._is_negative[a])
        return self._observation(), float(reward), bool(terminated), False, info

    @property
    def candidate_is_negative(self) -> np.ndarray | None:
        """Planted ground truth of the current candidate set ``[n_c]`` (None without ground truth)."""
        return None if self._is_negative is None else self._is_negative.copy()

    def action_masks(self) -> np.ndarray:
        """Rows still selectable (sb3-contrib's ``MaskablePPO`` calls this)."""
        return self._mask.copy()

    # -- helpers --------------------------------------------------------------------------------
    def _drift(self, shape: int | tuple[()]) -> torch.Tensor | None:
        if self.logit_noise == 0.0:
            return None  # keeps the RNG stream of a frozen-discriminator env untouched
        return torch.from_numpy(np.asarray(self.np_random.normal(0.0, self.logit_noise, size=shape), dtype=np.float32))

    def _observation(self) -> np.ndarray:
        return np.where(self._mask[:, None], self._features, np.float32(0.0))

    def _check_action(self, action: object) -> int:
        arr = np.asarray(action)
        if arr.size != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"action must be one integer row index, got {action!r}")
        a = int(arr.reshape(()))
        if not 0 <= a < self.n_c:
            raise ValueError(f"action must be a row index in [0, {self.n_c}), got {a}")
        return a

    def _handed_in_features(self, features: object) -> np.ndarray:
        arr = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features)
        if arr.shape != (self.n_c, self.feature_dim):
            raise ValueError(
                f"options['features'] must have shape (n_c, d) = {(self.n_c, self.feature_dim)}, got {arr.shape}"
            )
        if not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(f"options['features'] must be floating point, got dtype {arr.dtype}")
        if not np.isfinite(arr).all():
            raise ValueError("options['features'] contains NaN or inf values")
        return arr.astype(np.float32, copy=True)
