"""Small trainable adapters over pre-extracted features: the backbone ``F^k`` of feature-level co-training.

Most video domain-adaptation research iterates on cached clip features (I3D features of EPIC, say)
rather than on pixels: a frozen extractor once, then a small trainable network per modality that the
co-training loop adapts. :class:`FeatureAdapter` is that network,
``Linear(d_in, h) -> BatchNorm1d(h) -> ReLU -> Linear(h, d_out)``, with a ``feature_dim``
attribute (``d_out``) as :class:`~features.two_stream.TwoStream` expects; :func:`adapter_two_stream`
puts one per modality into a two-stream model. The discriminators ``D^k``, the agents and the heads
``C^k`` see the adapter's ``d_out``-dimensional output, exactly as they see an I3D's 1024-d features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from features.two_stream import TwoStream

__all__ = ["FeatureAdapter", "adapter_two_stream"]


class FeatureAdapter(nn.Module):
    """``[B, in_dim]`` features -> ``[B, feature_dim]``: Linear -> BatchNorm1d -> ReLU -> Linear.

    :param in_dim: width of the stored features.
    :param hidden_dim: width of the hidden layer.
    :param feature_dim: width of the output (what the heads, discriminators and agents see).
    :param batchnorm: BatchNorm1d after the first layer (its bias is then dropped: BatchNorm's shift replaces it).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 64, feature_dim: int = 64, batchnorm: bool = True) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("feature_dim", feature_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.in_dim = in_dim
        self.feature_dim: int = feature_dim
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=not batchnorm)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers += [nn.ReLU(), nn.Linear(hidden_dim, feature_dim)]
        self.net = nn.Sequential(*layers)

    def extract_features(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"expected features [B, {self.in_dim}], got {tuple(x.shape)}")
        return self.net(x.float())

    def forward(self, x: Tensor) -> Tensor:
        return self.extract_features(x)


def adapter_two_stream(
    in_dims: Mapping[str, int],
    num_classes: int,
    *,
    hidden_dim: int = 64,
    feature_dim: int = 64,
    batchnorm: bool = True,
    dropout: float = 0.5,
    fusion: str = "sum",
    modalities: Sequence[str] | None = None,
) -> TwoStream:
    """One freshly initialised :class:`FeatureAdapter` per modality (``in_dims``: modality -> stored width) in a :class:`TwoStream`.

    :param modalities: the order of the modalities (default: the order of ``in_dims``).
    """
    names = list(modalities) if modalities is not None else list(in_dims)
    missing = [m for m in names if m not in in_dims]
    if missing:
        raise ValueError(f"in_dims has no width for modalities {missing}; got {sorted(in_dims)}")
    backbones: dict[str, nn.Module] = {
        m: FeatureAdapter(int(in_dims[m]), hidden_dim, feature_dim, batchnorm) for m in names
    }
    return TwoStream(backbones, num_classes, dropout=dropout, fusion=fusion)  # type: ignore[arg-type]
