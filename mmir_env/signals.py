"""Per-row relevance signals as plug-ins, their combination into a reward, and how well they see negatives.

A *signal* maps one batch of candidate sets (:class:`SignalInputs`, tensors ``[S, n_c, ...]``) to a
relevance ``[S, n_c]`` float where HIGHER means more relevant (keep): the row an agent should
select out is the least relevant one. Each signal declares the inputs it needs; every built-in one
uses only what an unsupervised run has (no target labels), except ``oracle`` (planted ground
truth, for bounds). Built in (:data:`SIGNALS`; ``C`` classes, ``p = softmax(logits)``):

- ``discriminator``: eq. 3, ``sigmoid(D(f))`` for a source row, ``1 - sigmoid(D(f))`` for a
  target row (:func:`~mmir_env.scoring.discriminator_relevance`, with the env's drift if any).
- ``entropy``: ``-H(p) = sum_c p_c log p_c``: confident rows are relevant.
- ``energy``: negative free energy ``T logsumexp(logits / T)`` (``temperature`` T, default 1):
  higher = more in-distribution (Liu et al. 2020).
- ``transferability``: UAN's sample-level criterion (You et al. 2019, eq. 6-7). With
  ``d' = P(source)`` from the discriminator (``1 - sigmoid(D(f))``: our source label is 0) and the
  entropy normalised by its maximum, ``Hn = H(softmax(logits / T)) / log C`` in [0, 1]:
  source rows ``w_s = Hn - d'``, target rows ``w_t = d' - Hn``; both in [-1, 1]. In terms of
  eq. 3's relevance ``r``: ``w_s = Hn + r - 1`` and ``w_t = r - Hn``. ``class_temperature`` T
  defaults to 1 (the paper's definition; UAN's released code divides the logits by 10). UAN
  min-max normalises ``w`` over a mini-batch before weighting its losses; we do not (a monotone
  map per batch: it changes no ranking, and the reward combination standardises per set).
  UAN's ``d'`` comes from a separate non-adversarial discriminator; here it is the env's one.
- ``modality-agreement``: ``-TV(p, q) = -1/2 sum_c |p_c - q_c|`` between this modality's softmax
  ``p`` and the other modality's ``q`` (in [-1, 0]; 0 = the two streams agree exactly).
- ``density``: mean cosine similarity to the ``k`` (default 5) most similar ``reference`` rows,
  the rows of the *other* domain (for a source row: target rows, and the reverse).
- ``pseudo-label-loss``: ``-CE(logits, argmax logits) = max_c log p_c``: a small loss on the
  classifier's own pseudo-label is relevant (CleanAdapt's small-loss criterion).
- ``oracle``: ``1`` for a clean row, ``0`` for a planted negative (``is_negative``); bounds only.

A reward is a named combination of signals (:class:`SignalReward`), e.g. ``{"discriminator": 1.0,
"entropy": 0.5}``: see its docstring for the standardisation and what each reward kind compares.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from features.registry import Registry
from mmir_env.domains import SOURCE, TARGET
from mmir_env.reward import REWARD_KINDS, compute_reward
from mmir_env.scoring import discriminator_relevance

__all__ = [
    "INPUT_NAMES",
    "ROW_INPUTS",
    "SIGNALS",
    "EnvSignals",
    "RelevanceSignal",
    "SignalInputs",
    "SignalReward",
    "check_signal_options",
    "combine_relevance",
    "negative_auc",
    "register_signal",
    "resolve_signal",
    "signal_values",
    "standardize_within_sets",
]

#: The optional inputs a signal may need (fields of :class:`SignalInputs`; features and domain are always there).
INPUT_NAMES: tuple[str, ...] = ("discriminator", "logits", "other_logits", "reference", "is_negative")
# Within-set spreads below this (relative to the values' size) are float noise: the set's rows tie.
_STD_TOLERANCE = 1e-6


@dataclass(frozen=True)
class SignalInputs:
    """One batch of candidate sets, as the signals see it.

    :ivar features: ``[S, n_c, d]`` the rows' features (this modality).
    :ivar domain: the rows' domain, ``SOURCE`` (0) / ``TARGET`` (1), or a ``[S, n_c]`` 0/1 tensor.
    :ivar discriminator: this modality's domain discriminator (logit > 0: target).
    :ivar logits: ``[S, n_c, C]`` this modality's classifier logits of the rows.
    :ivar other_logits: ``[S, n_c, C]`` the other modality's classifier logits of the same rows.
    :ivar reference: ``[R, d]`` (shared) or ``[S, R, d]`` (per set) features of the other domain.
    :ivar is_negative: ``[S, n_c]`` bool planted ground truth (only the ``oracle`` may read it).
    :ivar logit_noise: ``[S, n_c]`` added to the discriminator's logits: the envs' emulated drift.
    """

    features: Tensor
    domain: int | Tensor
    discriminator: nn.Module | None = None
    logits: Tensor | None = None
    other_logits: Tensor | None = None
    reference: Tensor | None = None
    is_negative: Tensor | None = None
    logit_noise: Tensor | None = None

    def __post_init__(self) -> None:
        if self.features.ndim != 3:
            raise ValueError(f"features must be [S, n_c, d], got shape {tuple(self.features.shape)}")
        rows = tuple(self.features.shape[:-1])
        for name in ("logits", "other_logits"):
            value = getattr(self, name)
            if value is not None and (value.ndim != 3 or tuple(value.shape[:-1]) != rows):
                raise ValueError(f"{name} must be [S, n_c, C] = [{rows[0]}, {rows[1]}, C], got {tuple(value.shape)}")
        for name in ("is_negative", "logit_noise"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != rows:
                raise ValueError(f"{name} must be [S, n_c] = {list(rows)}, got {tuple(value.shape)}")
        ref = self.reference
        if ref is not None and (ref.ndim not in (2, 3) or ref.shape[-1] != self.features.shape[-1]):
            raise ValueError(
                f"reference must be [R, d] or [S, R, d] with d={self.features.shape[-1]}, got {tuple(ref.shape)}"
            )

    def select_rows(self, index: Tensor) -> SignalInputs:
        """The inputs of rows ``index: [S, m]`` of every set (per-row tensors gathered; reference kept)."""

        def take(t: Tensor | None) -> Tensor | None:
            if t is None:
                return None
            idx = index.to(t.device)
            if t.ndim == 3:
                return t.gather(1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
            return t.gather(1, idx)

        domain = take(self.domain) if isinstance(self.domain, Tensor) else self.domain
        return replace(
            self,
            features=take(self.features),  # type: ignore[arg-type]
            domain=domain,  # type: ignore[arg-type]
            logits=take(self.logits),
            other_logits=take(self.other_logits),
            is_negative=take(self.is_negative),
            logit_noise=take(self.logit_noise),
        )


@dataclass(frozen=True)
class RelevanceSignal:
    """A named per-row relevance: ``fn(inputs, **options) -> [S, n_c]``, higher = more relevant (keep).

    :ivar needs: the optional inputs it reads (names of :data:`INPUT_NAMES`).
    :ivar options: keyword options ``fn`` takes (e.g. ``("k",)`` for ``density``).
    :ivar thresholded: its raw values are on eq. 3's [0, 1] relevance scale, so eq. 4's ``tau``
        means something for them (``discriminator``, ``oracle``); see :class:`SignalReward`.
    """

    name: str
    fn: Callable[..., Tensor]
    needs: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    thresholded: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.needs) - set(INPUT_NAMES))
        if unknown:
            raise ValueError(f"signal {self.name!r} needs unknown inputs {unknown}; inputs are {INPUT_NAMES}")

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Raise a one-line ValueError for an option this signal does not take."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"signal {self.name!r} takes options {list(self.options)}, got unknown {unknown}")

    def __call__(self, inputs: SignalInputs, **options: Any) -> Tensor:
        for name in self.needs:
            if getattr(inputs, name) is None:
                raise ValueError(f"signal {self.name!r} needs input {name!r}, which was not given")
        self.check_options(options)
        return self.fn(inputs, **options).float()


# -- the built-in signals ------------------------------------------------------------------------------------
def _discriminator(inputs: SignalInputs) -> Tensor:
    assert inputs.discriminator is not None
    return discriminator_relevance(inputs.discriminator, inputs.features, inputs.domain, inputs.logit_noise)


def _entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    log_p = F.log_softmax(logits.float() / temperature, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def _neg_entropy(inputs: SignalInputs) -> Tensor:
    assert inputs.logits is not None
    return -_entropy(inputs.logits)


def _energy(inputs: SignalInputs, temperature: float = 1.0) -> Tensor:
    assert inputs.logits is not None
    return temperature * torch.logsumexp(inputs.logits.float() / temperature, dim=-1)


def _transferability(inputs: SignalInputs, class_temperature: float = 1.0) -> Tensor:
    assert inputs.logits is not None
    num_classes = inputs.logits.shape[-1]
    if num_classes < 2:
        raise ValueError("signal 'transferability' needs logits of at least 2 classes (H / log C)")
    h_norm = _entropy(inputs.logits, class_temperature) / math.log(num_classes)
    r = _discriminator(inputs).to(h_norm.device)  # eq. 3: P(target) for source rows, P(source) for target rows
    w_source = h_norm + r - 1.0  # Hn - d', d' = P(source) = 1 - r
    w_target = r - h_norm  # d' - Hn, d' = r
    return _by_domain(inputs.domain, w_source, w_target)


def _modality_agreement(inputs: SignalInputs) -> Tensor:
    assert inputs.logits is not None and inputs.other_logits is not None
    p = F.softmax(inputs.logits.float(), dim=-1)
    q = F.softmax(inputs.other_logits.float().to(p.device), dim=-1)
    return -0.5 * (p - q).abs().sum(-1)


def _density(inputs: SignalInputs, k: int = 5) -> Tensor:
    assert inputs.reference is not None
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"signal 'density' option k must be an int >= 1, got {k!r}")
    x = F.normalize(inputs.features.float(), dim=-1)  # zero rows stay zero: similarity 0
    ref = F.normalize(inputs.reference.float().to(x.device), dim=-1)
    sims = x @ ref.transpose(-1, -2)  # [S, n_c, R]: one matmul (a shared [R, d] broadcasts over sets)
    k = min(k, sims.shape[-1])
    return sims.topk(k, dim=-1).values.mean(-1)


def _pseudo_label_loss(inputs: SignalInputs) -> Tensor:
    assert inputs.logits is not None
    return F.log_softmax(inputs.logits.float(), dim=-1).amax(-1)  # -CE(logits, argmax)


def _oracle(inputs: SignalInputs) -> Tensor:
    assert inputs.is_negative is not None
    return 1.0 - inputs.is_negative.float()


def _by_domain(domain: int | Tensor, source_value: Tensor, target_value: Tensor) -> Tensor:
    if isinstance(domain, Tensor):
        return torch.where(domain.to(source_value.device, torch.bool), target_value, source_value)
    if domain == SOURCE:
        return source_value
    if domain == TARGET:
        return target_value
    raise ValueError(f"domain must be {SOURCE} (source) or {TARGET} (target), got {domain!r}")


#: Relevance signals by name (``observation_signals`` / ``reward_signals`` of the envs name them).
SIGNALS: Registry[RelevanceSignal] = Registry(
    "relevance signal",
    "reward_signals",
    {
        "discriminator": RelevanceSignal("discriminator", _discriminator, ("discriminator",), thresholded=True),
        "entropy": RelevanceSignal("entropy", _neg_entropy, ("logits",)),
        "energy": RelevanceSignal("energy", _energy, ("logits",), ("temperature",)),
        "transferability": RelevanceSignal(
            "transferability", _transferability, ("discriminator", "logits"), ("class_temperature",)
        ),
        "modality-agreement": RelevanceSignal("modality-agreement", _modality_agreement, ("logits", "other_logits")),
        "density": RelevanceSignal("density", _density, ("reference",), ("k",)),
        "pseudo-label-loss": RelevanceSignal("pseudo-label-loss", _pseudo_label_loss, ("logits",)),
        "oracle": RelevanceSignal("oracle", _oracle, ("is_negative",), thresholded=True),
    },
)


def register_signal(signal: RelevanceSignal, overwrite: bool = False) -> None:
    """Make ``signal.name`` usable in ``observation_signals`` and ``reward_signals``."""
    if not isinstance(signal, RelevanceSignal):
        raise TypeError(f"register a RelevanceSignal, got {type(signal).__name__}")
    SIGNALS.register(signal.name, signal, overwrite=overwrite)


def resolve_signal(name: str, key: str = "reward_signals") -> RelevanceSignal:
    """The registered signal ``name`` (an unknown name lists the choices)."""
    return SIGNALS.resolve(name, key)


def signal_values(
    names: Iterable[str], inputs: SignalInputs, options: Mapping[str, Mapping[str, Any]] | None = None
) -> Tensor:
    """``[S, n_c, k]``: the signals ``names`` side by side (``options``: signal name -> its keyword options)."""
    options = options or {}
    columns = [resolve_signal(n)(inputs, **options.get(n, {})) for n in names]
    if not columns:
        return inputs.features.new_zeros((*inputs.features.shape[:-1], 0))
    return torch.stack([c.to(columns[0].device) for c in columns], dim=-1)


# -- combination and reward ----------------------------------------------------------------------------------
def standardize_within_sets(values: Tensor, selectable: Tensor | None = None) -> Tensor:
    """Z-scores ``[S, n_c]`` per set over its selectable rows (population std); a set whose rows tie gets 0.

    Rows outside ``selectable`` are standardised with the selectable rows' mean and std (their
    values matter to no reward), and their own values never enter the statistics.
    """
    values = values.float()
    if selectable is None:
        selectable = torch.ones_like(values, dtype=torch.bool)
    selectable = selectable.to(values.device, torch.bool)
    count = selectable.sum(-1, keepdim=True).clamp(min=1)
    present = torch.where(selectable, values, torch.zeros_like(values))  # a removed row's inf never enters
    mean = present.sum(-1, keepdim=True) / count
    centred = values - mean
    var = (torch.where(selectable, centred, torch.zeros_like(centred)) ** 2).sum(-1, keepdim=True) / count
    std = var.sqrt()
    spread = std > _STD_TOLERANCE * (1.0 + mean.abs())
    return torch.where(spread, centred / torch.where(spread, std, torch.ones_like(std)), torch.zeros_like(centred))


def combine_relevance(
    values: Mapping[str, Tensor],
    weights: Mapping[str, float],
    selectable: Tensor | None = None,
    standardize: bool = True,
) -> Tensor:
    """``sum_i w_i z_i``: the weighted sum of the signals' per-set z-scores (raw values with ``standardize=False``)."""
    total: Tensor | None = None
    for name, weight in weights.items():
        v = standardize_within_sets(values[name], selectable) if standardize else values[name].float()
        term = v if weight == 1.0 else float(weight) * v
        total = term if total is None else total + term.to(total.device)
    if total is None:
        raise ValueError("a combination needs at least one signal")
    return total


@dataclass(frozen=True)
class SignalReward:
    """Eq. 4's reward computed from a weighted combination of relevance signals.

    ``weights`` (e.g. ``{"discriminator": 1.0, "entropy": 0.5}``) name registered signals;
    ``options`` give a signal its keyword options (``{"density": {"k": 10}}``).

    **Relevance.** A single *thresholded* signal at weight 1 (``{"discriminator": 1.0}``,
    ``{"oracle": 1.0}``) is used raw: its values are on eq. 3's [0, 1] scale, so every reward kind
    means what it means for the paper's relevance (with ``{"discriminator": 1.0}`` the rewards are
    exactly the default env's). Any other combination is *standardised*: each signal is z-scored
    within each candidate set over the rows still selectable, then summed with its weight, so
    signals of different scales and units add up and a weight says how much a signal counts.

    **Reward kinds** on the combined relevance ``c`` of the chosen row:
    ``rank``: +1 if ``c`` is the lowest of the selectable rows (unchanged: any scale works).
    ``threshold``: +1 if ``c < threshold`` else -1, and ``margin``: ``threshold - c``, where
    ``threshold`` is ``tau`` for a raw combination and ``0`` for a standardised one: the z-scores
    have mean 0 over the selectable rows, so 0 is the set's mean combined relevance, and the
    threshold reward pays for selecting a row below its set's mean (the margin: by how many
    weighted standard deviations). ``tau`` is then unused.
    """

    weights: Mapping[str, float]
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.weights, Mapping) or not self.weights:
            raise ValueError(
                f"reward_signals must be a non-empty mapping of signal name -> weight, got {self.weights!r}"
            )
        weights: dict[str, float] = {}
        for name, w in self.weights.items():
            resolve_signal(name)
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                raise ValueError(f"reward_signals[{name!r}] must be a finite float weight, got {w!r}")
            weights[name] = float(w)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "options", check_signal_options(self.options))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.weights)

    @property
    def standardized(self) -> bool:
        """False for one thresholded signal at weight 1 (raw values), True otherwise (per-set z-scores)."""
        if len(self.weights) != 1:
            return True
        ((name, weight),) = self.weights.items()
        return not (weight == 1.0 and resolve_signal(name).thresholded)

    @property
    def is_eq3(self) -> bool:
        """The paper's relevance exactly: ``{"discriminator": 1.0}``."""
        return dict(self.weights) == {"discriminator": 1.0}

    @property
    def needs(self) -> set[str]:
        """The optional inputs the combination reads."""
        return {n for name in self.weights for n in resolve_signal(name).needs}

    def threshold(self, tau: float) -> float | Tensor:
        """What ``threshold`` / ``margin`` compare with: ``tau`` raw, a 0-d tensor 0 (the set's mean) standardised."""
        return torch.zeros(()) if self.standardized else tau

    def relevance(self, inputs: SignalInputs, selectable: Tensor | None = None) -> Tensor:
        """``[S, n_c]`` combined relevance of the rows of ``inputs`` (standardised over ``selectable``)."""
        values = {n: resolve_signal(n)(inputs, **self.options.get(n, {})) for n in self.weights}
        return combine_relevance(values, self.weights, selectable, self.standardized)

    def reward(self, kind: str, relevance_rows: Tensor, action: Tensor, selectable: Tensor, tau: float) -> Tensor:
        """Reward of selecting ``action: [S]`` from rows of combined relevance ``[S, n_c]`` under ``kind``."""
        if kind not in REWARD_KINDS:
            raise ValueError(f"reward must be one of {REWARD_KINDS}, got {kind!r}")
        return compute_reward(kind, relevance_rows, action, selectable, self.threshold(tau))


def check_signal_options(options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Validate ``{signal name: {option: value}}``: known signals, options each signal takes."""
    out: dict[str, dict[str, Any]] = {}
    for name, opts in (options or {}).items():
        signal = resolve_signal(name, "signal_options")
        if not isinstance(opts, Mapping):
            raise ValueError(f"signal_options[{name!r}] must be a mapping of option -> value, got {opts!r}")
        signal.check_options(opts)
        out[name] = dict(opts)
    return out


# -- how well a relevance sees the planted negatives ---------------------------------------------------------
def negative_auc(
    relevance: Tensor, is_negative: Tensor, selectable: Tensor | None = None, within_sets: bool = False
) -> float:
    """P(a planted negative row is rated LESS relevant than a clean row), ties counting 1/2 (0.5 is chance).

    Pairs are all (negative, clean) pairs of the batch's selectable rows; with ``within_sets`` only
    pairs of the same candidate set (``[S, n_c]`` inputs), which is what a per-set reward compares.
    NaN when there is no pair.
    """
    rel = relevance.float()
    neg = is_negative.to(rel.device, torch.bool)
    sel = torch.ones_like(neg) if selectable is None else selectable.to(rel.device, torch.bool)
    if within_sets:
        n, c = neg & sel, ~neg & sel
        pair = n.unsqueeze(-1) & c.unsqueeze(-2)  # [S, n_c (negative), n_c (clean)]
        diff = rel.unsqueeze(-1) - rel.unsqueeze(-2)
        pairs = int(pair.sum())
        if pairs == 0:
            return float("nan")
        wins = ((diff < 0) & pair).sum() + 0.5 * ((diff == 0) & pair).sum()
        return float(wins) / pairs
    negatives, clean = rel[neg & sel], rel[~neg & sel]
    if negatives.numel() == 0 or clean.numel() == 0:
        return float("nan")
    # Sort-and-count instead of all pairs: memory stays linear in the batch.
    ordered = clean.sort().values
    below_or_tied = torch.searchsorted(ordered, negatives, right=True)  # clean rows <= each negative
    below = torch.searchsorted(ordered, negatives, right=False)  # clean rows < each negative
    wins = (clean.numel() - below_or_tied).sum().double() + 0.5 * (below_or_tied - below).sum().double()
    return float(wins / (negatives.numel() * clean.numel()))


# -- what the environments hold ------------------------------------------------------------------------------
#: Inputs an env can take per pool row (``row_inputs``) or per handed-in candidate set.
ROW_INPUTS: tuple[str, ...] = ("logits", "other_logits")
_HINTS = {
    "logits": "this modality's classifier logits",
    "other_logits": "the other modality's classifier logits",
    "reference": "features of the other domain",
    "is_negative": "planted ground truth",
}


class EnvSignals:
    """The signal configuration of an environment: observation extras, the reward combination, pool inputs.

    :param observation_signals: signal names appended as per-row observation columns.
    :param reward_signals: ``{signal: weight}`` for :class:`SignalReward` (None: eq. 3).
    :param signal_options: ``{signal: {option: value}}``.
    :param row_inputs: pool-aligned per-row inputs, ``{"logits" | "other_logits": {"source": [N_s, C],
        "target": [N_t, C]}}``, gathered with the candidate sets' pool rows.
    """

    def __init__(
        self,
        observation_signals: Iterable[str] | None = None,
        reward_signals: Mapping[str, float] | None = None,
        signal_options: Mapping[str, Mapping[str, Any]] | None = None,
        row_inputs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        if isinstance(observation_signals, str):
            raise TypeError(
                f"observation_signals must be a list of signal names, got the string {observation_signals!r}"
            )
        self.observation: tuple[str, ...] = tuple(observation_signals or ())
        for name in self.observation:
            resolve_signal(name, "observation_signals")
        if len(set(self.observation)) != len(self.observation):
            raise ValueError(f"observation_signals must be distinct, got {list(self.observation)}")
        self.options = check_signal_options(signal_options)
        self.reward = None if reward_signals is None else SignalReward(reward_signals, self.options)
        self.row_inputs = _check_row_inputs(row_inputs)

    @property
    def signal_reward(self) -> SignalReward | None:
        """The combination the reward is computed from, or None where it is eq. 3 (the paper's code path)."""
        return None if self.reward is None or self.reward.is_eq3 else self.reward

    @functools.cached_property
    def needs(self) -> frozenset[str]:
        """Optional inputs that the observation extras and the reward read (fixed at construction; read every env step)."""
        names = set(self.observation) | (set() if self.signal_reward is None else set(self.signal_reward.names))
        return frozenset(n for name in names for n in resolve_signal(name).needs)

    def check_available(self, available: set[str], where: str, hint: str = "") -> None:
        """One-line ValueError naming the first signal whose input ``where`` does not provide."""
        names = list(self.observation) + ([] if self.signal_reward is None else list(self.signal_reward.names))
        for name in names:
            for needed in resolve_signal(name).needs:
                if needed not in available:
                    raise ValueError(
                        f"signal {name!r} needs input {needed!r} ({_HINTS.get(needed, needed)}), "
                        f"which {where} does not provide{hint}"
                    )

    def check_pool_sizes(self, num_samples: Callable[[str], int]) -> None:
        """``row_inputs`` must hold one row per pool row of each domain."""
        for key, per_domain in self.row_inputs.items():
            for dname, tensor in per_domain.items():
                if tensor.shape[0] != num_samples(dname):
                    raise ValueError(
                        f"row_inputs[{key!r}][{dname!r}] has {tensor.shape[0]} rows, the {dname} pool {num_samples(dname)}"
                    )

    def to(self, device: torch.device) -> EnvSignals:
        """Move the pool-aligned row inputs to ``device`` once (gathers then stay on it); returns self."""
        self.row_inputs = {key: {d: t.to(device) for d, t in per.items()} for key, per in self.row_inputs.items()}
        return self

    def gather(self, domain_name: str, index: Tensor, device: torch.device) -> dict[str, Tensor]:
        """The pool-aligned row inputs of candidate rows ``index: [S, n_c]`` -> ``{name: [S, n_c, C]}`` on ``device``."""
        return {
            key: per[domain_name][index.to(per[domain_name].device)].to(device) for key, per in self.row_inputs.items()
        }

    def extras(self, inputs: SignalInputs) -> Tensor:
        """``[S, n_c, k]`` observation columns (no drift: the state shows the discriminator as it is)."""
        return signal_values(self.observation, replace(inputs, logit_noise=None), self.options)


def _check_row_inputs(row_inputs: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Tensor]]:
    out: dict[str, dict[str, Tensor]] = {}
    for key, per_domain in (row_inputs or {}).items():
        if key not in ROW_INPUTS:
            raise ValueError(f"row_inputs keys must be among {ROW_INPUTS}, got {key!r}")
        if not isinstance(per_domain, Mapping) or set(per_domain) != {"source", "target"}:
            raise ValueError(f"row_inputs[{key!r}] must map 'source' and 'target' to [N, C] tensors")
        out[key] = {}
        for dname, value in per_domain.items():
            tensor = torch.as_tensor(value)
            if tensor.ndim != 2 or not tensor.is_floating_point():
                raise ValueError(
                    f"row_inputs[{key!r}][{dname!r}] must be a float [N, C] tensor, got {tuple(tensor.shape)}"
                )
            if not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"row_inputs[{key!r}][{dname!r}] contains NaN or inf values")
            out[key][dname] = tensor.float()
    return out
