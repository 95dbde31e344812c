"""Policies that choose which sample to select out of a candidate set."""

from agents.heuristics import HeuristicAgent, OracleAgent, RandomAgent, selectable_rows

__all__ = ["HeuristicAgent", "OracleAgent", "RandomAgent", "selectable_rows"]
