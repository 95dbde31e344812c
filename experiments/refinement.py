"""Instance refinement inside co-training: one S- or T-agent of one modality with its batched env."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from agents.dqn import RefinementDQN
from experiments.config import AgentConfig, EnvConfig
from mmir_env.batched import BatchedRefinementEnv


@dataclass(frozen=True)
class RefinementResult:
    keep: Tensor  # [B] bool: rows left in (for L_adv)
    mean_reward: float
    removed: int
    negatives_removed: int  # planted ground truth, when the batch carries it (else 0)
    negatives_present: int  # planted negatives in the batch (0 without ground truth)
    relevance: Tensor | None = None  # [B] eq. 3 relevance of every row before selection (for reports)


class DomainRefiner:
    """The S-agent (``domain="source"``) or T-agent of one modality, fed a training batch's features.

    The batch's ``B`` features are cut into ``B / n_c`` candidate sets and loaded into a
    :class:`~mmir_env.batched.BatchedRefinementEnv` whose reward comes from the modality's live
    discriminator; the agent selects ``E`` rows per set (masked epsilon-greedy), the transitions go
    to its replay, and the rows left in are returned for the adversarial loss (eq. 8).
    """

    def __init__(self, modality: str, domain: str, discriminator: nn.Module, feature_dim: int, batch_size: int,
                 agent: AgentConfig, env: EnvConfig, seed: int, device: torch.device) -> None:
        if batch_size % env.n_c:
            raise ValueError(f"the {domain} half-batch ({batch_size}) must be a multiple of n_c={env.n_c}")
        self.modality, self.domain = modality, domain
        self.n_c, self.E = env.n_c, env.E
        self.env = BatchedRefinementEnv(
            None, discriminator=discriminator, num_envs=batch_size // env.n_c, domain=domain, n_c=env.n_c, E=env.E,
            tau=env.tau_s if domain == "source" else env.tau_t, reward=env.reward, autoreset_mode="Disabled",
            device=device, copy=False, feature_dim=feature_dim, score_all_rows=True,
        )
        self.agent = RefinementDQN(
            n_c=env.n_c, feature_dim=feature_dim, q_net=agent.q_net, learning_rate=agent.lr, gamma=agent.gamma,
            epsilon=agent.epsilon if not isinstance(agent.epsilon, str) else agent.epsilon, buffer_size=agent.buffer_size,
            batch_size=agent.batch_size, learning_starts=agent.learning_starts, target_update_interval=agent.target_update_interval,
            loss=agent.loss, device=device, seed=seed,
        )

    def refine(self, features: Tensor, is_negative: Tensor | None = None) -> RefinementResult:
        """Select rows out of ``features: [B, d]`` (detached: the agents do not train the backbone)."""
        b, d = features.shape
        sets = features.detach().float().reshape(b // self.n_c, self.n_c, d)
        negatives = None if is_negative is None else is_negative.reshape(b // self.n_c, self.n_c)
        obs = self.env.load_candidate_sets(sets, negatives)
        relevance: Tensor | None = None  # every row's relevance before the first selection (reports)
        total_reward = 0.0
        negatives_removed = 0
        for _ in range(self.E):
            mask = self.env.mask.clone()
            state = obs.clone()  # the env zeroes the chosen rows of its live buffer in place
            actions = self.agent.act(state, mask)
            obs, rewards, terminated, _, info = self.env.step(actions)
            if relevance is None and "relevance_rows" in info:
                relevance = info["relevance_rows"].reshape(-1)
            self.agent.observe(state, actions, rewards, None, terminated, self.env.mask, obs_masks=mask)  # the replay copies
            total_reward += float(rewards.sum())
            if "is_negative" in info:
                negatives_removed += int(info["is_negative"].sum())
        keep = self.env.mask.reshape(-1).clone()
        return RefinementResult(keep=keep, mean_reward=total_reward / (sets.shape[0] * self.E), removed=int((~keep).sum()),
                                negatives_removed=negatives_removed,
                                negatives_present=0 if is_negative is None else int(is_negative.sum()), relevance=relevance)

    def loss(self) -> Tensor:
        """This agent's TD loss (eq. 6) attached to its Q-network, for L_dqn (eq. 7)."""
        return self.agent.update(optimize=False)


class RefinementStats:
    """What the agents did over stage 2, per agent: relevance histograms of kept and removed rows, removals per class.

    Class counts use the batches' labels, the target's included: they are statistics for reports and
    never reach a loss.
    """

    BINS = 20  # relevance in [0, 1]

    def __init__(self, num_classes: int) -> None:
        self.num_classes = int(num_classes)
        self.agents: dict[str, dict[str, list[int]]] = {}

    def add(self, key: str, result: RefinementResult, labels: Tensor | None) -> None:
        entry = self.agents.setdefault(key, {
            "kept_histogram": [0] * self.BINS, "removed_histogram": [0] * self.BINS,
            "seen_per_class": [0] * self.num_classes, "removed_per_class": [0] * self.num_classes,
        })
        keep = result.keep.cpu()
        if result.relevance is not None:
            bins = (result.relevance.cpu() * self.BINS).long().clamp(0, self.BINS - 1)
            for name, rows in (("kept_histogram", keep), ("removed_histogram", ~keep)):
                counts = torch.bincount(bins[rows], minlength=self.BINS).tolist()
                entry[name] = [a + b for a, b in zip(entry[name], counts)]
        if labels is not None:
            labels = labels.cpu().long()
            valid = (labels >= 0) & (labels < self.num_classes)
            for name, rows in (("seen_per_class", valid), ("removed_per_class", valid & ~keep)):
                counts = torch.bincount(labels[rows], minlength=self.num_classes).tolist()
                entry[name] = [a + b for a, b in zip(entry[name], counts)]

    def state_dict(self) -> dict[str, Any]:
        return {"bins": self.BINS, "num_classes": self.num_classes, "agents": self.agents}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_classes = int(state["num_classes"])
        self.agents = {k: {n: list(v) for n, v in entry.items()} for k, entry in state["agents"].items()}
