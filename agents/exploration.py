"""Epsilon schedules for masked epsilon-greedy selection (paper eq. 10), functions of the selection count."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


class EpsilonSchedule(Protocol):
    def __call__(self, selections: int) -> float: ...


@dataclass(frozen=True)
class ConstantEpsilon:
    """The paper's choice: a constant epsilon (0.5 in section 4.1)."""

    epsilon: float = 0.5

    def __call__(self, selections: int) -> float:
        return self.epsilon


@dataclass(frozen=True)
class LinearEpsilon:
    """From ``start`` to ``end`` linearly over ``duration`` selections, then ``end`` (SB3's DQN shape)."""

    start: float = 1.0
    end: float = 0.05
    duration: int = 10_000

    def __call__(self, selections: int) -> float:
        frac = min(1.0, selections / max(1, self.duration))
        return self.start + frac * (self.end - self.start)


@dataclass(frozen=True)
class ExponentialEpsilon:
    """The authors' released code: ``floor + scale * exp(-c / decay)`` = 0.01 + 0.89 exp(-c / 24000)."""

    floor: float = 0.01
    scale: float = 0.89
    decay: float = 24_000.0

    def __call__(self, selections: int) -> float:
        return self.floor + self.scale * math.exp(-selections / self.decay)


def make_schedule(spec: float | str | EpsilonSchedule) -> EpsilonSchedule:
    """A schedule from a float (constant), ``"paper"``, ``"released"`` or a callable."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        if not 0.0 <= spec <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {spec}")
        return ConstantEpsilon(float(spec))
    if spec == "paper":
        return ConstantEpsilon(0.5)
    if spec == "released":
        return ExponentialEpsilon()
    if callable(spec):
        return spec
    raise ValueError(f"epsilon must be a float in [0, 1], 'paper', 'released' or a callable, got {spec!r}")
