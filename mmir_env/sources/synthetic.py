"""A feature-level two-domain benchmark with planted negatives and their ground truth."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from torch import nn

from features.domains import OUTSIDE_CLASSES
from mmir_env.sources.base import ArraySource

# Adam steps that pre-train the benchmark's discriminators (make_synthetic_source, write_synthetic_snapshot)
DISCRIMINATOR_PRETRAIN_STEPS = 200


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of :class:`SyntheticSource` (see its docstring for the generative model)."""

    feature_dim: int = 1024
    num_classes: int = 8
    num_source: int = 2000
    num_target: int = 2000
    shift: float = 0.5
    spread: float = 1.0
    negative_offset: float = 3.0
    source_negative_fraction: float = 0.2
    target_negative_fraction: float = 0.2
    class_separation: float = 3.0
    noise: float = 1.0
    seed: int = 0
    modalities: tuple[str, ...] = field(default=("rgb", "flow"))

    def __post_init__(self) -> None:
        for name in ("feature_dim", "num_classes", "num_source", "num_target"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.feature_dim < self.num_classes + 3:
            raise ValueError(
                f"feature_dim must be at least num_classes + 3 = {self.num_classes + 3} "
                f"(one axis per class, the domain axis, a viewpoint axis and an unseen-class axis), got {self.feature_dim}"
            )
        for name in ("source_negative_fraction", "target_negative_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {value}")
        for name in ("spread", "noise", "class_separation"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities must be non-empty and distinct, got {self.modalities!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SyntheticDomains:
    """All modalities of a generated benchmark: ``features[domain][modality]`` is ``[N, d]`` float32."""

    config: SyntheticConfig
    features: dict[str, dict[str, np.ndarray]]
    labels: dict[str, np.ndarray]
    is_negative: dict[str, np.ndarray]
    negative_kind: dict[str, np.ndarray]  # "" for positives; "viewpoint", "unseen", "between"


def generate_synthetic_domains(config: SyntheticConfig | None = None) -> SyntheticDomains:
    """Sample the benchmark described in :class:`SyntheticSource` (deterministic in ``config.seed``)."""
    cfg = config or SyntheticConfig()
    # Each modality draws from its own stream keyed by its name, so a modality's features do not
    # depend on which other modalities are generated.
    rng = np.random.default_rng([cfg.seed, 0])
    k = cfg.num_classes

    def flags(n: int, fraction: float) -> np.ndarray:
        out = np.zeros(n, dtype=bool)
        out[rng.permutation(n)[: int(round(fraction * n))]] = True
        return out

    # Labels and negatives are shared by all modalities: a clip is negative in RGB and flow alike.
    src_labels = rng.integers(0, k, size=cfg.num_source)
    src_neg = flags(cfg.num_source, cfg.source_negative_fraction)
    tgt_labels = rng.integers(0, k, size=cfg.num_target)
    tgt_neg = flags(cfg.num_target, cfg.target_negative_fraction)
    # Ambiguous target negatives: half of an unseen action, half between two source classes.
    unseen = tgt_neg & (rng.random(cfg.num_target) < 0.5)
    between = tgt_neg & ~unseen
    partner = (tgt_labels + rng.integers(1, k, size=cfg.num_target)) % k if k > 1 else tgt_labels
    src_axis_pos = rng.normal(-cfg.shift / 2, cfg.spread, size=cfg.num_source) - cfg.negative_offset * src_neg
    tgt_axis_pos = rng.normal(cfg.shift / 2, cfg.spread, size=cfg.num_target) + cfg.negative_offset * tgt_neg

    features: dict[str, dict[str, np.ndarray]] = {"source": {}, "target": {}}
    for modality in cfg.modalities:
        rng = np.random.default_rng([cfg.seed, 1, *modality.encode()])
        # Orthonormal axes: k class axes, the domain axis, a viewpoint axis, an unseen-class axis.
        basis, _ = np.linalg.qr(rng.normal(size=(cfg.feature_dim, k + 3)))
        class_axes, domain_axis = basis[:, :k].T, basis[:, k]
        viewpoint_axis, unseen_axis = basis[:, k + 1], basis[:, k + 2]
        means = cfg.class_separation * class_axes  # [k, d]
        noise_scale = cfg.noise / np.sqrt(cfg.feature_dim)

        src = means[src_labels] + np.outer(src_axis_pos, domain_axis)
        src += np.outer(src_neg * cfg.class_separation, viewpoint_axis)
        src += rng.normal(0.0, noise_scale, size=src.shape)

        tgt_means = means[tgt_labels].copy()
        tgt_means[between] = 0.5 * (means[tgt_labels[between]] + means[partner[between]])
        tgt_means[unseen] = cfg.class_separation * unseen_axis
        tgt = (
            tgt_means
            + np.outer(tgt_axis_pos, domain_axis)
            + rng.normal(0.0, noise_scale, size=(cfg.num_target, cfg.feature_dim))
        )

        features["source"][modality] = src.astype(np.float32)
        features["target"][modality] = tgt.astype(np.float32)

    tgt_labels = np.where(unseen, OUTSIDE_CLASSES, tgt_labels)
    src_kind = np.where(src_neg, "viewpoint", "")
    tgt_kind = np.where(unseen, "unseen", np.where(between, "between", ""))
    return SyntheticDomains(
        config=cfg,
        features=features,
        labels={"source": src_labels.astype(np.int64), "target": tgt_labels.astype(np.int64)},
        is_negative={"source": src_neg, "target": tgt_neg},
        negative_kind={"source": src_kind, "target": tgt_kind},
    )


class SyntheticSource(ArraySource):
    """Two feature domains with ``K`` action classes, a domain shift and planted negatives.

    Generative model (one modality; every modality draws its own axes, labels and negatives are
    shared). Pick orthonormal axes in R^d: ``e_1..e_K`` (classes), ``e_dom`` (domain),
    ``e_view`` (viewpoint), ``e_new`` (an unseen action). With ``n ~ N(0, noise^2/d I)``:

    - source positive of class y: ``f = c e_y + a e_dom + n``,  ``a ~ N(-shift/2, spread)``;
    - source negative ("less relevant": unusual viewpoint/style): ``f = c e_y + c e_view +
      (a - negative_offset) e_dom + n`` -- off the target's support, further from it;
    - target positive: ``f = c e_y + a e_dom + n``, ``a ~ N(+shift/2, spread)``;
    - target negative ("ambiguous"), half each: an unseen action ``c e_new`` (label -1) or a point
      between two source classes ``c (e_y + e_y')/2``, plus ``(a + negative_offset) e_dom + n``.

    ``c`` is ``class_separation``. The default ``shift`` is small next to ``spread``: the domains
    overlap as features do after partial adversarial alignment, the regime where eq. 4 is
    informative (a discriminator that separates the domains perfectly rewards every selection).
    A discriminator trained on the two pools scores negatives as the most domain-specific rows, so
    the reward can teach an agent to find them; ``is_negative`` is the ground truth.

    :param config: a :class:`SyntheticConfig`; keyword arguments override its fields.
    :param modality: which generated modality this source serves.
    :param discriminator: default discriminator for environments on this source.
    """

    def __init__(
        self,
        config: SyntheticConfig | None = None,
        modality: str | None = None,
        discriminator: nn.Module | None = None,
        **overrides: object,
    ) -> None:
        cfg = config or SyntheticConfig()
        if overrides:
            unknown = sorted(set(overrides) - set(SyntheticConfig.__dataclass_fields__))
            if unknown:
                raise TypeError(
                    f"unknown SyntheticSource parameters {unknown}; valid: {sorted(SyntheticConfig.__dataclass_fields__)}"
                )
            cfg = SyntheticConfig(**{**cfg.to_dict(), **overrides})  # type: ignore[arg-type]
        modality = modality or cfg.modalities[0]
        if modality not in cfg.modalities:
            raise ValueError(f"modality must be one of {cfg.modalities}, got {modality!r}")
        self.config = cfg
        self.modality = modality
        self.domains = generate_synthetic_domains(cfg)
        super().__init__(
            features={d: self.domains.features[d][modality] for d in ("source", "target")},
            labels=self.domains.labels,
            is_negative=self.domains.is_negative,
            discriminator=discriminator,
        )
        self.num_classes = cfg.num_classes

    @property
    def negative_fraction(self) -> dict[str, float]:
        """Measured fraction of planted negatives per domain."""
        return {d: float(np.mean(self.domains.is_negative[d])) for d in ("source", "target")}
