"""Heuristic agents with SB3's ``predict`` surface: ``random`` (the floor) and ``oracle`` (the ceiling).

Both read which rows are still selectable from the observation itself (removed rows are all
zero, paper section 3.2) unless ``action_masks`` is passed, as sb3-contrib's ``MaskablePPO`` does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from mmir_env.domains import domain_id
from mmir_env.scoring import discriminator_relevance


def selectable_rows(obs: np.ndarray) -> np.ndarray:
    """Rows of ``obs: [..., n_c, d]`` that are not zeroed: ``[..., n_c]`` bool."""
    return np.any(obs != 0, axis=-1)


def _batched(obs: Any) -> tuple[np.ndarray, bool]:
    arr = np.asarray(obs, dtype=np.float32)
    if arr.ndim == 2:
        return arr[None], False
    if arr.ndim == 3:
        return arr, True
    raise ValueError(f"obs must be one candidate set [n_c, d] or a batch [B, n_c, d], got shape {arr.shape}")


def _masks(obs: np.ndarray, action_masks: Any) -> np.ndarray:
    if action_masks is None:
        return selectable_rows(obs)
    mask = np.asarray(action_masks, dtype=bool).reshape(obs.shape[:2])
    return mask


class HeuristicAgent:
    """Base of agents that need no training; ``learn`` is a no-op that returns ``self``."""

    name = "heuristic"

    def learn(self, total_timesteps: int = 0, **_: Any) -> HeuristicAgent:
        return self

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
        action_masks: Any = None,
    ) -> tuple[np.ndarray, None]:
        """Actions for one observation ``[n_c, d]`` (returns a 0-d array) or a batch ``[B, n_c, d]``."""
        obs, batched = _batched(observation)
        actions = self._act(obs, _masks(obs, action_masks))
        return (actions if batched else actions[0]), None

    def _act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class RandomAgent(HeuristicAgent):
    """Uniform choice among selectable rows: its precision equals the fraction of negatives."""

    name = "random"

    def __init__(self, env: Any = None, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def _act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        # Random keys on selectable rows, -1 on removed ones: argmax is a uniform selectable row.
        keys = np.where(mask, self.rng.random(mask.shape), -1.0)
        return keys.argmax(axis=-1).astype(np.int64)


class OracleAgent(HeuristicAgent):
    """Selects the row of lowest relevance (eq. 3) under the environment's discriminator.

    This is the best any agent can learn from the threshold reward: the reward is a function
    of relevance only. ``env`` is an instance-refinement env (wrapped or not), or pass
    ``discriminator`` and ``domain`` directly.
    """

    name = "oracle"

    def __init__(
        self,
        env: Any = None,
        discriminator: nn.Module | None = None,
        domain: int | str | None = None,
        seed: int | None = None,
    ) -> None:
        base = getattr(env, "unwrapped", env)
        self.discriminator = discriminator if discriminator is not None else getattr(base, "discriminator", None)
        dom = domain if domain is not None else getattr(base, "domain", None)
        if self.discriminator is None or dom is None:
            raise ValueError("OracleAgent needs an instance-refinement env, or discriminator= and domain=")
        self.domain = domain_id(dom)

    def _act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        rel = discriminator_relevance(self.discriminator, torch.from_numpy(obs), self.domain).cpu().numpy()
        return np.where(mask, rel, np.inf).argmin(axis=-1).astype(np.int64)
