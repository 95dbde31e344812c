"""The instance-refinement MDP over one candidate set (paper section 3.2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from mmir_env.domains import DOMAIN_NAMES, SOURCE, TARGET, domain_id
from mmir_env.reward import REWARD_KINDS, check_tau, compute_reward
from mmir_env.scoring import discriminator_relevance, resolve_discriminator
from mmir_env.signals import ROW_INPUTS, EnvSignals, SignalInputs
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


def source_inputs(source: CandidateSource, signals: EnvSignals) -> set[str]:
    """The signal inputs a pool-backed env has for its sampled sets; checks ``row_inputs`` against the pools."""
    available = {"discriminator", *signals.row_inputs}
    if source.has_ground_truth:
        available.add("is_negative")
    if callable(getattr(source, "features", None)):
        available.add("reference")  # the other domain's pool
    signals.check_pool_sizes(source.num_samples)
    hint = ""
    if not signals.row_inputs:
        hint = " (pass row_inputs={'logits': {'source': [N_s, C], 'target': [N_t, C]}}; snapshots store no logits)"
    signals.check_available(available, f"{type(source).__name__}", hint)
    return available


def pool_reference(source: CandidateSource | None, domain: int) -> Tensor | None:
    """``[R, d]`` the other domain's pool (the ``density`` signal's reference), when the source holds one."""
    features = getattr(source, "features", None)
    return None if not callable(features) else features(TARGET if domain == SOURCE else SOURCE)


def handed_in_inputs(options: Mapping[str, Any], n_sets: int, n_c: int) -> dict[str, Tensor]:
    """Optional signal inputs handed in with candidate sets: ``logits``/``other_logits`` ``[n_sets, n_c, C]``, ``reference``."""
    out: dict[str, Tensor] = {}
    for key in (*ROW_INPUTS, "reference"):
        value = options.get(key)
        if value is None:
            continue
        tensor = torch.as_tensor(value.detach() if isinstance(value, Tensor) else value)
        if not tensor.is_floating_point() or not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{key} must hold finite floats")
        if key in ROW_INPUTS:
            if tensor.ndim not in (2, 3) or tensor.shape[:-1].numel() != n_sets * n_c:
                raise ValueError(f"{key} must be [n_sets, n_c, C] = [{n_sets}, {n_c}, C], got {tuple(tensor.shape)}")
            tensor = tensor.reshape(n_sets, n_c, tensor.shape[-1])
        out[key] = tensor.float()
    return out


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
    (any finite float32: sources reject NaN and inf). With ``observation_signals=[...]`` (``k``
    names, see "Relevance signals") it is ``(n_c, d + k)``: each row's ``d`` features followed by
    its ``k`` signal values, computed when the set is drawn or handed in (the discriminator column
    without drift) and zeroed with the row when it is selected out. Default: none, the paper's state.

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

    ## Relevance signals
    Per-row relevance signals (:mod:`mmir_env.signals`; higher = more relevant = keep) can form
    extra observation columns (``observation_signals``) and the reward (``reward_signals``). Built
    in, each from what an unsupervised run has, with the inputs it needs:

    - ``discriminator`` (D): eq. 3 above, with the drift of ``logit_noise`` in rewards.
    - ``entropy`` (logits): ``-H(softmax(logits))``: confident rows are relevant.
    - ``energy`` (logits): ``logsumexp(logits)``, the negative free energy (option ``temperature``).
    - ``transferability`` (D, logits): UAN's criterion with ``d' = P(source) = 1 - sigmoid(D(f))``
      and ``Hn = H(softmax(logits)) / log C``: ``Hn - d'`` for source rows, ``d' - Hn`` for target
      rows (option ``class_temperature``, default 1; no per-batch min-max normalisation).
    - ``modality-agreement`` (logits, other_logits): ``-TV`` between the two modalities' softmaxes,
      ``-1/2 sum_c |p_c - q_c|`` in [-1, 0].
    - ``density`` (reference): mean cosine similarity to the ``k`` (option, default 5) most similar
      rows of the other domain.
    - ``pseudo-label-loss`` (logits): ``max_c log softmax(logits)_c``, minus the cross-entropy of the
      classifier's own argmax pseudo-label (small loss = relevant).
    - ``oracle`` (is_negative): 1 for clean rows, 0 for planted negatives (bounds only).

    Where inputs come from: D is the env's discriminator; ``reference`` is the other domain's
    pool (or handed in); ``is_negative`` the source's ground truth (or handed in); ``logits`` and
    ``other_logits`` (the other modality's logits of the same clips) come from ``row_inputs``,
    pool-aligned per domain, or are handed in with the sets (``reset(options={"logits": ...})``).
    A snapshot stores no logits: on a :class:`~mmir_env.sources.SnapshotSource` only
    ``discriminator``, ``density`` and (with ground truth) ``oracle`` work unless ``row_inputs``
    are given; asking for another signal raises a ValueError naming the signal and the input.

    ``reward_signals={"discriminator": 1.0, "entropy": 0.5}`` rewards from a weighted combination
    (:class:`~mmir_env.signals.SignalReward`): one thresholded signal at weight 1 (``discriminator``,
    ``oracle``) is used raw with ``tau`` (``{"discriminator": 1.0}`` gives exactly the default
    rewards); any other combination sums the signals' z-scores within the set (over the rows still
    selectable), and ``threshold`` pays +1 below the set's mean (combined < 0), ``margin`` is
    ``-combined``, ``rank`` is unchanged. ``info["relevance"]`` is then the combined relevance.
    ``signal_options={"density": {"k": 10}}`` sets a signal's options.

    ## Starting State
    ``n_c`` distinct rows drawn from the source's pool of ``domain`` with ``self.np_random``, or a
    candidate set handed in with ``reset(options={"features": array [n_c, d]})`` (and, for the
    signals, optional ``"is_negative"`` ``[n_c]``, ``"logits"`` / ``"other_logits"`` ``[n_c, C]``,
    ``"reference"`` ``[R, d]``).

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
    ``reward`` ("threshold", "rank" or "margin"), ``logit_noise`` (0.0), ``observation_signals``
    (None), ``reward_signals`` (None: eq. 3), ``signal_options`` (None), ``row_inputs`` (None:
    ``{"logits" | "other_logits": {"source": [N_s, C], "target": [N_t, C]}}``).

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
        observation_signals: Sequence[str] | None = None,
        reward_signals: Mapping[str, float] | None = None,
        signal_options: Mapping[str, Mapping[str, Any]] | None = None,
        row_inputs: Mapping[str, Mapping[str, Any]] | None = None,
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
        self.signals = EnvSignals(observation_signals, reward_signals, signal_options, row_inputs)
        self.observation_signals = self.signals.observation
        self.reward_signals = None if self.signals.reward is None else dict(self.signals.reward.weights)
        self._available = source_inputs(source, self.signals)
        self._reference: Tensor | None = None  # the other domain's pool, fetched once when a signal needs it
        self.observation_space = spaces.Box(
            -FLOAT32_MAX,
            FLOAT32_MAX,
            shape=(self.n_c, self.feature_dim + len(self.observation_signals)),
            dtype=np.float32,
        )
        self.action_space = spaces.Discrete(self.n_c)
        self._features = np.zeros((self.n_c, self.feature_dim), dtype=np.float32)
        self._extras = np.zeros((self.n_c, len(self.observation_signals)), dtype=np.float32)
        self._inputs: dict[str, Tensor] = {}  # the set's signal inputs: logits [1, n_c, C], reference
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
            self._inputs = handed_in_inputs(options, 1, self.n_c)
            if self.signals.needs:
                given = {"discriminator", *self._inputs} | ({"is_negative"} if neg is not None else set())
                if "reference" in self._available:
                    given.add("reference")
                self.signals.check_available(given, "reset(options=...)", " (hand it in with the features)")
        else:
            batch = self.source.sample(self.np_random, self.domain, 1, self.n_c)
            self._features = batch.features[0].numpy().astype(np.float32, copy=True)
            self._is_negative = None if batch.is_negative is None else batch.is_negative[0].numpy().copy()
            index = batch.index[0].numpy().astype(np.int64, copy=True)
            self._inputs = self.signals.gather(DOMAIN_NAMES[self.domain], batch.index, torch.device("cpu"))
        if "reference" not in self._inputs and "reference" in self.signals.needs:
            if self._reference is None:
                self._reference = pool_reference(self.source, self.domain)
            self._inputs["reference"] = self._reference
        if self.observation_signals:
            self._extras = self.signals.extras(self._signal_inputs())[0].cpu().numpy().astype(np.float32)
        self._mask = np.ones(self.n_c, dtype=bool)
        self._steps = 0
        self._needs_reset = False
        return self._observation(), {"action_mask": self._mask.copy(), "candidate_index": index}

    def step(self, action: object) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("the episode has ended (or never started): call reset() before step()")
        a = self._check_action(action)
        valid = bool(self._mask[a])
        combination = self.signals.signal_reward
        if combination is not None:
            rel = self._combined_relevance(a)
        elif self.reward_kind == "rank":
            rel = discriminator_relevance(
                self.discriminator, torch.from_numpy(self._features), self.domain, self._drift(self.n_c)
            )
        else:  # the threshold and margin rewards need the chosen row only
            rel = torch.full((self.n_c,), float("nan"))
            rel[a] = discriminator_relevance(
                self.discriminator, torch.from_numpy(self._features[a]), self.domain, self._drift(())
            )
        if valid:
            tau = self.tau if combination is None else combination.threshold(self.tau)
            reward = compute_reward(self.reward_kind, rel.cpu(), torch.tensor(a), torch.from_numpy(self._mask), tau)
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

    @property
    def reward_threshold(self) -> float | Tensor:
        """What the threshold and margin rewards compare relevance with: ``tau``, or a 0-d tensor 0 (the set's
        mean) when ``reward_signals`` is a standardised combination (pass it to ``row_rewards`` / ``compute_reward``)."""
        combination = self.signals.signal_reward
        return self.tau if combination is None else combination.threshold(self.tau)

    def action_masks(self) -> np.ndarray:
        """Rows still selectable (sb3-contrib's ``MaskablePPO`` calls this)."""
        return self._mask.copy()

    # -- helpers --------------------------------------------------------------------------------
    def _drift(self, shape: int | tuple[()]) -> torch.Tensor | None:
        if self.logit_noise == 0.0:
            return None  # keeps the RNG stream of a frozen-discriminator env untouched
        return torch.from_numpy(np.asarray(self.np_random.normal(0.0, self.logit_noise, size=shape), dtype=np.float32))

    def _observation(self) -> np.ndarray:
        state = self._features if not self.observation_signals else np.concatenate([self._features, self._extras], -1)
        return np.where(self._mask[:, None], state, np.float32(0.0))

    def _signal_inputs(self, logit_noise: Tensor | None = None) -> SignalInputs:
        """The current set as one batch ``[1, n_c, ...]`` of signal inputs."""
        neg = None if self._is_negative is None else torch.from_numpy(self._is_negative)[None]
        return SignalInputs(
            features=torch.from_numpy(self._features)[None],
            domain=self.domain,
            discriminator=self.discriminator,
            logits=self._inputs.get("logits"),
            other_logits=self._inputs.get("other_logits"),
            reference=self._inputs.get("reference"),
            is_negative=neg,
            logit_noise=logit_noise,
        )

    def _combined_relevance(self, action: int) -> Tensor:
        """``[n_c]`` combined relevance for the reward: every row, or (raw threshold/margin) the chosen row only."""
        combination = self.signals.signal_reward
        assert combination is not None
        drifts = "discriminator" in combination.needs
        inputs = self._signal_inputs()
        if self.reward_kind == "rank" or combination.standardized:
            noise = self._drift(self.n_c) if drifts else None
            inputs = replace(inputs, logit_noise=None if noise is None else noise[None])
            return combination.relevance(inputs, torch.from_numpy(self._mask)[None])[0].cpu()
        noise = self._drift(()) if drifts else None  # as eq. 3's path: one draw for the chosen row
        chosen = replace(
            inputs.select_rows(torch.tensor([[action]])), logit_noise=None if noise is None else noise.reshape(1, 1)
        )
        rel = torch.full((self.n_c,), float("nan"))
        rel[action] = combination.relevance(chosen)[0, 0].cpu()
        return rel

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
