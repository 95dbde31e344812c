"""Bridges to Stable-Baselines3: a features extractor for candidate sets and a VecEnv over the batched env."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecEnv
from torch import Tensor, nn

from agents.qnets import rows_present


class CandidateSetExtractor(BaseFeaturesExtractor):
    """SB3 features extractor for ``[n_c, d]`` observations, plugged in through ``policy_kwargs``.

    Each row is embedded by a shared encoder and joined with the mean embedding of the rows still
    present (the same set context as :class:`~agents.qnets.CandidateSetQNet`); the per-row codes
    of width ``row_dim`` are concatenated in row order, so SB3's heads map them to one output per row.
    """

    def __init__(self, observation_space: gym.spaces.Box, hidden_dim: int = 64, row_dim: int = 16) -> None:
        if len(observation_space.shape) != 2:
            raise ValueError(
                f"CandidateSetExtractor expects Box(shape=(n_c, d)) observations, got {observation_space.shape}"
            )
        n_c, d = observation_space.shape
        super().__init__(observation_space, features_dim=n_c * row_dim)
        self.row_encoder = nn.Sequential(
            nn.Linear(d, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim), nn.ReLU()
        )
        self.row_head = nn.Sequential(nn.Linear(2 * hidden_dim, row_dim), nn.ReLU())

    def forward(self, observations: Tensor) -> Tensor:
        mask = rows_present(observations).unsqueeze(-1).to(observations.dtype)
        phi = self.row_encoder(observations)
        context = (phi * mask).sum(-2) / mask.sum(-2).clamp_min(1.0)
        rows = self.row_head(torch.cat([phi, context.unsqueeze(-2).expand_as(phi)], dim=-1)) * mask
        return rows.flatten(-2)


class RefinementVecEnv(VecEnv):
    """SB3 ``VecEnv`` over a :class:`~mmir_env.batched.BatchedRefinementEnv` (SB3 rejects gymnasium VectorEnvs).

    Numpy in and out, autoreset with ``terminal_observation`` in the list-of-dict infos as SB3
    expects, and ``env_method("action_masks")`` for sb3-contrib's ``MaskablePPO``. The batched env
    must run in SAME_STEP mode with ``include_final_obs=True``.
    """

    def __init__(self, batched_env: Any) -> None:
        from gymnasium.vector import AutoresetMode

        if batched_env.autoreset_mode != AutoresetMode.SAME_STEP or not batched_env.include_final_obs:
            raise ValueError(
                "RefinementVecEnv needs a BatchedRefinementEnv with autoreset_mode=SAME_STEP and include_final_obs=True"
            )
        self.batched = batched_env
        self.render_mode = None
        super().__init__(batched_env.num_envs, batched_env.single_observation_space, batched_env.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        seed = self._seeds[0]
        obs, info = self.batched.reset(seed=seed)
        self._reset_seeds()
        masks = info["action_mask"].cpu().numpy()
        self.reset_infos = [{"action_mask": m} for m in masks]
        return obs.cpu().numpy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, rewards, terminated, truncated, info = self.batched.step(self._actions)
        dones = (terminated | truncated).cpu().numpy()
        invalid = info["invalid_action"].cpu().numpy()
        negative = info["is_negative"].cpu().numpy() if "is_negative" in info else None
        infos: list[dict[str, Any]] = [{"invalid_action": bool(v)} for v in invalid]
        if negative is not None:
            for i, v in enumerate(negative):
                infos[i]["is_negative"] = bool(v)
        if "final_obs" in info:
            final = info["final_obs"].cpu().numpy()
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = final[i]
                infos[i]["TimeLimit.truncated"] = False
        return obs.cpu().numpy(), rewards.cpu().numpy().astype(np.float32), dones, infos

    def close(self) -> None:
        self.batched.close()

    def _indices(self, indices: Any) -> Sequence[int]:
        return list(self._get_indices(indices))

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        value = getattr(self.batched, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self.batched, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
        idx = self._indices(indices)
        if method_name == "action_masks":
            masks = self.batched.action_masks()
            return [masks[i] for i in idx]
        result = getattr(self.batched, method_name)(*method_args, **method_kwargs)
        return [result for _ in idx]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False for _ in self._indices(indices)]
