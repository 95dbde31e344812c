"""EPIC-Kitchens domains D1/D2/D3 as split by MM-SADA: annotation loading, clip sampling, transforms.

Layout on disk (DESIGN.md section 5), frame numbers 1-based::

    root/rgb/P08/P08_01/frame_0000000001.jpg
    root/flow/P08/P08_01/u/frame_0000000001.jpg
    root/flow/P08/P08_01/v/frame_0000000001.jpg

Sampling (MM-SADA, DESIGN.md 5b). Annotations give RGB frames at 60 fps; flow frames are at half that
rate, flow frame ``k`` ~ RGB frame ``2k``. A clip is 16 RGB frames with stride 2 (a 31-frame span)
and 16 *consecutive* flow frames (the same ~0.5 s). In training one window per segment is drawn
uniformly, independently for RGB and flow (``synchronised=True`` aligns the flow window on the RGB
one); at test ``test_clips`` (5) evenly spaced windows per segment, flow aligned on RGB. Segments
shorter than a window repeat their edge frames (some EPIC segments are 30 frames long).

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
"""

from __future__ import annotations

import csv
import io
import os
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

from features.data.shared import shared_data_dir

__all__ = [
    "CLIP_FRAMES",
    "DOMAINS",
    "EPIC_COLUMNS",
    "FLOW_FRAMES_PER_RGB",
    "MULTISCALE_SCALES",
    "RGB_STRIDE",
    "VERB_CLASSES",
    "EpicClips",
    "EpicSegment",
    "FrameReadError",
    "class_counts",
    "clip_windows",
    "decode_jpeg",
    "describe_splits",
    "epic_splits",
    "frame_path",
    "load_split",
    "splits_dir",
]

#: MM-SADA domains: name -> EPIC participant.
DOMAINS: dict[str, str] = {"D1": "P08", "D2": "P01", "D3": "P22"}

#: The 10 columns of the MM-SADA annotation files, in order.
EPIC_COLUMNS: tuple[str, ...] = (
    "uid", "participant_id", "video_id", "narration", "start_timestamp", "stop_timestamp",
    "start_frame", "stop_frame", "verb", "verb_class",
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


class FrameReadError(RuntimeError):
    """A frame of a clip is missing or cannot be decoded; the message names the file and clip uid."""


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
def splits_dir() -> Path:
    """``<shared data>/epic_mmsada_splits`` (see :func:`features.data.shared_data_dir`)."""
    return shared_data_dir() / "epic_mmsada_splits"


def _split_file(domain: str, split: str, directory: Path, ext: str) -> Path:
    if domain not in DOMAINS and not (directory / f"{domain}_{split}.{ext}").is_file():
        raise ValueError(f"domain must be one of {sorted(DOMAINS)} (or have a split file in {directory}), got {domain!r}")
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
    :param directory: folder of split files; default the shared ``epic_mmsada_splits``.
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
        raise ImportError(f"reading {path} needs pandas (the MM-SADA pickles are DataFrames); "
                          "use the CSV copy instead (the default)") from exc
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
        raise ValueError(f"verb_class outside [-1, {num_classes}): {np.unique(labels[(labels >= num_classes) | (labels < -1)])[:5].tolist()}")
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

    :param root: folder holding ``rgb/`` and ``flow/``.
    :param domain: ``"D1"``/``"D2"``/``"D3"`` or any split name in ``splits``.
    :param split: which annotation file to read, ``"train"`` or ``"test"``.
    :param mode: ``"train"`` (random windows + augmentation) or ``"test"`` (evenly spaced windows,
        centre crop); defaults to ``split``.
    :param splits: folder of split files (default: the shared MM-SADA splits, or ``root`` when it
        holds ``{domain}_{split}.csv``).
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
            raise FrameReadError(f"clip uid={segment.uid}: frames of {segment.video_id} differ in size: {sorted(shapes)}")
        return np.stack(frames)

    # ------------------------------------------------------------------ transforms
    def _crop_box(self, height: int, width: int, rng: np.random.Generator | None) -> tuple[int, int, int, int]:
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

    def _transform(self, frames: np.ndarray, modality: Modality, box: tuple[float, float, float, float], flip: bool) -> Tensor:
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
            frames = self._load_frames(segment, modality, starts[modality])
            _, height, width, _ = frames.shape
            if shared is not None and (self.synchronised or not train):
                box, flip = shared
            else:
                top, left, ch, cw = self._crop_box(height, width, rng)
                box = (top / height, left / width, ch / height, cw / width)
                flip = bool(train and self.flip and rng is not None and rng.random() < 0.5)
                shared = (box, flip)
            item[modality] = self._transform(frames, modality, box, flip)
        return item


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
) -> dict[str, EpicClips]:
    """``{"source", "target", "test"}`` clips of an adaptation direction: source-train, target-train, target-test.

    The training sets draw one window per segment (``synchronised``: flow aligned on RGB); the test
    set has ``test_clips`` windows per segment. ``splits`` as :class:`EpicClips`'s.
    """
    common = dict(splits=splits, modalities=tuple(modalities), size=size, num_frames=num_frames, seed=seed)
    return {
        "source": EpicClips(root, source, "train", synchronised=synchronised, role="source", **common),
        "target": EpicClips(root, target, "train", synchronised=synchronised, role="target", **common),
        "test": EpicClips(root, target, "test", test_clips=test_clips, role="target", **common),
    }
