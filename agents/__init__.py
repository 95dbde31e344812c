"""Policies that choose which sample to select out of a candidate set.

``make_agent(name, env)`` builds any registered algorithm; :class:`RefinementDQN` is ours.
"""

from agents.dqn import RefinementDQN
from agents.exploration import ConstantEpsilon, ExponentialEpsilon, LinearEpsilon
from agents.heuristics import HeuristicAgent, OracleAgent, RandomAgent, selectable_rows
from agents.qnets import CandidateSetQNet, FlatQNet
from agents.registry import AGENTS, make_agent, register_agent, registered_agents
from agents.sb3_adapters import CandidateSetExtractor, RefinementVecEnv
from agents.sb3_stepwise import SB3StepwiseDQN, SB3StepwiseQRDQN
from agents.stepwise import (
    STEPWISE_AGENTS,
    StepwiseAgent,
    StepwiseRefinementDQN,
    make_stepwise_agent,
    register_stepwise_agent,
    registered_stepwise_agents,
)

__all__ = [
    "AGENTS",
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
    "SB3StepwiseDQN",
    "SB3StepwiseQRDQN",
    "STEPWISE_AGENTS",
    "StepwiseAgent",
    "StepwiseRefinementDQN",
    "make_agent",
    "make_stepwise_agent",
    "register_agent",
    "register_stepwise_agent",
    "registered_agents",
    "registered_stepwise_agents",
    "selectable_rows",
]
