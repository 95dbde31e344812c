"""All candidate sets of a batch as one tensor: the natively batched refinement environment."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor, nn

from mmir_env.domains import DOMAIN_NAMES, domain_id
from mmir_env.env import FLOAT32_MAX, check_int, check_logit_noise, check_refinement_args
from mmir_env.reward import margin_reward, rank_reward, refinement_reward
from mmir_env.scoring import discriminator_relevance, module_device, resolve_discriminator
from mmir_env.sources.base import ArraySource, CandidateSource, sample_distinct_rows


class BatchedRefinementEnv(VectorEnv):
    """``num_envs`` instance-refinement MDPs held as one tensor ``[num_envs, n_c, d]`` on ``device``.

    Same MDP as :class:`~mmir_env.env.InstanceRefinementEnv` (read its docstring), computed for
    all candidate sets at once: one discriminator forward per step scores every chosen row, masks
    are a ``[num_envs, n_c]`` bool tensor, and sampling new sets is one gather from the pool.

    ``reset``/``step`` return **torch tensors on ``device``** (observations ``[num_envs, n_c, d]``
    float32, rewards float32, terminations/truncations bool); actions may be a tensor or array.
    Step ``infos``: ``action_mask`` ``[num_envs, n_c]`` (of the returned observation),
    ``relevance`` (NaN where invalid), ``invalid_action``, ``is_negative`` (with ground truth);
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

        self.single_observation_space = spaces.Box(
            -FLOAT32_MAX, FLOAT32_MAX, shape=(self.n_c, self.feature_dim), dtype=np.float32
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
        self._obs = torch.zeros((n, self.n_c, self.feature_dim), device=dev)
        self._mask = torch.zeros((n, self.n_c), dtype=torch.bool, device=dev)
        self._index = torch.full((n, self.n_c), -1, dtype=torch.int64, device=dev)
        self._is_negative: Tensor | None = None
        self._steps = torch.zeros(n, dtype=torch.int64, device=dev)
        self._done = torch.ones(n, dtype=torch.bool, device=dev)  # needs a reset
        self._arange = torch.arange(n, device=dev)

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
        store a few integers per transition instead of ``n_c x d`` floats.
        """
        return self._pool

    @property
    def needs_reset(self) -> Tensor:
        """``[num_envs]`` bool: sets whose episode has ended and that were not reset yet."""
        return self._done

    @property
    def candidate_is_negative(self) -> Tensor | None:
        """``[num_envs, n_c]`` planted ground truth of the current sets, when known."""
        return self._is_negative

    def action_masks(self) -> np.ndarray:
        """Selectable rows as a numpy ``[num_envs, n_c]`` array (sb3-contrib's contract)."""
        return self._mask.cpu().numpy().copy()

    # -- gymnasium API --------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Tensor, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        if "features" in options:
            self.load_candidate_sets(options["features"], options.get("is_negative"))
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
        self, features: Tensor | np.ndarray, is_negative: Tensor | np.ndarray | None = None
    ) -> Tensor:
        """Replace all sets by ``features: [num_envs, n_c, d]`` (e.g. a training batch's) and return the observation."""
        feats = torch.as_tensor(features)
        expected = (self.num_envs, self.n_c, self.feature_dim)
        if tuple(feats.shape) != expected:
            raise ValueError(f"features must have shape (num_envs, n_c, d) = {expected}, got {tuple(feats.shape)}")
        if not feats.is_floating_point():
            raise TypeError(f"features must be floating point, got dtype {feats.dtype}")
        if not bool(torch.isfinite(feats).all()):
            raise ValueError("features contains NaN or inf values")
        self._obs.copy_(feats.detach())
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
        return self._out(self._obs)

    def step(self, actions: Tensor | np.ndarray) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        a = torch.as_tensor(actions, device=self.device).reshape(-1)
        if a.shape[0] != self.num_envs or a.is_floating_point() or a.dtype == torch.bool:
            raise ValueError(
                f"actions must be {self.num_envs} integer row indices, got shape {tuple(a.shape)} dtype {a.dtype}"
            )
        a = a.long()
        if bool(((a < 0) | (a >= self.n_c)).any()):
            raise ValueError(
                f"actions must be row indices in [0, {self.n_c}), got values in [{int(a.min())}, {int(a.max())}]"
            )
        stepping = ~self._done
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            restart = self._done.clone()
            if bool(restart.any()):
                self._refill(self._arange[restart])
        elif not bool(stepping.all()):
            raise RuntimeError("some candidate sets have ended and were not reset: call reset() (autoreset DISABLED)")

        ar = self._arange
        valid = self._mask[ar, a] & stepping
        chosen = self._obs[ar, a]  # [N, d]
        rel_rows = None
        if self.reward_kind == "rank":
            rel_rows = discriminator_relevance(
                self.discriminator, self._obs, self.domain, self._drift((self.num_envs, self.n_c))
            )
            rel = rel_rows[ar, a]
            rewards = rank_reward(rel_rows, a, self._mask)
        elif self.score_all_rows:
            rel_rows = discriminator_relevance(
                self.discriminator, self._obs, self.domain, self._drift((self.num_envs, self.n_c))
            )
            rel = rel_rows[ar, a]
            rewards = self._chosen_reward(rel)
        else:
            rel = discriminator_relevance(
                self.discriminator, chosen, self.domain, self._drift((self.num_envs,))
            )  # one forward
            rewards = self._chosen_reward(rel)
        rewards = torch.where(valid, rewards, torch.full_like(rewards, -1.0))
        rel = torch.where(valid, rel, torch.full_like(rel, float("nan")))
        infos: dict[str, Any] = {"relevance": rel, "invalid_action": ~valid & stepping}
        if self.score_all_rows and rel_rows is not None:
            infos["relevance_rows"] = rel_rows
        if self._is_negative is not None:
            infos["is_negative"] = self._is_negative[ar, a] & valid

        self._obs[ar, a] = torch.where(valid.unsqueeze(-1), torch.zeros_like(chosen), chosen)
        self._mask[ar, a] &= ~valid
        self._steps += stepping.long()
        terminated = stepping & (self._steps >= self.E)
        self._done |= terminated
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
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
            self._obs[envs] = self._pool[index]
            negative = None if self._pool_negative is None else self._pool_negative[index]
        else:
            batch = self.source.sample(self.np_random, self.domain, k, self.n_c)
            index = batch.index.to(self.device)
            self._obs[envs] = batch.features.to(self.device, torch.float32)
            negative = None if batch.is_negative is None else batch.is_negative.to(self.device)
        self._index[envs] = index
        if negative is not None:
            if self._is_negative is None or self._is_negative.shape != self._mask.shape:
                self._is_negative = torch.zeros_like(self._mask)
            self._is_negative[envs] = negative
        self._mask[envs] = True
        self._steps[envs] = 0
        self._done[envs] = False

    def _chosen_reward(self, rel: Tensor) -> Tensor:
        return margin_reward(rel, self.tau) if self.reward_kind == "margin" else refinement_reward(rel, self.tau)

    def _drift(self, shape: tuple[int, ...]) -> Tensor | None:
        if self.logit_noise == 0.0:
            return None
        return torch.from_numpy(self.np_random.normal(0.0, self.logit_noise, size=shape).astype(np.float32))

    def _out(self, tensor: Tensor) -> Tensor:
        return tensor.clone() if self.copy else tensor
