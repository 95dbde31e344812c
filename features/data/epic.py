"""EPIC-Kitchens domains D1/D2/D3 as split by MM-SADA: annotation loading, clip sampling, transforms.

Layout on disk (docs/architecture.md, "Files and formats"), frame numbers 1-based::

    root/rgb/P08/P08_01/frame_0000000001.jpg
    root/flow/P08/P08_01/u/frame_0000000001.jpg
    root/flow/P08/P08_01/v/frame_0000000001.jpg

Sampling (MM-SADA; docs/architecture.md, "What the paper leaves open"). Annotations give RGB frames
at 60 fps; flow frames are at half that rate, flow frame ``k`` ~ RGB frame ``2k``. A clip is 16 RGB
frames with stride 2 (a 31-frame span) and 16 *consecutive* flow frames (the same ~0.5 s). In
training one window per segment is drawn uniformly, independently for RGB and flow
(``synchronised=True`` aligns the flow window on the RGB one); at test ``test_clips`` (5) evenly
spaced windows per segment, flow aligned on RGB. Segments shorter than a window repeat their edge
frames (some EPIC segments are 30 frames long).

Transforms: frames are scaled to [-1, 1] (``x / 127.5 - 1``, what the pytorch-i3d weights expect;
flow JPEGs store 128 as zero motion). Training: multi-scale crop (TSN style: height and width each a
scale in ``(1, .875, .75, .66)`` of the short side, at most one scale step apart, random position),
resized to ``size`` x ``size``, random horizontal flip (which negates flow ``u``). Test: a centre
square of ``test_crop`` (224/256) of the short side, resized to ``size`` (no resize for 256-high EPIC
frames at ``size=224``).

Decoding uses ``simplejpeg`` (libjpeg-turbo): on 456x256 frames it decodes the same pixels as Pillow
in about 0.57x the time (measured on these machines; ``decoder="pillow"`` is kept for comparison).

Randomness: every item draws from ``numpy.random.default_rng((seed, epoch, index))``, so a clip is
the same whichever worker loads it and in whatever order; call :meth:`EpicClips.set_epoch` between
epochs (it reaches the workers because a non-persistent DataLoader copies the dataset every epoch).

GPU decoding (``decode="gpu"``, docs/gpu.md). Decoding three JPEGs per frame in the loader workers is
what bounds a GPU's appetite for clips, so with ``decode="gpu"`` the workers only read the files:
an item carries, per modality, the clip's JPEG bytes and the crop box and flip drawn exactly as the
CPU path draws them (same RNG stream, frame sizes from the JPEG headers), and
:meth:`EpicClips.device_transform` decodes the whole batch on the device with
``torchvision.io.decode_jpeg(list, device="cuda")`` (nvjpeg) and crops, flips, resizes and
normalises it there with torch ops. Without CUDA or torchvision it decodes with this dataset's CPU
decoder in the calling process (warning once, :class:`DecodeFallbackWarning`) and gives exactly the
clips of ``decode="cpu"``; nvjpeg's pixels differ from libjpeg-turbo's by a few grey levels.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "CLIP_FRAMES",
    "DECODE_MODES",
    "DOMAINS",
    "EPIC_COLUMNS",
    "FLOW_FRAMES_PER_RGB",
    "MULTISCALE_SCALES",
    "RGB_STRIDE",
    "SPLITS_DIR",
    "VERB_CLASSES",
    "DecodeFallbackWarning",
    "EpicClips",
    "EpicSegment",
    "FrameReadError",
    "class_counts",
    "clip_windows",
    "decode_jpeg",
    "describe_splits",
    "epic_splits",
    "frame_path",
    "jpeg_size",
    "load_split",
    "splits_dir",
]

#: MM-SADA domains: name -> EPIC participant.
DOMAINS: dict[str, str] = {"D1": "P08", "D2": "P01", "D3": "P22"}

#: The 10 columns of the MM-SADA annotation files, in order.
EPIC_COLUMNS: tuple[str, ...] = (
    "uid",
    "participant_id",
    "video_id",
    "narration",
    "start_timestamp",
    "stop_timestamp",
    "start_frame",
    "stop_frame",
    "verb",
    "verb_class",
)

#: The 8 verb classes of MM-SADA, index = ``verb_class``.
VERB_CLASSES: tuple[str, ...] = ("take", "put", "open", "close", "wash", "cut", "mix", "pour")

CLIP_FRAMES = 16
RGB_STRIDE = 2
#: Flow frames are computed at half the RGB frame rate: flow frame k ~ RGB frame 2k.
FLOW_FRAMES_PER_RGB = 0.5
MULTISCALE_SCALES: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
TEST_CROP = 224 / 256

Modality = Literal["rgb", "flow"]
_CHANNELS = {"rgb": 3, "flow": 2}
#: Where the JPEGs of training clips are decoded: in the loader workers, or batched on the device.
DECODE_MODES: tuple[str, ...] = ("cpu", "gpu")


class FrameReadError(RuntimeError):
    """A frame of a clip is missing or cannot be decoded; the message names the file and clip uid."""


class DecodeFallbackWarning(RuntimeWarning):
    """``decode="gpu"`` decoded on the CPU instead (no CUDA device, no torchvision, or nvjpeg failed)."""


@dataclass(frozen=True)
class EpicSegment:
    """One annotated action segment (a row of an MM-SADA split file)."""

    uid: int
    participant_id: str
    video_id: str
    narration: str
    start_frame: int  # first RGB frame, 1-based, inclusive
    stop_frame: int  # last RGB frame, inclusive
    verb: str
    verb_class: int
    extra: Mapping[str, str] = field(default_factory=dict)  # any further columns (e.g. is_negative)


# ---------------------------------------------------------------------- split files
#: The MM-SADA split files shipped with the package (origin and licence: ``epic_splits/NOTICE``).
#: A folder beside this module, so an installed wheel finds them as a source checkout does.
SPLITS_DIR = Path(__file__).resolve().parent / "epic_splits"


def splits_dir() -> Path:
    """The folder of the MM-SADA split files ``D{1,2,3}_{train,test}.csv`` shipped with the package."""
    return SPLITS_DIR


def _split_file(domain: str, split: str, directory: Path, ext: str) -> Path:
    if domain not in DOMAINS and not (directory / f"{domain}_{split}.{ext}").is_file():
        raise ValueError(
            f"domain must be one of {sorted(DOMAINS)} (or have a split file in {directory}), got {domain!r}"
        )
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return directory / f"{domain}_{split}.{ext}"


def _parse_int(value: Any, path: Path, line: int, column: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}:{line}: column {column!r} must be an integer, got {value!r}") from None


def load_split(
    domain: str,
    split: Literal["train", "test"],
    directory: str | os.PathLike[str] | None = None,
    *,
    trust_pickle: bool = False,
) -> list[EpicSegment]:
    """Read the MM-SADA annotation file ``{domain}_{split}.csv`` (``.pkl`` only if ``trust_pickle``).

    :param domain: ``"D1"``, ``"D2"``, ``"D3"`` (or the name of any split file in ``directory``, as
        the synthetic domains write them).
    :param split: ``"train"`` or ``"test"``.
    :param directory: folder of split files; default the MM-SADA splits shipped with the package
        (:func:`splits_dir`).
    :param trust_pickle: read the original pandas pickle instead of the CSV. Unpickling runs code
        from the file, so this is never the default; it also needs pandas installed.
    """
    directory = Path(directory) if directory is not None else splits_dir()
    if trust_pickle:
        rows = _read_pickle_rows(_split_file(domain, split, directory, "pkl"))
        path = directory / f"{domain}_{split}.pkl"
    else:
        path = _split_file(domain, split, directory, "csv")
        if not path.is_file():
            hint = " (a .pkl exists: pass trust_pickle=True to read it)" if path.with_suffix(".pkl").is_file() else ""
            raise FileNotFoundError(f"split file not found: {path}{hint}")
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = tuple(reader.fieldnames or ())
            if header[: len(EPIC_COLUMNS)] != EPIC_COLUMNS:
                raise ValueError(f"{path}: expected columns {list(EPIC_COLUMNS)} first, got {list(header)}")
            rows = list(reader)
    segments: list[EpicSegment] = []
    for line, row in enumerate(rows, start=2):
        start = _parse_int(row["start_frame"], path, line, "start_frame")
        stop = _parse_int(row["stop_frame"], path, line, "stop_frame")
        if not 1 <= start <= stop:
            raise ValueError(f"{path}:{line}: need 1 <= start_frame <= stop_frame, got {start}, {stop}")
        segments.append(
            EpicSegment(
                uid=_parse_int(row["uid"], path, line, "uid"),
                participant_id=str(row["participant_id"]),
                video_id=str(row["video_id"]),
                narration=str(row["narration"]),
                start_frame=start,
                stop_frame=stop,
                verb=str(row["verb"]),
                verb_class=_parse_int(row["verb_class"], path, line, "verb_class"),
                extra={k: str(v) for k, v in row.items() if k not in EPIC_COLUMNS},
            )
        )
    uids = Counter(s.uid for s in segments)
    dup = [u for u, n in uids.items() if n > 1]
    if dup:
        raise ValueError(f"{path}: duplicate uid(s) {dup[:5]}")
    return segments


def _read_pickle_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError(
            f"reading {path} needs pandas (the MM-SADA pickles are DataFrames); use the CSV copy instead (the default)"
        ) from exc
    frame = pd.read_pickle(path)  # the caller vouched for this file with trust_pickle=True
    frame = frame.reset_index()
    if "uid" not in frame.columns and "index" in frame.columns:
        frame = frame.rename(columns={"index": "uid"})
    missing = [c for c in EPIC_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: pickle lacks columns {missing}")
    return frame.to_dict(orient="records")


def class_counts(segments: Iterable[EpicSegment], num_classes: int = len(VERB_CLASSES)) -> np.ndarray:
    """Segments per ``verb_class`` as an int64 array of length ``num_classes`` (-1 labels skipped)."""
    labels = np.fromiter((s.verb_class for s in segments), dtype=np.int64)
    if (labels >= num_classes).any() or (labels < -1).any():
        raise ValueError(
            f"verb_class outside [-1, {num_classes}): {np.unique(labels[(labels >= num_classes) | (labels < -1)])[:5].tolist()}"
        )
    return np.bincount(labels[labels >= 0], minlength=num_classes)


# ---------------------------------------------------------------------- frames
def frame_path(root: Path, segment: EpicSegment, modality: str, index: int) -> Path:
    """File of 1-based frame ``index``; ``modality`` is ``"rgb"``, ``"u"`` or ``"v"``."""
    name = f"frame_{index:010d}.jpg"
    if modality == "rgb":
        return root / "rgb" / segment.participant_id / segment.video_id / name
    return root / "flow" / segment.participant_id / segment.video_id / modality / name


def decode_jpeg(data: bytes, gray: bool, decoder: str = "simplejpeg") -> np.ndarray:
    """Decode JPEG bytes to uint8 ``[H, W, 3]`` (or ``[H, W]`` when ``gray``)."""
    if decoder == "simplejpeg":
        import simplejpeg

        out = simplejpeg.decode_jpeg(data, colorspace="GRAY" if gray else "RGB")
        return out[..., 0] if gray else out
    if decoder == "pillow":
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            mode = "L" if gray else "RGB"
            return np.asarray(image if image.mode == mode else image.convert(mode))
    raise ValueError(f"decoder must be 'simplejpeg' or 'pillow', got {decoder!r}")


def jpeg_size(data: bytes, decoder: str = "simplejpeg") -> tuple[int, int]:
    """``(height, width)`` of JPEG bytes from the header alone (microseconds: no decode)."""
    if decoder == "simplejpeg":
        import simplejpeg

        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        return int(height), int(width)
    if decoder == "pillow":
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:  # lazy: reads the header only
            width, height = image.size
        return int(height), int(width)
    raise ValueError(f"decoder must be 'simplejpeg' or 'pillow', got {decoder!r}")


def clip_windows(
    segment: EpicSegment,
    modality: Modality,
    starts: np.ndarray,
    num_frames: int = CLIP_FRAMES,
    rgb_stride: int = RGB_STRIDE,
) -> np.ndarray:
    """Frame indices ``[n_clips, num_frames]`` of windows starting at ``starts`` (in that modality's
    frame numbers), clamped to the segment so short segments repeat their edge frames."""
    first, last = _frame_range(segment, modality)
    step = rgb_stride if modality == "rgb" else 1
    idx = np.asarray(starts, dtype=np.int64)[:, None] + step * np.arange(num_frames, dtype=np.int64)
    return np.clip(idx, first, last)


def _frame_range(segment: EpicSegment, modality: Modality) -> tuple[int, int]:
    if modality == "rgb":
        return segment.start_frame, segment.stop_frame
    # flow frame k ~ RGB frame 2k
    return max(1, segment.start_frame // 2), max(1, segment.stop_frame // 2)


def _span(modality: Modality, num_frames: int, rgb_stride: int) -> int:
    return (num_frames - 1) * rgb_stride + 1 if modality == "rgb" else num_frames


# ---------------------------------------------------------------------- dataset
class EpicClips(Dataset):
    """Clips of one EPIC(-layout) domain, both modalities, with label, uid and domain.

    Items are dicts: ``rgb`` float32 ``[3, T, size, size]``, ``flow`` float32 ``[2, T, size, size]``
    (u, v), both in [-1, 1]; ``label`` (int, ``verb_class``), ``uid`` (int), ``domain`` (str),
    ``clip_index`` (0 in training, 0..test_clips-1 at test), and ``is_negative`` (bool) when the
    split file has that column (synthetic domains). ``domain`` is ``role`` when one is given
    (``"source"``/``"target"``, what the training loop and ``features.extract`` expect), else the
    domain's name; ``domain_name`` is always the name. Labels outside the known classes are -1
    (the synthetic target negatives). In ``"test"`` mode the dataset has
    ``test_clips`` items per segment (consecutive indices), averaged per uid by the evaluator.

    With ``decode="gpu"`` an item has, instead of ``rgb``/``flow``, a ``"{modality}_jpeg"`` dict
    (``data``: the clip's JPEG files as one ``bytes``, flow ``u`` frames then ``v`` frames;
    ``offsets``: int64 ``[n + 1]`` byte offsets of the ``n`` files; ``box``: float64 ``[4]``
    fractional crop ``(top, left, height, width)``; ``flip``: bool), which the default collate
    batches; :meth:`device_transform` turns a batch of them into the clips ``decode="cpu"`` gives.

    :param root: folder holding ``rgb/`` and ``flow/``.
    :param domain: ``"D1"``/``"D2"``/``"D3"`` or any split name in ``splits``.
    :param split: which annotation file to read, ``"train"`` or ``"test"``.
    :param mode: ``"train"`` (random windows + augmentation) or ``"test"`` (evenly spaced windows,
        centre crop); defaults to ``split``.
    :param splits: folder of split files (default: ``root`` when it holds ``{domain}_{split}.csv``,
        else the MM-SADA splits shipped with the package, :func:`splits_dir`).
    :param modalities: which of ``("rgb", "flow")`` to load.
    :param size: output side (224 for I3D on EPIC; tests use e.g. 64).
    :param num_frames: frames per clip (16).
    :param rgb_stride: RGB temporal stride (2).
    :param test_clips: evenly spaced windows per segment at test (5).
    :param synchronised: align the training flow window (and crop/flip) on the RGB one.
    :param scales: multi-scale crop scales of the short side.
    :param flip: random horizontal flip in training.
    :param seed: base seed of all sampling and augmentation.
    :param decoder: ``"simplejpeg"`` (default, faster) or ``"pillow"``.
    :param decode: ``"cpu"`` (default: decoded and augmented in the loader workers) or ``"gpu"``
        (workers read bytes; :meth:`device_transform` decodes and augments on the device).
    :param trust_pickle: see :func:`load_split`.
    :param segments: use these segments instead of reading a split file.
    :param role: ``"source"`` or ``"target"``: this domain's part in an adaptation run.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        domain: str,
        split: Literal["train", "test"] = "train",
        *,
        mode: Literal["train", "test"] | None = None,
        splits: str | os.PathLike[str] | None = None,
        modalities: Sequence[Modality] = ("rgb", "flow"),
        size: int = 224,
        num_frames: int = CLIP_FRAMES,
        rgb_stride: int = RGB_STRIDE,
        test_clips: int = 5,
        synchronised: bool = False,
        scales: Sequence[float] = MULTISCALE_SCALES,
        flip: bool = True,
        test_crop: float = TEST_CROP,
        seed: int = 0,
        decoder: str = "simplejpeg",
        trust_pickle: bool = False,
        segments: Sequence[EpicSegment] | None = None,
        role: Literal["source", "target"] | None = None,
        decode: Literal["cpu", "gpu"] = "cpu",
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"EPIC frame root not found: {self.root}")
        bad = [m for m in modalities if m not in _CHANNELS]
        if bad or not modalities:
            raise ValueError(f"modalities must be a non-empty subset of ('rgb', 'flow'), got {modalities!r}")
        if role not in (None, "source", "target"):
            raise ValueError(f"role must be 'source', 'target' or None, got {role!r}")
        self.role = role
        self.mode = mode or split
        if self.mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {self.mode!r}")
        if decoder not in ("simplejpeg", "pillow"):
            raise ValueError(f"decoder must be 'simplejpeg' or 'pillow', got {decoder!r}")
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be 'cpu' or 'gpu', got {decode!r}")
        if size < 1 or num_frames < 1 or rgb_stride < 1 or test_clips < 1:
            raise ValueError("size, num_frames, rgb_stride and test_clips must be >= 1")
        if segments is None:
            if splits is None and (self.root / f"{domain}_{split}.csv").is_file():
                splits = self.root
            segments = load_split(domain, split, splits, trust_pickle=trust_pickle)
        self.segments: list[EpicSegment] = list(segments)
        self.domain = domain
        self.split = split
        self.modalities = tuple(modalities)
        self.size = int(size)
        self.num_frames = int(num_frames)
        self.rgb_stride = int(rgb_stride)
        self.test_clips = int(test_clips)
        self.synchronised = synchronised
        self.scales = tuple(float(s) for s in scales)
        self.flip = flip
        self.test_crop = float(test_crop)
        self.seed = int(seed)
        self.decoder = decoder
        self.decode = decode
        self.epoch = 0
        self.labels = np.array([s.verb_class for s in self.segments], dtype=np.int64)
        self.has_negatives = bool(self.segments) and all("is_negative" in s.extra for s in self.segments)

    # ------------------------------------------------------------------ sizes
    @property
    def clips_per_segment(self) -> int:
        return self.test_clips if self.mode == "test" else 1

    def __len__(self) -> int:
        return len(self.segments) * self.clips_per_segment

    def set_epoch(self, epoch: int) -> None:
        """Change the random windows and augmentation for a new epoch (deterministic per epoch)."""
        self.epoch = int(epoch)

    def class_counts(self, num_classes: int = len(VERB_CLASSES)) -> np.ndarray:
        """Segments per class in this domain/split (labels -1, outside the classes, not counted)."""
        return class_counts(self.segments, num_classes)

    # ------------------------------------------------------------------ sampling
    def window_starts(self, segment: EpicSegment, rng: np.random.Generator | None, clip_index: int) -> dict[str, int]:
        """First frame of each modality's window (in that modality's frame numbers)."""
        rgb_first, rgb_last = _frame_range(segment, "rgb")
        rgb_room = max(0, rgb_last - rgb_first + 1 - _span("rgb", self.num_frames, self.rgb_stride))
        flow_first, flow_last = _frame_range(segment, "flow")
        flow_room = max(0, flow_last - flow_first + 1 - _span("flow", self.num_frames, self.rgb_stride))
        if rng is None:  # test: evenly spaced (a single clip is centred), flow aligned on RGB
            n = self.test_clips
            offset = rgb_room // 2 if n == 1 else int(np.round(np.linspace(0, rgb_room, n)[clip_index]))
            rgb_start = rgb_first + offset
            flow_start = min(max(flow_first, rgb_start // 2), flow_first + flow_room)
            return {"rgb": rgb_start, "flow": flow_start}
        rgb_start = rgb_first + int(rng.integers(0, rgb_room + 1))
        if self.synchronised:
            flow_start = min(max(flow_first, rgb_start // 2), flow_first + flow_room)
        else:
            flow_start = flow_first + int(rng.integers(0, flow_room + 1))
        return {"rgb": rgb_start, "flow": flow_start}

    def _read(self, path: Path | str, gray: bool, uid: int) -> np.ndarray:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise FrameReadError(f"clip uid={uid} ({self.domain}/{self.split}): missing frame {path}") from None
        except OSError as exc:
            raise FrameReadError(f"clip uid={uid} ({self.domain}/{self.split}): cannot read {path}: {exc}") from None
        try:
            return decode_jpeg(data, gray, self.decoder)
        except Exception as exc:  # decoders raise ValueError/OSError/their own types
            raise FrameReadError(
                f"clip uid={uid} ({self.domain}/{self.split}): unreadable JPEG {path}: {exc}"
            ) from None

    def _load_frames(self, segment: EpicSegment, modality: Modality, start: int) -> np.ndarray:
        """uint8 ``[T, H, W, C]`` (flow: C = 2, u then v)."""
        indices = clip_windows(segment, modality, np.array([start]), self.num_frames, self.rgb_stride)[0]
        # One folder per stream, then plain string joins: building a pathlib.Path per frame cost
        # about a quarter of the loading time of small clips.
        if modality == "rgb":
            folder = str(frame_path(self.root, segment, "rgb", 1).parent)
            frames = [self._read(f"{folder}/frame_{int(i):010d}.jpg", False, segment.uid) for i in indices]
            return self._stack(frames, segment)
        u_dir = str(frame_path(self.root, segment, "u", 1).parent)
        v_dir = str(frame_path(self.root, segment, "v", 1).parent)
        u = [self._read(f"{u_dir}/frame_{int(i):010d}.jpg", True, segment.uid) for i in indices]
        v = [self._read(f"{v_dir}/frame_{int(i):010d}.jpg", True, segment.uid) for i in indices]
        return self._stack([np.stack(p, axis=-1) for p in zip(u, v)], segment)

    def _stack(self, frames: list[np.ndarray], segment: EpicSegment) -> np.ndarray:
        shapes = {f.shape for f in frames}
        if len(shapes) != 1:
            raise FrameReadError(
                f"clip uid={segment.uid}: frames of {segment.video_id} differ in size: {sorted(shapes)}"
            )
        return np.stack(frames)

    def _read_bytes(self, path: str, uid: int) -> bytes:
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise FrameReadError(f"clip uid={uid} ({self.domain}/{self.split}): missing frame {path}") from None
        except OSError as exc:
            raise FrameReadError(f"clip uid={uid} ({self.domain}/{self.split}): cannot read {path}: {exc}") from None

    def _load_jpegs(self, segment: EpicSegment, modality: Modality, start: int) -> tuple[list[bytes], int, int]:
        """The clip's JPEG files undecoded (flow: the ``u`` frames, then the ``v`` frames) and their frame size.

        The same windows and files as :meth:`_load_frames`; the size comes from the headers, all of
        which are read so that frames of different sizes fail here, naming the clip, as they do there.
        """
        indices = clip_windows(segment, modality, np.array([start]), self.num_frames, self.rgb_stride)[0]
        streams = ("rgb",) if modality == "rgb" else ("u", "v")
        paths: list[str] = []
        for stream in streams:
            folder = str(frame_path(self.root, segment, stream, 1).parent)
            paths += [f"{folder}/frame_{int(i):010d}.jpg" for i in indices]
        blobs = [self._read_bytes(path, segment.uid) for path in paths]
        sizes = set()
        for path, data in zip(paths, blobs):
            try:
                sizes.add(jpeg_size(data, self.decoder))
            except Exception as exc:  # decoders raise ValueError/OSError/their own types
                raise FrameReadError(
                    f"clip uid={segment.uid} ({self.domain}/{self.split}): unreadable JPEG {path}: {exc}"
                ) from None
        if len(sizes) != 1:
            raise FrameReadError(
                f"clip uid={segment.uid}: frames of {segment.video_id} differ in size: {sorted(sizes)}"
            )
        ((height, width),) = sizes
        return blobs, height, width

    # ------------------------------------------------------------------ transforms
    def crop_box(self, height: int, width: int, rng: np.random.Generator | None) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` of a clip's crop: TSN multi-scale when training (``rng``), centre when testing."""
        short = min(height, width)
        if rng is None:
            side = max(1, int(round(short * self.test_crop)))
            return (height - side) // 2, (width - side) // 2, side, side
        # TSN multi-scale crop: height/width scales at most one step apart (max_distort = 1).
        n = len(self.scales)
        pairs = [(i, j) for i in range(n) for j in range(n) if abs(i - j) <= 1]
        i, j = pairs[int(rng.integers(len(pairs)))]
        ch = min(height, max(1, int(round(short * self.scales[i]))))
        cw = min(width, max(1, int(round(short * self.scales[j]))))
        top = int(rng.integers(0, height - ch + 1))
        left = int(rng.integers(0, width - cw + 1))
        return top, left, ch, cw

    def transform(
        self, frames: np.ndarray, modality: Modality, box: tuple[float, float, float, float], flip: bool
    ) -> Tensor:
        """uint8 ``[T, H, W, C]`` -> float ``[C, T, size, size]`` in [-1, 1].

        Crop, flip and resize run on uint8 (a quarter of the bytes of float; the uint8 bilinear
        kernel with antialias is PyTorch's fast path for channels-last images, the layout decoded
        frames already have), and the float conversion happens once at the output size.
        """
        t, height, width, _ = frames.shape
        # box is fractional so RGB and flow of different resolutions can share a crop
        top, left = int(round(box[0] * height)), int(round(box[1] * width))
        ch = max(1, min(height - top, int(round(box[2] * height))))
        cw = max(1, min(width - left, int(round(box[3] * width))))
        crop = frames[:, top : top + ch, left : left + cw]
        if flip:
            crop = crop[:, :, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(crop))  # [T, h, w, C] uint8
        if flip and modality == "flow":
            x[..., 0] = 255 - x[..., 0]  # mirrored horizontal motion: u -> -u after scaling
        x = x.permute(0, 3, 1, 2)  # [T, C, h, w], channels-last strides
        if (ch, cw) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        # bilinear weights are a convex combination: values stay in [0, 255], no clamp needed
        return x.permute(1, 0, 2, 3).contiguous().float().div_(127.5).sub_(1.0)  # [C, T, size, size]

    # ------------------------------------------------------------------ items
    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        seg_index, clip_index = divmod(index, self.clips_per_segment)
        segment = self.segments[seg_index]
        train = self.mode == "train"
        rng = np.random.default_rng((self.seed, self.epoch, index)) if train else None
        starts = self.window_starts(segment, rng, clip_index)
        item: dict[str, Any] = {
            "label": int(segment.verb_class),
            "uid": int(segment.uid),
            "domain": self.role or self.domain,
            "domain_name": self.domain,
            "clip_index": clip_index,
        }
        if self.has_negatives:
            item["is_negative"] = segment.extra["is_negative"].strip().lower() in ("1", "true", "yes")
        shared: tuple[tuple[float, float, float, float], bool] | None = None
        for modality in self.modalities:
            # decode="gpu": the same draws from the same stream, on the size the JPEG headers give
            if self.decode == "gpu":
                blobs, height, width = self._load_jpegs(segment, modality, starts[modality])
            else:
                frames = self._load_frames(segment, modality, starts[modality])
                _, height, width, _ = frames.shape
            if shared is not None and (self.synchronised or not train):
                box, flip = shared
            else:
                top, left, ch, cw = self.crop_box(height, width, rng)
                box = (top / height, left / width, ch / height, cw / width)
                flip = bool(train and self.flip and rng is not None and rng.random() < 0.5)
                shared = (box, flip)
            if self.decode == "gpu":
                # One bytes object per clip: the default collate passes bytes through as a list, where
                # per-frame tensors of different lengths could not be stacked.
                offsets = np.cumsum([0, *(len(b) for b in blobs)])
                item[f"{modality}_jpeg"] = {
                    "data": b"".join(blobs),
                    "offsets": torch.from_numpy(offsets.astype(np.int64)),
                    "box": torch.tensor(box, dtype=torch.float64),
                    "flip": flip,
                }
            else:
                item[modality] = self.transform(frames, modality, box, flip)
        return item

    # ------------------------------------------------------------------ decode="gpu"
    def device_transform(self, batch: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
        """Finish a collated batch on ``device``: ``decode="gpu"`` JPEGs -> clips, as ``decode="cpu"`` items have them.

        Returns the batch with ``rgb``/``flow`` float32 ``[B, C, T, size, size]`` on ``device`` in
        place of the ``"{modality}_jpeg"`` entries; a ``decode="cpu"`` batch is returned as it is.
        On CUDA with torchvision the JPEGs of a modality are decoded in one batched nvjpeg call;
        otherwise they are decoded here with this dataset's CPU decoder (a
        :class:`DecodeFallbackWarning`, once) and the clips equal ``decode="cpu"``'s bit for bit.
        """
        if self.decode == "cpu":
            return dict(batch)
        device = torch.device(device)
        out = {k: v for k, v in batch.items() if not k.endswith("_jpeg")}
        uids = batch["uid"].tolist() if isinstance(batch.get("uid"), Tensor) else list(batch.get("uid", []))
        for modality in self.modalities:
            raw = batch.get(f"{modality}_jpeg")
            if raw is None:
                raise KeyError(
                    f"batch has no {modality}_jpeg entry: device_transform takes a collated batch of "
                    f"decode='gpu' items (keys: {sorted(batch)})"
                )
            frames = self._decode_batch(raw["data"], raw["offsets"], modality, device, uids)
            boxes, flips = raw["box"].tolist(), torch.as_tensor(raw["flip"]).tolist()
            out[modality] = torch.stack(
                [augment(f, modality, tuple(b), bool(fl), self.size) for f, b, fl in zip(frames, boxes, flips)]
            )
        return out

    def _decode_batch(
        self, blobs: Sequence[bytes], offsets: Tensor, modality: Modality, device: torch.device, uids: Sequence[int]
    ) -> list[Tensor]:
        """Per clip, uint8 ``[T, H, W, C]`` frames on ``device`` (flow: C = 2, u then v)."""
        gray = modality == "flow"
        bounds = offsets.tolist()
        uids = list(uids) if len(uids) == len(blobs) else [-1] * len(blobs)  # -1: the batch carried no uids
        n = len(bounds[0]) - 1 if bounds else 0
        decode_on_device = _nvjpeg(device)
        if decode_on_device is not None:
            # one contiguous CPU buffer for the batch; the per-file tensors are views into it
            joined = bytearray().join(blobs)  # writable (torch.frombuffer warns on bytes), one copy
            buffer = torch.frombuffer(joined, dtype=torch.uint8) if joined else torch.empty(0, dtype=torch.uint8)
            files, base = [], 0
            for data, bound in zip(blobs, bounds):
                files += [buffer[base + bound[j] : base + bound[j + 1]] for j in range(n)]
                base += len(data)
            try:
                images = decode_on_device(files, mode="GRAY" if gray else "RGB", device=device)  # [C, H, W] each
            except RuntimeError as exc:
                _warn_once(
                    f"nvjpeg failed ({str(exc).splitlines()[0][:200]}); decoding this batch with {self.decoder} on the CPU"
                )
            else:
                return [_frames_from_images(images[i * n : (i + 1) * n], gray, uid) for i, uid in enumerate(uids)]
        clips = []
        for data, bound, uid in zip(blobs, bounds, uids):
            images = []
            for j in range(n):
                try:
                    images.append(decode_jpeg(data[bound[j] : bound[j + 1]], gray, self.decoder))
                except Exception as exc:  # decoders raise ValueError/OSError/their own types
                    raise FrameReadError(
                        f"clip uid={uid} ({self.domain}/{self.split}): unreadable JPEG, "
                        f"{modality} file {j + 1} of {n}: {exc}"
                    ) from None
            frames = (
                np.stack(images)
                if not gray
                else np.stack([np.stack(p, axis=-1) for p in zip(images[: n // 2], images[n // 2 :])])
            )
            clips.append(torch.from_numpy(frames).to(device))
        return clips


_warned: set[str] = set()


def _warn_once(reason: str) -> None:
    """One :class:`DecodeFallbackWarning` per reason and process (a run decodes thousands of batches)."""
    if reason in _warned:
        return
    _warned.add(reason)
    warnings.warn(f"EpicClips(decode='gpu'): {reason}", DecodeFallbackWarning, stacklevel=3)


def _nvjpeg(device: torch.device) -> Any:
    """torchvision's batched ``decode_jpeg`` when ``device`` is CUDA and torchvision is there; else None (warned)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        _warn_once(
            f"device {device} is not CUDA; decoding the JPEGs on the CPU in the calling process "
            "(the clips equal decode='cpu', without the loader workers' parallelism)"
        )
        return None
    try:
        from torchvision.io import ImageReadMode
        from torchvision.io import decode_jpeg as tv_decode_jpeg
    except ImportError:
        _warn_once(
            "torchvision is not installed; decoding the JPEGs on the CPU in the calling process, "
            "then augmenting on the device"
        )
        return None

    def decode(files: list[Tensor], mode: str, device: torch.device) -> list[Tensor]:
        return tv_decode_jpeg(files, mode=ImageReadMode[mode], device=device)  # one batched nvjpeg call

    return decode


def _frames_from_images(images: Sequence[Tensor], gray: bool, uid: int) -> Tensor:
    """nvjpeg's ``[C, H, W]`` images of one clip -> ``[T, H, W, C]`` (flow: u and v as the 2 channels)."""
    if len({tuple(im.shape) for im in images}) != 1:
        raise FrameReadError(f"clip uid={uid}: frames differ in size: {sorted({tuple(im.shape) for im in images})}")
    stacked = torch.stack(list(images))  # [n, C, H, W]
    if gray:
        t = stacked.shape[0] // 2
        stacked = torch.cat([stacked[:t], stacked[t:]], dim=1)  # [T, 2, H, W]: u, v
    return stacked.permute(0, 2, 3, 1)


def augment(
    frames: Tensor,
    modality: Modality,
    box: tuple[float, float, float, float],
    flip: bool,
    size: int,
    uint8_resize: bool | None = None,
) -> Tensor:
    """uint8 ``[T, H, W, C]`` on any device -> float ``[C, T, size, size]`` in [-1, 1], as :meth:`EpicClips.transform`.

    On the CPU these are the same operations on the same layout as ``transform`` (the uint8
    channels-last antialiased bilinear kernel), so the result is bit-identical. On other devices
    (``uint8_resize`` False; CUDA's antialiased resize takes floats) it resizes in float32 and rounds
    to whole grey levels, as the uint8 kernel does: the two differ by at most one level (on about a
    fifth of the pixels, where the uint8 kernel's fixed-point weights round the other way).
    """
    t, height, width, _ = frames.shape
    top, left = int(round(box[0] * height)), int(round(box[1] * width))
    ch = max(1, min(height - top, int(round(box[2] * height))))
    cw = max(1, min(width - left, int(round(box[3] * width))))
    x = frames[:, top : top + ch, left : left + cw]
    if flip:
        x = x.flip(2)
    x = x.contiguous()  # [T, h, w, C]; a copy, so the decoded frames are never written
    if flip and modality == "flow":
        x[..., 0] = 255 - x[..., 0]  # mirrored horizontal motion: u -> -u after scaling
    x = x.permute(0, 3, 1, 2)  # [T, C, h, w], channels-last strides
    if (ch, cw) != (size, size):
        if uint8_resize if uint8_resize is not None else x.device.type == "cpu":
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        else:
            x = F.interpolate(
                x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
            ).round_()
    return x.permute(1, 0, 2, 3).contiguous().float().div_(127.5).sub_(1.0)  # [C, T, size, size]


def describe_splits(directory: str | os.PathLike[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per domain and split, the clip counts per class (``{"D1": {"train": counts, ...}}``)."""
    return {
        domain: {split: class_counts(load_split(domain, split, directory)) for split in ("train", "test")}
        for domain in DOMAINS
    }


def epic_splits(
    root: str | os.PathLike[str],
    source: str,
    target: str,
    *,
    splits: str | os.PathLike[str] | None = None,
    modalities: Sequence[Modality] = ("rgb", "flow"),
    size: int = 224,
    num_frames: int = CLIP_FRAMES,
    seed: int = 0,
    synchronised: bool = False,
    test_clips: int = 5,
    decode: Literal["cpu", "gpu"] = "cpu",
) -> dict[str, EpicClips]:
    """``{"source", "target", "test"}`` clips of an adaptation direction: source-train, target-train, target-test.

    The training sets draw one window per segment (``synchronised``: flow aligned on RGB); the test
    set has ``test_clips`` windows per segment. ``splits`` as :class:`EpicClips`'s. ``decode``
    applies to all three sets; the training loop and the evaluation finish their batches with
    :meth:`EpicClips.device_transform` (snapshots build their own CPU-decoded sets).
    """
    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be 'cpu' or 'gpu', got {decode!r}")
    common = dict(splits=splits, modalities=tuple(modalities), size=size, num_frames=num_frames, seed=seed)
    return {
        "source": EpicClips(root, source, "train", synchronised=synchronised, role="source", decode=decode, **common),
        "target": EpicClips(root, target, "train", synchronised=synchronised, role="target", decode=decode, **common),
        "test": EpicClips(root, target, "test", test_clips=test_clips, role="target", decode=decode, **common),
    }
