"""Label-free validators: scores of a trained model that need no target labels, for model selection.

A user adapting to an unlabelled target cannot choose a design (a method, a weight, a step
budget) by target accuracy. A validator scores a model from what is available without target
labels (:class:`~experiments.validators.inputs.ValidationInputs`: labelled source validation rows,
unlabelled target rows, their features) and returns one float where **higher means a better
model**. The built-ins follow pytorch-adapt's validators, SKADA's scorers and Musgrave, Belongie
and Lim, "Three New Validators and a Large-Scale Benchmark Ranking for Unsupervised Domain
Adaptation" (arXiv:2208.07360, 2022); each module's docstrings give the formula and its paper.

Validators are plug-ins, as the loop's other parts: :data:`VALIDATORS` is a
:class:`~features.registry.Registry` of ``validator(inputs) -> float``, chosen by name
(``evaluation.validators = ["entropy", "snd"]``), extended with :func:`register_validator` or the
entry-point group ``mmir.validators``. An evaluation records validator ``NAME`` as the metric
``val/NAME`` (:func:`metric_name`); ``mmir report --rank-by NAME`` and ``mmir sweep --select-by NAME``
read it back (docs/validators.md).

This module imports no torch: the report and sweep commands name validators without loading it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from features.registry import Registry, UnknownNameError

if TYPE_CHECKING:
    from experiments.validators.collect import collect_validation_inputs, validation_metrics
    from experiments.validators.inputs import ValidationInputs

__all__ = [
    "METRIC_PREFIX",
    "VALIDATORS",
    "UnknownNameError",
    "ValidationInputs",
    "Validator",
    "collect_validation_inputs",
    "compute_validators",
    "metric_name",
    "register_validator",
    "resolve_validator",
    "validation_metrics",
]

#: ``validator(inputs) -> float``: higher is better.
Validator = Callable[["ValidationInputs"], float]

#: What an evaluation record calls a validator's value: ``val/NAME``.
METRIC_PREFIX = "val/"

VALIDATORS: Registry[Validator] = Registry(
    "validator",
    "evaluation.validators",
    {
        "source-accuracy": "experiments.validators.source:source_accuracy",
        "entropy": "experiments.validators.predictions:entropy",
        "im": "experiments.validators.predictions:information_maximisation",
        "snd": "experiments.validators.predictions:soft_neighbourhood_density",
        "bnm": "experiments.validators.predictions:batch_nuclear_norm",
        "dev": "experiments.validators.dev:deep_embedded_validation",
    },
    entry_point_group="mmir.validators",
)


def register_validator(name: str, validator: str | Validator, overwrite: bool = False) -> None:
    """Make ``evaluation.validators = [name]`` score models with ``validator(inputs) -> float`` (higher is better)."""
    VALIDATORS.register(name, validator, overwrite=overwrite)


def resolve_validator(name: str, key: str = "evaluation.validators") -> Validator:
    """The validator called ``name``; :class:`UnknownNameError` names ``key`` and lists the known validators."""
    return VALIDATORS.resolve(name, key)


def metric_name(name: str) -> str:
    """The metric an evaluation records validator ``name`` as: ``val/NAME``."""
    return METRIC_PREFIX + name


def compute_validators(names: Iterable[str], inputs: ValidationInputs) -> dict[str, float]:
    """``{name: validator(inputs)}`` for each of ``names``, in order (unknown names fail before any is computed)."""
    validators = {name: resolve_validator(name) for name in names}
    return {name: float(validator(inputs)) for name, validator in validators.items()}


def __getattr__(name: str) -> Any:
    # lazy: these need torch, which naming a validator (the report, the sweep, the config check) does not
    if name == "ValidationInputs":
        from experiments.validators.inputs import ValidationInputs

        return ValidationInputs
    if name in ("collect_validation_inputs", "validation_metrics"):
        from experiments.validators import collect

        return getattr(collect, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
