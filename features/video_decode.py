"""Decoding video files (mp4, avi, webm, GIF, ...) to RGB frames.

:func:`decode_video_frames` uses PyAV (FFmpeg bindings; the optional ``video`` extra:
``pip install 'mmir[video]'``). GIFs also decode without it, through Pillow (a core dependency),
so the Kinetics sample clip works on a bare install. Frames are counted as they decode: a
container header's frame count is never trusted, a file that stops decoding part way gives the
frames decoded so far (with a warning), and a file with no decodable frame raises
:class:`VideoDecodeError` naming it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = [
    "VIDEO_EXTRA_HINT",
    "VideoBackendMissingError",
    "VideoDecodeError",
    "decode_video_frames",
    "iter_video_frames",
    "read_gif_frames",
]

#: How to install the optional decoder.
VIDEO_EXTRA_HINT = "pip install 'mmir[video]'"


class VideoDecodeError(RuntimeError):
    """A video file cannot be opened or has no decodable video frame (the message names the file)."""


class VideoBackendMissingError(ImportError):
    """PyAV, the optional video decoder, is not installed."""


def _is_gif(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(6) in (b"GIF87a", b"GIF89a")
    except OSError:
        return False


def _import_av():  # type: ignore[no-untyped-def]
    try:
        import av
    except ImportError as err:
        raise VideoBackendMissingError(
            f"decoding videos needs PyAV, which is not installed; install the video extra: {VIDEO_EXTRA_HINT}"
        ) from err
    return av


def _check_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such video file: {p}")
    if not p.is_file():
        raise VideoDecodeError(f"{p}: not a regular file")
    return p


def _iter_gif(path: Path) -> Iterator[np.ndarray]:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        image = Image.open(path)
    except (UnidentifiedImageError, OSError) as err:
        raise VideoDecodeError(f"{path}: cannot open as an image sequence ({err})") from err
    with image:
        count = 0
        try:
            for frame in ImageSequence.Iterator(image):
                yield np.asarray(frame.convert("RGB"), dtype=np.uint8)
                count += 1
        except (OSError, ValueError, EOFError) as err:
            if count == 0:
                raise VideoDecodeError(f"{path}: no decodable frame ({err})") from err
            warnings.warn(f"{path}: decoding stopped after {count} frames ({err}); using those", stacklevel=3)


def _iter_av(path: Path) -> Iterator[np.ndarray]:
    av = _import_av()
    errors: tuple[type[BaseException], ...] = tuple(
        e
        for e in (
            getattr(av, "FFmpegError", None),
            getattr(getattr(av, "error", None), "FFmpegError", None),
            getattr(av, "AVError", None),
        )
        if isinstance(e, type)
    ) + (OSError, ValueError, EOFError)
    try:
        container = av.open(str(path))
    except errors as err:
        raise VideoDecodeError(f"{path}: cannot open as a video ({type(err).__name__}: {err})") from err
    with container:
        if not container.streams.video:
            raise VideoDecodeError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        claimed = int(stream.frames or 0)
        count = 0
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
                count += 1
        except errors as err:
            if count == 0:
                raise VideoDecodeError(f"{path}: no decodable video frame ({type(err).__name__}: {err})") from err
            header = f" of the {claimed} its header claims" if claimed else ""
            warnings.warn(
                f"{path}: decoding stopped after {count} frames{header} ({type(err).__name__}: {err}); "
                "using the frames that decoded",
                stacklevel=3,
            )
            return
        if claimed > count:
            warnings.warn(
                f"{path}: {count} frames decoded, fewer than the {claimed} its header claims; "
                "using the frames that decoded",
                stacklevel=3,
            )


def iter_video_frames(path: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """Yield the decodable frames of ``path`` one by one as ``[H, W, 3]`` uint8 RGB arrays.

    PyAV when installed; otherwise GIFs go through Pillow and any other file raises
    :class:`VideoBackendMissingError` telling how to install the ``video`` extra.
    """
    p = _check_file(path)
    try:
        import av  # noqa: F401
    except ImportError:
        if _is_gif(p):
            yield from _iter_gif(p)
            return
        _import_av()  # raises with the install hint
    yield from _iter_av(p)


def decode_video_frames(path: str | os.PathLike[str], *, max_frames: int | None = None) -> np.ndarray:
    """All decodable frames of ``path`` (or the first ``max_frames``) as ``[T, H, W, 3]`` uint8 RGB.

    ``T`` counts the frames that actually decoded, whatever the header claims.

    :raises FileNotFoundError: no such file.
    :raises VideoDecodeError: unreadable file, no video stream, no decodable frame, or frames of
        differing sizes (the message names the file).
    :raises VideoBackendMissingError: PyAV is missing and the file is not a GIF.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    frames: list[np.ndarray] = []
    source = iter_video_frames(path)
    try:
        for frame in source:
            if frames and frame.shape != frames[0].shape:
                raise VideoDecodeError(
                    f"{path}: frame {len(frames)} is {frame.shape[1]}x{frame.shape[0]}, earlier frames "
                    f"{frames[0].shape[1]}x{frames[0].shape[0]}; resolution changes are not supported"
                )
            frames.append(frame)
            if max_frames is not None and len(frames) >= max_frames:
                break
    finally:
        source.close()  # closes the container when stopping early
    if not frames:
        raise VideoDecodeError(f"{path}: no decodable video frame")
    return np.stack(frames)


def read_gif_frames(path: str | os.PathLike[str]) -> np.ndarray:
    """All frames of a GIF as ``[T, H, W, 3]`` uint8 RGB, with Pillow only (no optional extra)."""
    p = _check_file(path)
    frames = list(_iter_gif(p))
    if not frames:
        raise VideoDecodeError(f"{p}: no decodable frame")
    return np.stack(frames)
