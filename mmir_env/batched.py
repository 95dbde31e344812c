"""All candidate sets of a batch as one tensor: the natively batched refinement environment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor, nn

from mmir_env.domains import DOMAIN_NAMES, domain_id
from mmir_env.env import (
    FLOAT32_MAX,
    check_int,
    check_logit_noise,
    check_refinement_args,
    handed_in_inputs,
    pool_reference,
    source_inputs,
)
from mmir_env.reward import margin_reward, rank_reward, refinement_reward
from mmir_env.scoring import discriminator_relevance, module_device, resolve_discriminator
from mmir_env.signals import EnvSignals, SignalInputs, SignalReward
from mmir_env.sources.base import ArraySource, CandidateSource, sample_distinct_rows


class BatchedRefinementEnv(VectorEnv):
    """``num_envs`` instance-refinement MDPs held as one tensor ``[num_envs, n_c, d]`` on ``device``.

    Same MDP as :class:`~mmir_env.env.InstanceRefinementEnv` (read its docstring), computed for
    all candidate sets at once: one discriminator forward per step scores every chosen row, masks
    are a ``[num_envs, n_c]`` bool tensor, and sampling new sets is one gather from the pool.

    ``reset``/``step`` return **torch tensors on ``device``** (observations ``[num_envs, n_c, d]``
    float32, rewards float32, terminations/truncations bool); actions may be a tensor or array.
    Step ``infos``: ``action_mask`` ``[num_envs, n_c]`` (of the returned observation),
    ``relevance`` (NaN where invalid; the combined relevance with ``reward_signals``),
    ``invalid_action``, ``is_negative`` (with ground truth);
    in ``SAME_STEP`` mode, for the sets that ended, ``final_obs`` and ``final_info["action_mask"]``
    (the terminal state, before the automatic reset) with the ``_final_obs``/``_final_info`` masks.

    :param source: the pool to sample from; may be None when candidate sets are always handed in
        (``load_candidate_sets`` or ``reset(options={"features": ...})``), with ``autoreset_mode``
        DISABLED -- the co-training loop's use.
    :param num_envs: candidate sets held at once.
    :param autoreset_mode: ``AutoresetMode`` (or its string value). Default SAME_STEP: with E = 1,
        NEXT_STEP would spend every other step on resets.
    :param device: where the sets live and are scored (default: the discriminator's device).
    :param copy: return copies of the observation tensor (True) or the live internal buffer, which
        the next ``step`` overwrites (False: faster, for loops that consume it at once).
    :param include_final_obs: put ``final_obs`` in SAME_STEP infos (one extra tensor copy per step;
        agents that rebuild the next state from ``final_info["action_mask"]`` turn it off).
    :param score_all_rows: score every row of the sets in the step's one discriminator forward and
        return it as ``info["relevance_rows"]`` (``[num_envs, n_c]``, before the selection; NaN-free
        only for rows still present). Same cost at small sizes, and callers that report on kept
        versus removed rows need no second forward.
    :param observation_signals: relevance signals appended as ``k`` per-row observation columns
        (observations ``[num_envs, n_c, d + k]``); :param reward_signals: ``{signal: weight}``, the
        reward's combination; :param signal_options: ``{signal: {option: value}}``;
        :param row_inputs: pool-aligned ``logits`` / ``other_logits`` per domain. All four as for
        :class:`~mmir_env.env.InstanceRefinementEnv` (its docstring documents every signal). Sets
        handed in bring their own inputs: ``load_candidate_sets(features, is_negative, logits=,
        other_logits=, reference=)``. With observation signals, :attr:`pool` is None (a pool row no
        longer is a whole state), so replay buffers store observations.
    Other arguments as for :class:`~mmir_env.env.InstanceRefinementEnv`.
    """

    def __init__(
        self,
        source: CandidateSource | None,
        discriminator: nn.Module | None = None,
        num_envs: int = 1024,
        domain: int | str = "source",
        n_c: int = 5,
        E: int = 1,
        tau: float = 0.5,
        reward: str = "threshold",
        logit_noise: float = 0.0,
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
        device: torch.device | str | None = None,
        copy: bool = True,
        include_final_obs: bool = True,
        score_all_rows: bool = False,
        feature_dim: int | None = None,
        observation_signals: Sequence[str] | None = None,
        reward_signals: Mapping[str, float] | None = None,
        signal_options: Mapping[str, Mapping[str, Any]] | None = None,
        row_inputs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.n_c, self.E, self.tau, self.reward_kind = check_refinement_args(n_c, E, tau, reward)
        self.num_envs = check_int("num_envs", num_envs, 1)
        self.domain = domain_id(domain)
        self.logit_noise = check_logit_noise(logit_noise)
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.metadata = {"autoreset_mode": self.autoreset_mode}
        if source is not None and not isinstance(source, CandidateSource):
            raise TypeError(f"source must implement CandidateSource or be None, got {type(source).__name__}")
        if source is None and self.autoreset_mode != AutoresetMode.DISABLED:
            raise ValueError("a BatchedRefinementEnv without a source cannot autoreset: pass autoreset_mode=DISABLED")
        self.source = source
        if source is not None:
            if feature_dim is not None and feature_dim != source.feature_dim:
                raise ValueError(f"feature_dim={feature_dim} disagrees with the source's {source.feature_dim}")
            feature_dim = source.feature_dim
            if self.n_c > source.num_samples(self.domain):
                raise ValueError(
                    f"n_c={self.n_c} exceeds the {source.num_samples(self.domain)} samples of the {DOMAIN_NAMES[self.domain]} pool"
                )
        elif feature_dim is None:
            raise ValueError("feature_dim is required when no source is given")
        self.feature_dim = int(feature_dim)
        self.discriminator = resolve_discriminator(discriminator, source, self.feature_dim)
        if device is None:
            device = module_device(self.discriminator)
        self.device = torch.device(device)
        self.copy = bool(copy)
        self.include_final_obs = bool(include_final_obs)
        self.score_all_rows = bool(score_all_rows)
        self.signals = EnvSignals(observation_signals, reward_signals, signal_options, row_inputs).to(self.device)
        self.observation_signals = self.signals.observation
        self.reward_signals = None if self.signals.reward is None else dict(self.signals.reward.weights)
        self._available = {"discriminator"}
        if source is not None:
            self._available = source_inputs(source, self.signals)
        elif self.signals.row_inputs:
            raise ValueError("row_inputs need a source (they are aligned with its pools); hand logits in with the sets")
        k = len(self.observation_signals)

        self.single_observation_space = spaces.Box(
            -FLOAT32_MAX, FLOAT32_MAX, shape=(self.n_c, self.feature_dim + k), dtype=np.float32
        )
        self.single_action_space = spaces.Discrete(self.n_c)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        # A pool that lives in memory is gathered on the device directly (no host round trip).
        self._pool: Tensor | None = None
        self._pool_negative: Tensor | None = None
        if isinstance(source, ArraySource):
            self._pool = source.features(self.domain).to(self.device)
            neg = source.is_negative(self.domain)
            self._pool_negative = None if neg is None else neg.to(self.device)
        n, dev = self.num_envs, self.device
        self._obs = torch.zeros((n, self.n_c, self.feature_dim + k), device=dev)  # the observation buffer
        self._feats = self._obs if k == 0 else self._obs[..., : self.feature_dim]  # its features (a view)
        self._rows: dict[str, Tensor] = {}  # per-set signal inputs: logits [num_envs, n_c, C]
        self._reference: Tensor | None = None  # the density signal's reference rows (other domain)
        self._pool_reference: Tensor | None = None
        self._mask = torch.zeros((n, self.n_c), dtype=torch.bool, device=dev)
        self._index = torch.full((n, self.n_c), -1, dtype=torch.int64, device=dev)
        self._is_negative: Tensor | None = None
        self._steps = torch.zeros(n, dtype=torch.int64, device=dev)
        self._done = torch.ones(n, dtype=torch.bool, device=dev)  # needs a reset
        self._arange = torch.arange(n, device=dev)
        self._group: Any = None  # the mmir_env.env_group.EnvGroup whose stacks hold this env's state, if any

    def share_state(self, obs: Tensor, mask: Tensor, steps: Tensor, done: Tensor, index: Tensor, group: Any) -> None:
        """Keep the state in ``obs [num_envs, n_c, d + k]``, ``mask``, ``steps``, ``done`` and ``index`` from now on
        (views of an :class:`~mmir_env.env_group.EnvGroup`'s stacks, so that the group loads and steps every env at
        once); the current state is copied in, and every method keeps working on it."""
        for name, new in (("obs", obs), ("mask", mask), ("steps", steps), ("done", done), ("index", index)):
            old = getattr(self, f"_{name}")
            if new.shape != old.shape or new.dtype != old.dtype or new.device != old.device:
                raise ValueError(
                    f"share_state: {name} must be {tuple(old.shape)} {old.dtype} on {old.device}, "
                    f"got {tuple(new.shape)} {new.dtype} on {new.device}"
                )
            new.copy_(old)
        self._obs, self._mask, self._steps, self._done, self._index = obs, mask, steps, done, index
        self._feats = self._obs if not self.observation_signals else self._obs[..., : self.feature_dim]
        self._group = group

    def loaded_by_group(self, is_negative: Tensor | None) -> None:
        """What :meth:`load_candidate_sets` does beyond the shared state, after the group wrote this env's sets into
        it: the sets' ground truth ``[num_envs, n_c]`` (kept, not copied) and no handed-in signal inputs."""
        self._is_negative = is_negative
        self._rows = {}
        self._reference = self._default_reference()

    @property
    def group(self) -> Any:
        """The :class:`~mmir_env.env_group.EnvGroup` that holds this env's state (:meth:`share_state`), or None."""
        return self._group

    # -- state views ----------------------------------------------------------------------------
    @property
    def mask(self) -> Tensor:
        """``[num_envs, n_c]`` bool: rows still selectable (live buffer)."""
        return self._mask

    @property
    def candidate_index(self) -> Tensor:
        """``[num_envs, n_c]`` pool rows of the current sets (-1 for handed-in sets; live buffer)."""
        return self._index

    @property
    def pool(self) -> Tensor | None:
        """``[P, d]`` features of the in-memory pool the sets are drawn from, on ``device`` (None otherwise).

        With a pool, ``candidate_index`` identifies a state completely, which lets replay buffers
        store a few integers per transition instead of ``n_c x d`` floats. None with observation
        signals: their columns are not in the pool.
        """
        return None if self.observation_signals else self._pool

    @property
    def needs_reset(self) -> Tensor:
        """``[num_envs]`` bool: sets whose episode has ended and that were not reset yet."""
        return self._done

    @property
    def candidate_is_negative(self) -> Tensor | None:
        """``[num_envs, n_c]`` planted ground truth of the current sets, when known."""
        return self._is_negative

    @property
    def reward_threshold(self) -> float | Tensor:
        """What the threshold and margin rewards compare relevance with: ``tau``, or a 0-d tensor 0 (the set's
        mean) when ``reward_signals`` is a standardised combination (pass it to ``row_rewards`` / ``compute_reward``)."""
        combination = self.signals.signal_reward
        return self.tau if combination is None else combination.threshold(self.tau)

    def signal_inputs(self) -> SignalInputs:
        """What the relevance signals see of the current sets (removed rows zeroed; no drift): to score any signal."""
        return self._signal_inputs()

    @torch.no_grad()
    def reward_relevance(self) -> Tensor:
        """``[num_envs, n_c]`` relevance of every row of the current sets as the reward sees it, without drift:
        the ``reward_signals`` combination (standardised over the selectable rows), else eq. 3."""
        combination = self.signals.signal_reward
        if combination is None:
            return discriminator_relevance(self.discriminator, self._feats, self.domain)
        return combination.relevance(self._signal_inputs(), self._mask)

    def action_masks(self) -> np.ndarray:
        """Selectable rows as a numpy ``[num_envs, n_c]`` array (sb3-contrib's contract)."""
        return self._mask.cpu().numpy().copy()

    # -- gymnasium API --------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Tensor, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        if "features" in options:
            extra = {key: options[key] for key in ("logits", "other_logits", "reference") if key in options}
            self.load_candidate_sets(options["features"], options.get("is_negative"), **extra)
        else:
            which = options.get("reset_mask")
            envs = (
                self._arange
                if which is None
                else self._arange[torch.as_tensor(which, dtype=torch.bool, device=self.device)]
            )
            self._refill(envs)
        return self._out(self._obs), {"action_mask": self._out(self._mask), "candidate_index": self._index.clone()}

    def load_candidate_sets(
        self,
        features: Tensor | np.ndarray,
        is_negative: Tensor | np.ndarray | None = None,
        *,
        logits: Tensor | np.ndarray | None = None,
        other_logits: Tensor | np.ndarray | None = None,
        reference: Tensor | np.ndarray | None = None,
        finite_checked: bool = False,
    ) -> Tensor:
        """Replace all sets by ``features: [num_envs, n_c, d]`` (e.g. a training batch's) and return the observation.

        For the relevance signals: ``logits`` / ``other_logits`` ``[num_envs, n_c, C]`` (or
        ``[num_envs * n_c, C]``, a half-batch's rows in order) and ``reference`` ``[R, d]`` or
        ``[num_envs, R, d]`` (features of the other domain; default: the other pool, if any).
        ``finite_checked``: the caller has checked that ``features`` are finite (a group of refiners
        checks its halves at once, one host synchronisation for all; see :func:`check_finite`).
        """
        feats = torch.as_tensor(features)
        expected = (self.num_envs, self.n_c, self.feature_dim)
        if tuple(feats.shape) != expected:
            raise ValueError(f"features must have shape (num_envs, n_c, d) = {expected}, got {tuple(feats.shape)}")
        if not feats.is_floating_point():
            raise TypeError(f"features must be floating point, got dtype {feats.dtype}")
        if not finite_checked:
            check_finite(feats)
        inputs = handed_in_inputs(
            {"logits": logits, "other_logits": other_logits, "reference": reference}, self.num_envs, self.n_c
        )
        if self.signals.needs:
            given = {"discriminator", *inputs} | ({"is_negative"} if is_negative is not None else set())
            if self.source is not None and "reference" in self._available:
                given.add("reference")
            self.signals.check_available(given, "load_candidate_sets()", " (pass it with the features)")
        self._feats.copy_(feats.detach())
        self._rows = {key: v.to(self.device) for key, v in inputs.items() if key != "reference"}
        self._reference = inputs["reference"].to(self.device) if "reference" in inputs else self._default_reference()
        self._mask.fill_(True)
        self._steps.zero_()
        self._done.fill_(False)
        self._index.fill_(-1)
        self._is_negative = (
            None
            if is_negative is None
            else torch.as_tensor(is_negative, dtype=torch.bool, device=self.device)
            .reshape(self.num_envs, self.n_c)
            .clone()
        )
        if self.observation_signals:
            self._obs[..., self.feature_dim :] = self.signals.extras(self._signal_inputs()).to(self.device)
        return self._out(self._obs)

    def step(self, actions: Tensor | np.ndarray) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        """Select ``actions`` (one row index per set) out of the sets: ``(obs, rewards, terminated, truncated, infos)``."""
        a = torch.as_tensor(actions, device=self.device).reshape(-1)
        if a.shape[0] != self.num_envs or a.is_floating_point() or a.dtype == torch.bool:
            raise ValueError(
                f"actions must be {self.num_envs} integer row indices, got shape {tuple(a.shape)} dtype {a.dtype}"
            )
        a = a.long()
        low, high = torch.stack(torch.aminmax(a)).tolist()  # one host synchronisation
        if low < 0 or high >= self.n_c:
            raise ValueError(f"actions must be row indices in [0, {self.n_c}), got values in [{low}, {high}]")
        # stepping: the sets this call steps; None when every set steps (the common case: fewer kernels)
        stepping: Tensor | None = None
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            restart = self._done.clone()
            if bool(restart.any()):
                stepping = ~restart
                self._refill(self._arange[restart])
        elif bool(self._done.any()):
            raise RuntimeError("some candidate sets have ended and were not reset: call reset() (autoreset DISABLED)")
        return self._advance(a, stepping)

    def step_unchecked(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        """:meth:`step` without its checks, for a caller that guarantees them: ``actions`` int64 ``[num_envs]`` on the
        device, each a selectable row (a masked argmax or draw), no set ended, ``autoreset_mode`` DISABLED.

        The same transition as :meth:`step` without its two host synchronisations (the action range and
        the ended sets): the co-training refiners select ``E`` times from freshly loaded sets, so
        neither check can fail there, and on a GPU each would stall the step.
        """
        if self.autoreset_mode != AutoresetMode.DISABLED:
            raise ValueError("step_unchecked() needs autoreset_mode DISABLED (no set is refilled); use step()")
        return self._advance(actions, None)

    def _advance(self, a: Tensor, stepping: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        """The transition of :meth:`step` for checked int64 actions ``a``; ``stepping``: the sets that step (None: all)."""
        ar = self._arange
        selectable = self._mask[ar, a]
        valid = selectable if stepping is None else selectable & stepping
        invalid = ~valid
        chosen = self._feats[ar, a]  # [N, d]
        rel_rows = None
        combination = self.signals.signal_reward
        if combination is not None:
            rel_rows, rel, rewards = self._combined_reward(a, combination)
        elif self.reward_kind == "rank":
            rel_rows = discriminator_relevance(
                self.discriminator, self._feats, self.domain, self._drift((self.num_envs, self.n_c))
            )
            rel = rel_rows[ar, a]
            rewards = rank_reward(rel_rows, a, self._mask)
        elif self.score_all_rows:
            rel_rows = discriminator_relevance(
                self.discriminator, self._feats, self.domain, self._drift((self.num_envs, self.n_c))
            )
            rel = rel_rows[ar, a]
            rewards = self._chosen_reward(rel)
        else:
            rel = discriminator_relevance(
                self.discriminator, chosen, self.domain, self._drift((self.num_envs,))
            )  # one forward
            rewards = self._chosen_reward(rel)
        rewards = rewards.masked_fill(invalid, -1.0)
        rel = rel.masked_fill(invalid, float("nan"))
        infos: dict[str, Any] = {
            "relevance": rel,
            "invalid_action": invalid if stepping is None else invalid & stepping,
        }
        if self.score_all_rows and rel_rows is not None:
            infos["relevance_rows"] = rel_rows
        if self._is_negative is not None:
            infos["is_negative"] = self._is_negative[ar, a] & valid

        row = chosen if not self.observation_signals else self._obs[ar, a]  # features and extras
        self._obs[ar, a] = row.masked_fill(valid.unsqueeze(-1), 0.0)
        # a valid selection leaves the set; an invalid one changes nothing: selectable & ~valid
        if stepping is None:
            self._mask[ar, a] = False
            self._steps += 1
            terminated = self._steps >= self.E
        else:
            self._mask[ar, a] = selectable & ~stepping
            self._steps += stepping.long()
            terminated = stepping & (self._steps >= self.E)
        self._done |= terminated
        if stepping is not None and self.autoreset_mode == AutoresetMode.NEXT_STEP:
            rewards = torch.where(stepping, rewards, torch.zeros_like(rewards))
        elif self.autoreset_mode == AutoresetMode.SAME_STEP and bool(terminated.any()):
            if self.include_final_obs:
                infos["final_obs"], infos["_final_obs"] = self._obs.clone(), terminated.clone()
            infos["final_info"], infos["_final_info"] = {"action_mask": self._mask.clone()}, terminated.clone()
            self._refill(self._arange[terminated])
        infos["action_mask"] = self._out(self._mask)
        truncated = torch.zeros_like(terminated)
        return self._out(self._obs), rewards.float(), terminated, truncated, infos

    # -- helpers --------------------------------------------------------------------------------
    def _refill(self, envs: Tensor) -> None:
        """Draw new candidate sets for the sub-environments ``envs`` (int64 indices)."""
        k = int(envs.numel())
        if k == 0:
            return
        if self.source is None:
            raise RuntimeError("no source to sample candidate sets from: hand them in with load_candidate_sets()")
        if self._pool is not None:
            index = torch.from_numpy(sample_distinct_rows(self.np_random, self._pool.shape[0], k, self.n_c)).to(
                self.device
            )
            self._feats[envs] = self._pool[index]
            negative = None if self._pool_negative is None else self._pool_negative[index]
        else:
            batch = self.source.sample(self.np_random, self.domain, k, self.n_c)
            index = batch.index.to(self.device)
            self._feats[envs] = batch.features.to(self.device, torch.float32)
            negative = None if batch.is_negative is None else batch.is_negative.to(self.device)
        self._index[envs] = index
        if negative is not None:
            if self._is_negative is None or self._is_negative.shape != self._mask.shape:
                self._is_negative = torch.zeros_like(self._mask)
            self._is_negative[envs] = negative
        if self.observation_signals or self.signals.signal_reward is not None:
            self._refill_signal_inputs(envs, index)
        self._mask[envs] = True
        self._steps[envs] = 0
        self._done[envs] = False

    def _chosen_reward(self, rel: Tensor, tau: float | Tensor | None = None) -> Tensor:
        tau = self.tau if tau is None else tau
        return margin_reward(rel, tau) if self.reward_kind == "margin" else refinement_reward(rel, tau)

    def _default_reference(self) -> Tensor | None:
        """The other domain's pool on ``device`` (fetched once), when a signal needs it and the source has one."""
        if self._pool_reference is None and "reference" in self.signals.needs and self.source is not None:
            ref = pool_reference(self.source, self.domain)
            self._pool_reference = None if ref is None else ref.to(self.device, torch.float32)
        return self._pool_reference

    def _refill_signal_inputs(self, envs: Tensor, index: Tensor) -> None:
        """Pool-aligned row inputs and observation columns of the freshly drawn sets ``envs``."""
        for key, rows in self.signals.gather(DOMAIN_NAMES[self.domain], index, self.device).items():
            held = self._rows.get(key)
            if held is None or held.shape[-1] != rows.shape[-1]:
                held = self._rows[key] = rows.new_zeros((self.num_envs, self.n_c, rows.shape[-1]))
            held[envs] = rows
        self._reference = self._default_reference()  # sets drawn from the pool: the other pool
        if self.observation_signals:
            self._obs[envs, :, self.feature_dim :] = self.signals.extras(self._signal_inputs(envs)).to(self.device)

    def _signal_inputs(self, envs: Tensor | None = None) -> SignalInputs:
        """Signal inputs of all sets, or of the sets ``envs``."""

        def part(t: Tensor | None) -> Tensor | None:
            return None if t is None or envs is None else t[envs]

        ref = self._reference
        return SignalInputs(
            features=self._feats if envs is None else self._feats[envs],
            domain=self.domain,
            discriminator=self.discriminator,
            logits=self._rows.get("logits") if envs is None else part(self._rows.get("logits")),
            other_logits=self._rows.get("other_logits") if envs is None else part(self._rows.get("other_logits")),
            reference=ref if ref is None or ref.ndim == 2 or envs is None else ref[envs],
            is_negative=self._is_negative if envs is None else part(self._is_negative),
        )

    def _combined_reward(self, a: Tensor, combination: SignalReward) -> tuple[Tensor | None, Tensor, Tensor]:
        """``(relevance_rows or None, chosen rows' relevance, rewards)`` under the signal combination."""
        drifts = "discriminator" in combination.needs
        inputs = self._signal_inputs()
        if self.reward_kind == "rank" or self.score_all_rows or combination.standardized:
            noise = self._drift((self.num_envs, self.n_c)) if drifts else None
            rel_rows = combination.relevance(replace(inputs, logit_noise=noise), self._mask)
            rel = rel_rows[self._arange, a]
            return rel_rows, rel, combination.reward(self.reward_kind, rel_rows, a, self._mask, self.tau)
        noise = self._drift((self.num_envs,)) if drifts else None  # as eq. 3's path: one draw per chosen row
        chosen = replace(inputs.select_rows(a.unsqueeze(-1)), logit_noise=None if noise is None else noise[:, None])
        rel = combination.relevance(chosen)[:, 0]
        return None, rel, self._chosen_reward(rel, combination.threshold(self.tau))

    def _drift(self, shape: tuple[int, ...]) -> Tensor | None:
        if self.logit_noise == 0.0:
            return None
        return torch.from_numpy(self.np_random.normal(0.0, self.logit_noise, size=shape).astype(np.float32))

    def _out(self, tensor: Tensor) -> Tensor:
        return tensor.clone() if self.copy else tensor


def check_finite(features: Tensor) -> None:
    """Raise ``ValueError`` unless every value of ``features`` is finite (one host synchronisation)."""
    if not bool(torch.isfinite(features).all()):
        raise ValueError("features contains NaN or inf values")
