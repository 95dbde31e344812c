"""Typed configuration of a co-training run, loaded from TOML (unknown keys rejected by name).

The defaults are the paper's (section 4.1). Presets in ``experiments/configs/`` are layers over a
documented base per data kind (:mod:`experiments.config_layers`); ``mmir config show PRESET``
prints every resolved key and the file it came from. ``reference.toml`` mirrors the authors'
released code where the paper is silent or differs (docs/architecture.md, "What the paper leaves open").

Each field's type says what it accepts (``Literal`` choices, numbers, lists): :func:`from_dict`
checks types and names the key, :func:`validate` checks ranges and consistency. A method is named
one way only: the objectives it adds (``stage2.objectives``), its step strategy
(``stage2.strategy``) and its evaluation hooks (``evaluation.hooks``), each a registry entry.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from experiments.config_layers import CONFIG_DIR, ConfigError, Layers, apply_file
from experiments.registries import (  # tables plug-ins extend; no config import
    DATASETS,
    EVALUATION_HOOKS,
    MODELS,
    OBJECTIVES,
    REFINERS,
    STRATEGIES,
)
from features.data.negative_transfer import NegativeTransferParams

__all__ = [
    "CONFIG_DIR",
    "ConfigError",
    "RunConfig",
    "from_dict",
    "load_config",
    "migrate_legacy",
    "parse_overrides",
    "resolve_config",
    "validate",
]


@dataclass
class DataConfig:
    """Clips of two domains in the EPIC layout (``rgb/PXX/PXX_YY/frame_*.jpg``, ``flow/.../{u,v}``)."""

    # which datasets (experiments.registries.DATASETS): "epic" layout (also the synthetic video), "watch", ...
    kind: str = "epic"
    root: str = ""  # folder with rgb/ and flow/; empty for configs that only describe the method
    source: str = "D2"
    target: str = "D1"
    annotations: str = ""  # folder with DX_train.csv/DX_test.csv; empty: the MM-SADA splits shipped with mmir
    frames: int = 16  # paper 4.1: 16-frame windows
    size: int = 224
    synchronised: bool = False  # RGB and flow windows drawn independently in training (MM-SADA)
    num_workers: int = 4
    # EPIC JPEGs decoded in the loader workers ("cpu") or batched on the GPU in the main process ("gpu")
    decode: Literal["cpu", "gpu"] = "cpu"
    # finish the next batch on the device in a thread (a side CUDA stream) while the step runs: "auto" when
    # decode = "gpu" on CUDA, where finishing is nvjpeg work; "on" anywhere (the same batches, in the same order)
    prefetch: Literal["auto", "on", "off"] = "auto"
    # data.kind = "features": the snapshot whose target domain is the test split (data.root: the training snapshot)
    test_features: str = ""


@dataclass
class ModelConfig:
    """K backbones and heads; the loop is modality-agnostic, only this names modalities."""

    backbone: str = "i3d"
    modalities: list[str] = field(default_factory=lambda: ["rgb", "flow"])
    width: float = 1.0  # channel multiplier (tiny CPU models: 0.125-0.25)
    checkpoints: dict[str, str] = field(default_factory=dict)  # modality -> pytorch-i3d checkpoint
    num_classes: int = 8
    dropout: float = 0.5  # paper 4.1
    batchnorm: Literal["per-domain", "joint"] = "per-domain"  # MM-SADA: separate source and target forwards
    fusion: Literal["sum", "mean"] = "sum"  # eq. 1
    # I3D max pools: "native" (max_pool3d) or "separable" (2-D over frames, then 1-D over time: same outputs,
    # last-bit gradient differences where windows overlap in time; meant for channels_last_3d on CUDA)
    pool: Literal["native", "separable"] = "native"


@dataclass
class StageConfig:
    """One training stage: its losses, optimizer and length."""

    steps: int = 4000
    batch_size: int = 96  # stage 2: split equally between source and target
    lr: float = 0.01
    optimizer: Literal["adam", "sgd"] = "adam"  # paper; the released code used "sgd"
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-7
    # registered objectives (experiments.objectives) -> weight, added to L_cls (always on, eq. 1):
    # "adversarial" (eq. 8), "correspondence" (MM-SADA), "mmd" (DAN) or a plug-in's
    objectives: dict[str, float] = field(default_factory=dict)
    refinement: bool = False  # refiners (the paper's agents, eq. 7) choose the rows the adversarial objective keeps
    strategy: str = "standard"  # stage-2 step strategy (experiments.steps): "standard", "mcd" or a plug-in's
    mcd_generator_steps: int = 4  # the "mcd" strategy's generator updates per batch (Saito et al. use 4)


@dataclass
class DiscriminatorConfig:
    hidden_dim: int = 128  # paper 4.1
    negative_slope: float = 0.01  # LeakyReLU (the released code used ReLU)
    grl_schedule: Literal["constant", "dann"] = "constant"  # "dann": (2 / (1 + exp(-10 p)) - 1) * grl_scale
    grl_scale: float = 1.0  # released code: 0.2


@dataclass
class AgentConfig:
    """S-agents and T-agents; listing modalities switches agents on (Tables 2 and 3 are configs)."""

    # step-wise agent (agents.stepwise): mmir-dqn, dqn (SB3), qrdqn (sb3-contrib), ...
    algorithm: str = "mmir-dqn"
    # modalities with an S-/T-agent; a config file that leaves them out gets model.modalities (from_dict)
    s_agents: list[str] = field(default_factory=lambda: ["rgb", "flow"])
    t_agents: list[str] = field(default_factory=lambda: ["rgb", "flow"])
    q_net: Literal["set", "flat"] = "set"  # released code: "flat"
    epsilon: float | Literal["paper", "released"] = 0.5  # paper; "released": 0.01 + 0.89 exp(-c / 24000)
    gamma: float = 0.9
    lr: float = 1e-3
    buffer_size: int = 10_000  # released code: 200
    batch_size: int = 64
    learning_starts: int = 64
    target_update_interval: int = 48  # selections (released code)
    loss: Literal["mse", "huber"] = "mse"


@dataclass
class RefinementConfig:
    """Which policy refines the half-batches when ``stage2.refinement`` is on (experiments.refiners)."""

    policy: str = "agent"  # agent (the paper), none, random, relevance, ground-truth, or a registered one
    learn_only: bool = False  # agents act, are rewarded and learn, but remove nothing from L_adv (a control)
    # the relevance model of rewards: the GRL discriminator D^k (paper) or a "critic" on detached features
    relevance: Literal["discriminator", "critic"] = "discriminator"
    relabel: bool = False  # re-score replayed transitions with the current relevance model at update time
    warmup_steps: int = 0  # stage-2 steps in which the agents learn but remove nothing
    diagnostics: bool = True  # log the refinement diagnostics (experiments.refiners.diagnostics)
    # ... on every N-th stage-2 step (1: every step): they re-score replayed transitions and run an
    # extra greedy pass, about half of what refinement costs a step when taken every step
    diagnostics_every: int = 10
    # relevance signals (mmir_env.signals) whose AUC against the planted negatives is logged on
    # diagnostics steps as diag/auc/NAME (data with planted negatives only)
    signal_aucs: list[str] = field(default_factory=list)


@dataclass
class EnvConfig:
    n_c: int = 5
    E: int = 1
    tau_s: float = 0.5
    tau_t: float = 0.5
    reward: Literal["threshold", "rank", "margin"] = "threshold"
    # relevance signals (mmir_env.signals) of the reward, name -> weight; empty: eq. 3 (the paper)
    reward_signals: dict[str, float] = field(default_factory=dict)
    # signals appended to the agents' state as per-row columns (d + k wide); empty: the paper's state
    observation_signals: list[str] = field(default_factory=list)
    # per-signal options, e.g. {density = {k = 10}}
    signal_options: dict[str, dict[str, int | float | str]] = field(default_factory=dict)


@dataclass
class SnapshotConfig:
    every: int = 0  # steps of stage 2 between snapshots; 0: only at the end
    dtype: Literal["float16", "float32"] = "float16"
    enabled: bool = True


@dataclass
class EvaluationConfig:
    every: int = 50  # steps between the evaluations that are averaged (paper 4.2: every 50 near the end)
    last: int = 9  # report the mean of the last N evaluations (paper 4.2)
    # "protocol": the whole test split only at the last `last` evaluations `every` steps apart, ending
    # at the last step; "every": the whole test split every `every` steps (experiments.evaluation.schedule)
    schedule: Literal["protocol", "every"] = "protocol"
    monitor_every: int = 200  # "protocol": steps between cheap monitors on a fixed test subsample (0: none)
    monitor_windows: int = 200  # test windows the monitor evaluates (the same ones every time)
    # label-free validators (experiments.validators), recorded as val/NAME at every full evaluation
    validators: list[str] = field(default_factory=list)
    validator_rows: int = 512  # rows per domain the validators see (a fixed seeded subset); 0: all
    windows: int = 5  # test clips per segment, softmax of summed logits averaged
    batch_size: int = 16
    # registered evaluation hooks (experiments.evaluation), in order: "adabn" (AdaBN) or a plug-in's
    hooks: list[str] = field(default_factory=list)
    adabn_batches: int = 0  # the "adabn" hook's target batches for BatchNorm statistics; 0: the whole train split


@dataclass
class CheckpointConfig:
    every: int = 500
    # false: leave the agents' replay buffers out (most of a checkpoint's size); a resume is then
    # exact except that the agents start with an empty replay
    replay: bool = True


@dataclass
class DistributedConfig:
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # nccl on GPU, gloo on CPU
    sync_batchnorm: bool = False  # SyncBatchNorm: BatchNorm statistics over the global batch (under torchrun)


#: The ``[feature_benchmark]`` section: the generator's own parameter class (one definition of its fields).
FeatureBenchmarkConfig = NegativeTransferParams


def _stage2_defaults() -> StageConfig:
    # the paper's stage 2 (eq. 12): L_cls + L_adv on the rows the agents keep + L_dqn
    return StageConfig(steps=8000, batch_size=80, lr=0.001, objectives={"adversarial": 1.0}, refinement=True)


@dataclass
class RunConfig:
    """Everything a co-training run needs."""

    name: str = "run"
    method: str = "custom"  # label for reports (experiments.methods names; `mmir train --method` sets it)
    seed: int = 0
    output_dir: str = "runs"
    device: str = "auto"
    # torch threads of a run on the CPU (0: leave torch's default); results are bit-exact only at the same count
    threads: int = 1
    precision: Literal["fp32", "bf16"] = "fp32"  # "bf16": autocast
    # a step whose loss is NaN or inf: "stop" the run naming the step and the term, or "skip" its update
    nonfinite_loss: Literal["stop", "skip"] = "stop"
    plugins: list[str] = field(default_factory=list)  # .py files (relative to the TOML) or modules registering parts
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=_stage2_defaults)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    agents: AgentConfig = field(default_factory=AgentConfig)
    refinement: RefinementConfig = field(default_factory=RefinementConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    snapshots: SnapshotConfig = field(default_factory=SnapshotConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    checkpoints: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    feature_benchmark: FeatureBenchmarkConfig = field(default_factory=FeatureBenchmarkConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


# Switches of earlier versions, each now a registry entry: key -> what to write instead.
_LEGACY = {
    "adversarial": "{stage}.objectives = {{adversarial = 1.0}} (or leave 'adversarial' out of it)",
    "mmd_weight": "{stage}.objectives = {{mmd = WEIGHT}}",
    "correspondence_weight": "{stage}.objectives = {{correspondence = WEIGHT}}",
    "mcd": '{stage}.strategy = "mcd"',
}


def legacy_keys(data: dict[str, Any]) -> list[tuple[str, str]]:
    """``(dotted key, what to write instead)`` for every switch of an earlier version in a config table."""
    found = []
    for stage in ("stage1", "stage2"):
        section = data.get(stage)
        if isinstance(section, dict):
            found += [(f"{stage}.{k}", hint.format(stage=stage)) for k, hint in _LEGACY.items() if k in section]
    if isinstance(data.get("evaluation"), dict) and "adabn" in data["evaluation"]:
        found.append(("evaluation.adabn", 'evaluation.hooks = ["adabn"]'))
    return found


def migrate_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """A stored config of an earlier version (``config.json`` of a run) in today's keys, meaning the same.

    ``adversarial``, ``correspondence_weight`` and ``mmd_weight`` become objectives (in the order
    their terms always joined the loss), ``mcd = true`` the "mcd" strategy, ``evaluation.adabn``
    the "adabn" hook. Tables without such keys come back unchanged.
    """
    if not legacy_keys(data):
        return data
    data = json.loads(json.dumps(data))
    for stage in ("stage1", "stage2"):
        section = data.get(stage)
        if not isinstance(section, dict):
            continue
        builtin: dict[str, float] = {}
        if section.pop("adversarial", False):
            builtin["adversarial"] = 1.0
        for key, name in (("correspondence_weight", "correspondence"), ("mmd_weight", "mmd")):
            weight = section.pop(key, 0.0)
            if isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight > 0:
                builtin[name] = float(weight)
        if section.pop("mcd", False):
            section["strategy"] = "mcd"
        rest = section.get("objectives", {}) if isinstance(section.get("objectives", {}), dict) else {}
        section["objectives"] = {**builtin, **{k: v for k, v in rest.items() if k not in builtin}}
    evaluation = data.get("evaluation")
    if isinstance(evaluation, dict) and "adabn" in evaluation:
        hooks = list(evaluation.get("hooks", []))
        if evaluation.pop("adabn") and "adabn" not in hooks:
            hooks.insert(0, "adabn")
        evaluation["hooks"] = hooks
    return data


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    return {float: "a number", int: "an integer", str: "a string", bool: "true/false"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    """``value`` as ``annotation`` says (a number, a string, one of a Literal's choices, ...), or a ConfigError."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if isinstance(value, bool) or value not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _check_type(value, option, where)
            except ConfigError:
                continue
        names = " or ".join(_type_name(a) for a in typing.get_args(annotation))
        raise ConfigError(f"{where} must be {names}, got {type(value).__name__} {value!r}")
    if origin is list:
        (item,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {type(value).__name__} {value!r}")
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_t, val_t = typing.get_args(annotation)
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {type(value).__name__} {value!r}")
        return {_check_type(k, key_t, f"{where} key"): _check_type(v, val_t, f"{where}.{k}") for k, v in value.items()}
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {type(value).__name__} {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {type(value).__name__} {value!r}")
        return value
    if annotation in (str, bool):
        if not isinstance(value, annotation) or (annotation is not bool and isinstance(value, bool)):
            raise ConfigError(
                f"{where} must be {'true/false' if annotation is bool else 'a string'}, got {type(value).__name__} {value!r}"
            )
        return value
    raise ConfigError(f"{where}: unsupported type {annotation!r}")  # pragma: no cover


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key(s) {', '.join(prefix + k for k in unknown)}; valid keys{' of [' + where + ']' if where else ''}: {', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        path = f"{where}.{name}" if where else name
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = from_dict(annotation, value, path)
        else:
            kwargs[name] = _check_type(value, annotation, path)
    if cls is RunConfig:
        _default_agent_modalities(kwargs, data.get("agents", {}))
    try:
        return cls(**kwargs)
    except ValueError as err:  # a section that checks itself (the generator's parameters)
        raise ConfigError(f"{where}.{err}" if where else str(err)) from None


def _default_agent_modalities(kwargs: dict[str, Any], agents: Any) -> None:
    """``agents.s_agents`` / ``t_agents`` left out of a config: one agent per modality of ``model.modalities``."""
    model = kwargs.get("model", ModelConfig())
    section = kwargs.setdefault("agents", AgentConfig())
    for key in ("s_agents", "t_agents"):
        if not isinstance(agents, dict) or key not in agents:
            setattr(section, key, list(model.modalities))


def validate(config: RunConfig) -> RunConfig:
    """Check values (choices, ranges, consistency); raise :class:`ConfigError` naming the key."""
    flat = {f"{section}.{k}" if section else k: v for section, sub in _sections(config) for k, v in sub.items()}
    _check_finite(config.to_dict())
    for key, table in (("data.kind", DATASETS), ("model.backbone", MODELS)):
        if flat[key] not in table:
            raise ConfigError(f"{key} must be one of {', '.join(sorted(table))}, got {flat[key]!r}")
    for key in ("seed", "stage1.steps", "stage2.steps"):
        if flat[key] < 0:
            raise ConfigError(f"{key} must be >= 0, got {flat[key]}")
    for key in (
        "stage1.batch_size",
        "stage2.batch_size",
        "data.frames",
        "data.size",
        "evaluation.every",
        "evaluation.last",
        "evaluation.windows",
        "evaluation.monitor_windows",
        "checkpoints.every",
        "model.num_classes",
    ):
        if flat[key] < 1:
            raise ConfigError(f"{key} must be >= 1, got {flat[key]}")
    if config.stage2.batch_size % 2:
        raise ConfigError(
            f"stage2.batch_size must be even (split equally between source and target), got {config.stage2.batch_size}"
        )
    # BatchNorm in training mode needs two rows to normalise over (every shipped backbone has BatchNorm)
    if config.stage1.batch_size < 2:
        raise ConfigError(
            f"stage1.batch_size must be >= 2, got {config.stage1.batch_size}: BatchNorm in training needs two rows per batch"
        )
    if config.model.batchnorm == "per-domain" and config.stage2.batch_size < 4:
        raise ConfigError(
            f"stage2.batch_size must be >= 4, got {config.stage2.batch_size}: with model.batchnorm = 'per-domain' each "
            "half (source, target) goes through BatchNorm on its own, which needs two rows per half in training"
        )
    if config.threads < 0:
        raise ConfigError(f"threads must be >= 0 (0: torch's default), got {config.threads}")
    if config.stage2.refinement and (config.stage2.batch_size // 2) % config.env.n_c:
        raise ConfigError(
            f"stage2.batch_size / 2 = {config.stage2.batch_size // 2} must be a multiple of env.n_c = {config.env.n_c} (candidate sets)"
        )
    if not config.env.E < config.env.n_c or config.env.E < 1:
        raise ConfigError(f"env.E must satisfy 1 <= E < n_c = {config.env.n_c}, got {config.env.E}")
    for key in ("env.tau_s", "env.tau_t"):
        if not 0.0 < flat[key] < 1.0:
            raise ConfigError(f"{key} must lie strictly inside (0, 1), got {flat[key]}")
    mods = config.model.modalities
    if not mods or len(set(mods)) != len(mods):
        raise ConfigError(f"model.modalities must be non-empty and distinct, got {mods}")
    for key, listed in (
        ("agents.s_agents", config.agents.s_agents),
        ("agents.t_agents", config.agents.t_agents),
        ("model.checkpoints", list(config.model.checkpoints)),
    ):
        stray = [m for m in listed if m not in mods]
        if stray:
            raise ConfigError(f"{key} names {stray}, which are not in model.modalities {mods}")
    if config.model.width <= 0:
        raise ConfigError(f"model.width must be > 0, got {config.model.width}")
    eps = config.agents.epsilon
    if not isinstance(eps, str) and not 0.0 <= eps <= 1.0:
        raise ConfigError(f"agents.epsilon must be a number in [0, 1], 'paper' or 'released', got {eps!r}")
    for name in ("stage1", "stage2"):
        stage = getattr(config, name)
        if stage.refinement and "adversarial" not in stage.objectives:
            raise ConfigError(
                f"{name}.refinement = true needs the adversarial objective ({name}.objectives = {{adversarial = 1.0}}): "
                "the refiners choose the rows it keeps and their rewards come from its discriminator"
            )
        if stage.lr <= 0 or stage.weight_decay < 0 or stage.momentum < 0:
            raise ConfigError(f"{name}.lr must be > 0 and {name}.weight_decay, {name}.momentum >= 0")
        if stage.mcd_generator_steps < 1:
            raise ConfigError(f"{name}.mcd_generator_steps must be >= 1, got {stage.mcd_generator_steps}")
    if config.stage1.refinement:
        raise ConfigError("stage1 trains without refiners (eq. 11): stage1.refinement must be false")
    if config.refinement.diagnostics_every < 1:
        raise ConfigError(f"refinement.diagnostics_every must be >= 1, got {config.refinement.diagnostics_every}")
    if config.evaluation.validator_rows < 0:
        raise ConfigError(
            f"evaluation.validator_rows must be >= 0 (0: all rows), got {config.evaluation.validator_rows}"
        )
    if config.evaluation.monitor_every < 0:
        raise ConfigError(
            f"evaluation.monitor_every must be >= 0 (0: no monitor), got {config.evaluation.monitor_every}"
        )
    if config.evaluation.adabn_batches < 0:
        raise ConfigError(f"evaluation.adabn_batches must be >= 0, got {config.evaluation.adabn_batches}")
    if not 0.0 <= config.model.dropout < 1.0:
        raise ConfigError(f"model.dropout must lie in [0, 1), got {config.model.dropout}")
    if not 0.0 <= config.agents.gamma <= 1.0:
        raise ConfigError(f"agents.gamma must lie in [0, 1], got {config.agents.gamma}")
    if config.agents.batch_size < 1 or config.agents.buffer_size < config.agents.batch_size:
        raise ConfigError(
            f"agents.batch_size must be >= 1 and <= agents.buffer_size, got {config.agents.batch_size} and {config.agents.buffer_size}"
        )
    if config.snapshots.every < 0:
        raise ConfigError(f"snapshots.every must be >= 0, got {config.snapshots.every}")
    _validate_feature_benchmark(config.feature_benchmark)
    _validate_parts(config)
    return config


def _check_finite(data: dict[str, Any], where: str = "") -> None:
    """Every number of the config is finite: a NaN learning rate would otherwise pass every range check."""
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if isinstance(value, dict):
            _check_finite(value, path)
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{path} must be a finite number, got {value}")


def _validate_feature_benchmark(fb: FeatureBenchmarkConfig) -> None:
    """The generator's parameters (checked for every config: the defaults must be a valid benchmark)."""
    try:
        fb.check()
    except ValueError as err:
        raise ConfigError(f"feature_benchmark.{err}") from None


def _validate_parts(config: RunConfig) -> None:
    """The loop's named parts exist in their registries (objectives, strategies, refiners, agents, hooks)."""
    from experiments.plugins import PluginError, import_plugins

    try:
        import_plugins(config.plugins)  # registrations must exist before the names are checked
    except PluginError as err:
        raise ConfigError(f"plugins: {err}") from None
    from agents.stepwise import registered_stepwise_agents
    from experiments.objectives import resolve_objective

    for name in ("stage1", "stage2"):
        stage = getattr(config, name)
        for objective, weight in stage.objectives.items():
            if objective == "classification":
                raise ConfigError(f"{name}.objectives: classification (L_cls, eq. 1) is always on; leave it out")
            if objective not in OBJECTIVES:
                raise ConfigError(
                    f"{name}.objectives names {objective!r}, which is not a registered objective; known: {', '.join(sorted(OBJECTIVES))}"
                )
            if not weight >= 0:
                raise ConfigError(f"{name}.objectives.{objective} must be a weight >= 0, got {weight}")
            stages = getattr(resolve_objective(objective), "stages", (2,))
            if int(name[-1]) not in stages:
                raise ConfigError(
                    f"{name}.objectives names {objective!r}, which trains in stage {' and '.join(map(str, stages))} only"
                )
    if config.stage2.strategy not in STRATEGIES:
        raise ConfigError(
            f"stage2.strategy must be one of {', '.join(sorted(STRATEGIES))}, got {config.stage2.strategy!r}"
        )
    from experiments.steps import resolve_strategy

    if config.nonfinite_loss == "skip" and getattr(resolve_strategy(config.stage2.strategy), "replaces_step", False):
        raise ConfigError(
            f"nonfinite_loss = 'skip' needs the standard step; stage2.strategy = {config.stage2.strategy!r} updates "
            "inside its own step, so a batch cannot be skipped there: use nonfinite_loss = 'stop'"
        )
    if config.stage2.objectives and not getattr(resolve_strategy(config.stage2.strategy), "uses_objectives", True):
        raise ConfigError(
            f"stage2.strategy = {config.stage2.strategy!r} trains its own losses: stage2.objectives must be empty, "
            f"got {config.stage2.objectives}"
        )
    if config.stage1.strategy != "standard":
        raise ConfigError(
            f"stage1 trains with the standard step; stage1.strategy must be 'standard', got {config.stage1.strategy!r}"
        )
    if config.refinement.policy not in REFINERS:
        raise ConfigError(
            f"refinement.policy must be one of {', '.join(sorted(REFINERS))}, got {config.refinement.policy!r}"
        )
    agents = registered_stepwise_agents()
    if config.agents.algorithm not in agents:
        raise ConfigError(
            f"agents.algorithm must be one of {', '.join(agents)} (step-wise agents, agents.stepwise), got {config.agents.algorithm!r}"
        )
    if config.refinement.warmup_steps < 0:
        raise ConfigError(f"refinement.warmup_steps must be >= 0 stage-2 steps, got {config.refinement.warmup_steps}")
    if config.refinement.relabel and config.agents.algorithm != "mmir-dqn":
        raise ConfigError(
            f"refinement.relabel = true re-scores the replay inside mmir-dqn's TD loss; agents.algorithm = "
            f"{config.agents.algorithm!r} does not support it"
        )
    from experiments.validators import VALIDATORS  # no torch

    for name in config.evaluation.validators:
        if name not in VALIDATORS:
            raise ConfigError(
                f"evaluation.validators names {name!r}; known validators: {', '.join(VALIDATORS.names())}"
            )
    for hook in config.evaluation.hooks:
        if hook not in EVALUATION_HOOKS:
            raise ConfigError(f"evaluation.hooks names {hook!r}; known hooks: {', '.join(sorted(EVALUATION_HOOKS))}")
    _validate_signals(config)


# What co-training hands the relevance signals: "other_logits" only with a second modality.
_COTRAIN_INPUTS = {"discriminator", "logits", "reference", "is_negative"}


def _validate_signals(config: RunConfig) -> None:
    """``env.reward_signals``, ``env.observation_signals``, ``env.signal_options`` and ``refinement.signal_aucs``
    name registered signals (plug-ins imported) whose inputs co-training provides, with options they take."""
    from mmir_env.signals import SIGNALS, resolve_signal

    env, refinement = config.env, config.refinement
    available = _COTRAIN_INPUTS | ({"other_logits"} if len(config.model.modalities) > 1 else set())
    used: dict[str, list[str]] = {
        "env.reward_signals": list(env.reward_signals),
        "env.observation_signals": list(env.observation_signals),
        "refinement.signal_aucs": list(refinement.signal_aucs),
        "env.signal_options": list(env.signal_options),
    }
    for key, names in used.items():
        for name in names:
            if name not in SIGNALS:
                raise ConfigError(
                    f"{key} names {name!r}, which is not a registered relevance signal; known: {', '.join(SIGNALS.names())}"
                )
            missing = sorted(set(resolve_signal(name).needs) - available)
            if missing:
                raise ConfigError(
                    f"{key} names {name!r}, which needs {missing[0]!r}, which co-training with model.modalities "
                    f"{config.model.modalities} does not provide"
                )
        if key != "env.signal_options" and len(set(names)) != len(names):
            raise ConfigError(f"{key} must name distinct signals, got {names}")
    for name, options in env.signal_options.items():
        try:
            _try_signal(name, options)
        except ValueError as err:
            raise ConfigError(f"env.signal_options.{name}: {err}") from None
    if refinement.relabel:
        for name in env.reward_signals:
            extra = sorted(set(resolve_signal(name).needs) - {"discriminator"})
            if extra:
                raise ConfigError(
                    f"refinement.relabel = true re-scores replayed states, which hold features only: "
                    f"env.reward_signals names {name!r}, which needs {extra[0]!r}"
                )


def _try_signal(name: str, options: dict[str, Any]) -> None:
    """Run signal ``name`` with ``options`` on two tiny sets: a bad option fails here, before anything trains."""
    import torch

    from mmir_env.signals import SignalInputs, resolve_signal

    class SumLogit(torch.nn.Module):  # a discriminator without parameters: nothing draws from the global generator
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum(-1)

    signal = resolve_signal(name, "signal_options")
    signal.check_options(options)
    rows = torch.linspace(-1.0, 1.0, 24)
    inputs = SignalInputs(
        features=rows.reshape(2, 3, 4),
        domain=0,
        discriminator=SumLogit(),
        logits=rows[:18].reshape(2, 3, 3),
        other_logits=rows[6:].reshape(2, 3, 3),
        reference=rows[:20].reshape(5, 4),
        is_negative=torch.zeros(2, 3, dtype=torch.bool),
    )
    signal(inputs, **options)


def _sections(config: RunConfig) -> list[tuple[str, dict[str, Any]]]:
    top = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if not dataclasses.is_dataclass(getattr(config, f.name))
    }
    subs = [
        (f.name, dataclasses.asdict(getattr(config, f.name)))
        for f in dataclasses.fields(config)
        if dataclasses.is_dataclass(getattr(config, f.name))
    ]
    return [("", top), *subs]


def check_data_root(config: RunConfig) -> Path:
    """The data root as a Path, or a ConfigError saying what is missing (checked when a run starts)."""
    if not config.data.root:
        raise ConfigError("data.root is empty: set it to the folder that holds rgb/ and flow/")
    root = Path(config.data.root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"data.root {root} does not exist")
    missing = [m for m in ("rgb", "flow") if m in config.model.modalities and not (root / m).is_dir()]
    if missing:
        raise ConfigError(f"data.root {root} has no {' or '.join(m + '/' for m in missing)} folder (EPIC layout)")
    return root


def _annotation(dotted: str) -> Any:
    """The type of a dotted config key (``stage2.lr`` -> float), or None for a key RunConfig does not have."""
    node: Any = RunConfig
    for part in dotted.split("."):
        if dataclasses.is_dataclass(node):
            node = typing.get_type_hints(node).get(part)
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        else:
            return None
        if node is None:
            return None
    return node


def _accepts_str(annotation: Any) -> bool:
    """Whether a key of this type takes strings (a bare ``--set`` word is then a string)."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return any(isinstance(a, str) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return any(_accepts_str(a) for a in typing.get_args(annotation))
    return annotation is str


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as overrides, each VALUE in TOML syntax.

    A VALUE that is not TOML is taken as a bare string only for a key of string type (``--set
    name=run2``, ``--set data.root=/data/epic``); for any other key it is an error naming the item
    (``--set stage2.lr=1e-3x`` is a typo, not the string "1e-3x").
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError as err:
            annotation = _annotation(key)
            if annotation is not None and not _accepts_str(annotation):
                raise ConfigError(
                    f"--set {item}: {value!r} is not a TOML value ({err}); {key} expects "
                    f'{_type_name(annotation)}, e.g. 0.001, true, ["rgb"] or a "quoted string"'
                ) from None
            out[key] = (
                value  # a bare string for a string key (or an unknown key, reported by name when the config is built)
            )
    return out


def _override_text(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if isinstance(value, float):
        return f"{key}={value!r}"
    return f"{key}={json.dumps(value)}"


def _names_key(message: str, key: str) -> bool:
    """Whether an error message is about ``key`` (the dotted name as a whole word)."""
    return re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", message) is not None


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a config table, one level of sections deep (``stage2.objectives`` stays one value)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and not prefix:
            out.update(_flat(value, f"{key}."))
        else:
            out[prefix + key] = value
    return out


def _blame(err: ConfigError, layers: Layers, path: Path, overrides: dict[str, Any]) -> ConfigError:
    """The error with the layer that set the key it names: a ``--set`` item, the file or one of its bases."""
    named = sorted((k for k in layers.origin if _names_key(str(err), k)), key=len, reverse=True)
    if not named:
        return ConfigError(f"{path}: {err}")
    key, label = named[0], layers.origin[named[0]]
    if label == "--set":
        return ConfigError(f"--set {_override_text(key, overrides[key])} (on {path}): {err}")
    own = str(path.resolve()).endswith(label)
    return ConfigError(f"{path}: {err}" if own else f"{label} (a base of {path}): {err}")


def resolve_config(path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[RunConfig, dict[str, str]]:
    """A config file (after its bases and ``overrides``) as a validated :class:`RunConfig`, and for every
    dotted key the layer its value came from: a file (relative to ``experiments/configs`` when it lies
    there), ``--set`` or ``default``. Every error names the file, or the base or override to fix."""
    path, overrides = Path(path), dict(overrides or {})
    layers = Layers()
    apply_file(layers, path)
    for dotted, value in overrides.items():
        try:
            layers.set(dotted, value, "--set")
        except ConfigError as err:
            raise ConfigError(f"--set {_override_text(dotted, value)} (on {path}): {err}") from None
    for key, hint in legacy_keys(layers.data):
        raise _blame(ConfigError(f"{key} was removed: write {hint}"), layers, path, overrides)
    if layers.source_is_target and isinstance(layers.data.get("data", {}), dict):
        layers.set("data.source", layers.data.get("data", {}).get("target", DataConfig.target), "source_is_target")
    try:
        config = validate(from_dict(RunConfig, layers.data))
    except ConfigError as err:
        raise _blame(err, layers, path, overrides) from None
    origin = {key: layers.origin.get(key, "default") for key in _flat(config.to_dict())}
    for key in ("agents.s_agents", "agents.t_agents"):
        if origin[key] == "default":
            origin[key] = "default (model.modalities)"
    return config, origin


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a TOML file (and its bases) into a validated :class:`RunConfig`; every error names the file."""
    return resolve_config(path, overrides)[0]
