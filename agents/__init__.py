"""Policies that choose which sample to select out of a candidate set.

``make_agent(name, env)`` builds any registered algorithm; :class:`RefinementDQN` is ours.
"""

from agents.dqn import RefinementDQN
from agents.exploration import ConstantEpsilon, ExponentialEpsilon, LinearEpsilon
from agents.heuristics import HeuristicAgent, OracleAgent, RandomAgent, selectable_rows
from agents.qnets import CandidateSetQNet, FlatQNet
from agents.registry import make_agent, register_agent, registered_agents
from agents.sb3_adapters import CandidateSetExtractor, RefinementVecEnv

__all__ = [
    "CandidateSetExtractor",
    "CandidateSetQNet",
    "ConstantEpsilon",
    "ExponentialEpsilon",
    "FlatQNet",
    "HeuristicAgent",
    "LinearEpsilon",
    "OracleAgent",
    "RandomAgent",
    "RefinementDQN",
    "RefinementVecEnv",
    "make_agent",
    "register_agent",
    "registered_agents",
    "selectable_rows",
]
