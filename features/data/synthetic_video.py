"""Procedurally generated two-domain action videos, written in the exact EPIC-Kitchens layout.

Each clip shows a textured disc on a background; its **action class is its motion** (move right,
left, up, down, circle). The two domains differ the way kitchens and cameras do:

============  ===============================  ===============================
              source (``S``, participant P90)  target (``T``, participant P91)
============  ===============================  ===============================
background    warm horizontal gradient + blobs  cool vertical stripes + noise
object        red/orange palette, checkerboard  green/blue palette, stripes
viewpoint     motion rotated 0 deg               motion rotated ``target_rotation`` (20 deg)
speed         ``speed`` px per RGB frame         x ``target_speed`` (1.4)
============  ===============================  ===============================

Planted negatives (ground truth in the extra ``is_negative`` column of the split CSVs, training
split only): source clips with an unusual viewpoint and style (motion rotated by 55-70 degrees,
inverted colours, heavy noise: a correct label but misleading for alignment), and target clips of an
*unseen* motion (diagonal, ``verb`` ``"unseen"``, ``verb_class == -1``: outside the source classes,
the convention of the snapshot files; a cross-entropy on it fails loudly instead of silently).

Layout written under ``root`` (same as EPIC; frame numbers 1-based)::

    rgb/P90/P90_01/frame_0000000001.jpg        RGB, 3 channels
    flow/P90/P90_01/{u,v}/frame_0000000001.jpg  flow, 1 channel each
    S_train.csv  S_test.csv  T_train.csv  T_test.csv   10 EPIC columns + is_negative
    synthetic_video.json                              config, class names, flow encoding

Timing follows EPIC: RGB "at 60 fps", flow at half the rate; flow frame ``k`` is the forward
displacement of the scene from RGB frame ``2k`` to RGB frame ``2k + 2`` (as TV-L1 on every other
frame), evaluated where the object is at RGB frame ``2k``; the background is static (zero flow).
Every segment sits in its own block of frames with a 2-frame margin, so every flow frame a loader
asks for (``start_frame // 2`` ... ``stop_frame // 2``) belongs to that segment.

**Flow encoding** (EPIC's TV-L1 JPEG convention): a displacement ``f`` in pixels is clipped to
``[-flow_bound, flow_bound]`` (20) and stored as ``q = round((f + bound) / (2 bound) * 255)``;
so ``q = 128`` is (almost exactly) zero motion and ``f = q / 255 * 2 bound - bound``. ``u`` is
horizontal (positive = right), ``v`` vertical (positive = down). The loader's ``q / 127.5 - 1``
therefore equals ``f / bound`` (up to the half-level offset of 128).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from features.data.epic import EPIC_COLUMNS

__all__ = [
    "MOTIONS",
    "UNSEEN_MOTION",
    "SyntheticVideoConfig",
    "decode_flow",
    "encode_flow",
    "generate_video_domains",
    "tiny_config",
]

#: Class index -> motion name (the "verb" of the synthetic split files).
MOTIONS: tuple[str, ...] = ("right", "left", "up", "down", "circle")
#: Motion of the planted target negatives (never a training class).
UNSEEN_MOTION = "diagonal"

_DIRECTIONS = {
    "right": (1.0, 0.0),
    "left": (-1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "diagonal": (0.7071, 0.7071),
}


@dataclass(frozen=True)
class SyntheticVideoConfig:
    """Sizes and shift of the generated domains (defaults: the CPU demo's size).

    :param height: frame height in pixels.
    :param width: frame width in pixels.
    :param num_classes: number of motion classes (<= 5, the first of :data:`MOTIONS`).
    :param train_clips: training segments per domain (negatives included).
    :param test_clips: test segments per domain (no negatives).
    :param segments_per_video: segments per video folder.
    :param min_frames: shortest segment in RGB frames (EPIC's shortest is 30).
    :param max_frames: longest segment in RGB frames.
    :param speed: object speed in pixels per RGB frame (source).
    :param target_speed: target speed multiplier.
    :param target_rotation: target viewpoint: motion rotated by this many degrees.
    :param source_negative_fraction: share of source training clips that are planted negatives.
    :param target_negative_fraction: share of target training clips that are planted negatives.
    :param flow_bound: flow JPEG clipping bound in pixels (EPIC: 20).
    :param jpeg_quality: JPEG quality of every frame.
    :param seed: drives everything; same seed, same bytes.
    """

    height: int = 64
    width: int = 64
    num_classes: int = 5
    train_clips: int = 160
    test_clips: int = 60
    segments_per_video: int = 20
    min_frames: int = 36
    max_frames: int = 60
    speed: float = 0.6
    target_speed: float = 1.4
    target_rotation: float = 20.0
    source_negative_fraction: float = 0.1
    target_negative_fraction: float = 0.1
    flow_bound: float = 20.0
    jpeg_quality: int = 90
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.num_classes <= len(MOTIONS):
            raise ValueError(f"num_classes must be in [2, {len(MOTIONS)}], got {self.num_classes}")
        if self.height < 16 or self.width < 16:
            raise ValueError(f"height and width must be >= 16, got {self.height}x{self.width}")
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(f"need 1 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}")
        if self.train_clips < 1 or self.test_clips < 1 or self.segments_per_video < 1:
            raise ValueError("train_clips, test_clips and segments_per_video must be >= 1")
        for name in ("source_negative_fraction", "target_negative_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.flow_bound <= 0:
            raise ValueError(f"flow_bound must be > 0, got {self.flow_bound}")


def tiny_config(seed: int = 0) -> SyntheticVideoConfig:
    """A few dozen small clips for tests (non-square frames on purpose)."""
    return SyntheticVideoConfig(
        height=32,
        width=40,
        num_classes=3,
        train_clips=6,
        test_clips=3,
        segments_per_video=3,
        min_frames=30,
        max_frames=40,
        seed=seed,
        source_negative_fraction=0.34,
        target_negative_fraction=0.34,
    )


def encode_flow(flow: np.ndarray, bound: float) -> np.ndarray:
    """Pixels of displacement -> uint8 JPEG levels (128 ~ zero), as EPIC's TV-L1 flow JPEGs."""
    q = np.round((np.clip(flow, -bound, bound) + bound) / (2.0 * bound) * 255.0)
    return q.astype(np.uint8)


def decode_flow(levels: np.ndarray, bound: float) -> np.ndarray:
    """Inverse of :func:`encode_flow` (up to quantisation: one level is ``2 bound / 255`` px)."""
    return levels.astype(np.float32) / 255.0 * (2.0 * bound) - bound


# ---------------------------------------------------------------------- rendering
@dataclass(frozen=True)
class _Clip:
    motion: str
    start_xy: tuple[float, float]
    phase: float
    rotation_deg: float
    speed: float
    negative_style: bool


def _positions(clip: _Clip, times: np.ndarray, height: int, width: int) -> np.ndarray:
    """Object centre ``[len(times), 2]`` (x, y) at continuous RGB-frame times (wrapping around)."""
    if clip.motion == "circle":
        radius = 0.22 * min(height, width)
        omega = clip.speed / radius  # same linear speed as the straight motions
        angle = clip.phase + omega * times
        disp = radius * np.stack([np.cos(angle) - np.cos(clip.phase), np.sin(angle) - np.sin(clip.phase)], -1)
    else:
        disp = clip.speed * times[:, None] * np.asarray(_DIRECTIONS[clip.motion])[None, :]
    theta = np.deg2rad(clip.rotation_deg)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return np.asarray(clip.start_xy)[None, :] + disp @ rot.T


def _wrapped(delta: np.ndarray, period: int) -> np.ndarray:
    return (delta + period / 2.0) % period - period / 2.0


def _background(domain: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Static float ``[H, W, 3]`` background in [0, 255] for one video."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    if domain == "S":
        base = np.array([200.0, 150.0, 110.0]) * (0.6 + 0.4 * x / width)[..., None]
        cx, cy = rng.uniform(0, width, 3), rng.uniform(0, height, 3)
        blobs = sum(np.exp(-((x - a) ** 2 + (y - b) ** 2) / (0.05 * width * height)) for a, b in zip(cx, cy))
        return base + 35.0 * blobs[..., None]
    period = rng.uniform(5.0, 9.0)
    stripes = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * x / period))
    base = np.array([70.0, 110.0, 140.0])[None, None, :] + 40.0 * stripes[..., None]
    return base + rng.normal(0, 8.0, (height, width, 1))


def _render(
    clip: _Clip,
    domain: str,
    times: np.ndarray,
    flow_times: np.ndarray,
    background: np.ndarray,
    colour: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 ``[T, H, W, 3]`` at ``times`` and flow float ``[K, H, W, 2]`` (px) at ``flow_times``."""
    height, width, _ = background.shape
    radius = 0.16 * min(height, width)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    times, flow_times = times.astype(np.float32), flow_times.astype(np.float32)

    def object_coords(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = _positions(clip, t, height, width)
        pos = pos.astype(np.float32)
        dx = _wrapped(x[None] - pos[:, 0, None, None], width)  # [T, H, W]
        dy = _wrapped(y[None] - pos[:, 1, None, None], height)
        return dx, dy

    dx, dy = object_coords(times)
    inside = dx**2 + dy**2 <= radius**2  # [T, H, W]
    wavelength = max(3.0, radius / 1.5)
    if domain == "S":  # checkerboard texture, moving with the object
        texture = np.sign(np.sin(2 * np.pi * dx / wavelength) * np.sin(2 * np.pi * dy / wavelength))
    else:  # diagonal stripes
        texture = np.sign(np.sin(2 * np.pi * (dx + dy) / wavelength))
    shade = (0.65 + 0.35 * texture)[..., None] * colour.astype(np.float32)  # [T, H, W, 3]
    frames = np.where(inside[..., None], shade.astype(np.float32), background[None].astype(np.float32))
    noise = rng.standard_normal(frames.shape, dtype=np.float32)
    frames += noise * np.float32(12.0 if clip.negative_style else 3.0)
    if clip.negative_style:
        frames = 255.0 - frames
    rgb = np.clip(np.rint(frames), 0, 255).astype(np.uint8)

    fdx, fdy = object_coords(flow_times)
    on_object = fdx**2 + fdy**2 <= radius**2  # [K, H, W], object pixels at RGB frame 2k
    displacement = _positions(clip, flow_times + 2.0, height, width) - _positions(clip, flow_times, height, width)
    flow = np.where(on_object[..., None], displacement[:, None, None, :], 0.0).astype(np.float32)
    return rgb, flow


# ---------------------------------------------------------------------- writing
def _timestamp(frame: int, fps: float = 60.0) -> str:
    seconds = frame / fps
    hours, rem = divmod(seconds, 3600)
    minutes, secs = divmod(rem, 60)
    return f"{int(hours):02d}:{int(minutes):02d}:{secs:05.2f}"


def write_jpeg(path: Path, pixels: np.ndarray, quality: int) -> None:
    """An RGB ``[H, W, 3]`` or grey ``[H, W]`` uint8 image as a JPEG file (EPIC frames; also ``mmir prepare-videos``)."""
    import simplejpeg

    if pixels.ndim == 2:
        data = simplejpeg.encode_jpeg(np.ascontiguousarray(pixels)[..., None], quality=quality, colorspace="GRAY")
    else:
        data = simplejpeg.encode_jpeg(np.ascontiguousarray(pixels), quality=quality, colorspace="RGB")
    path.write_bytes(data)


def _domain_clips(
    cfg: SyntheticVideoConfig, domain: str, n: int, negatives: int, rng: np.random.Generator
) -> tuple[list[_Clip], np.ndarray]:
    labels = np.arange(n) % cfg.num_classes
    rng.shuffle(labels)
    is_negative = np.zeros(n, dtype=bool)
    is_negative[rng.choice(n, size=negatives, replace=False)] = True
    clips: list[_Clip] = []
    for label, negative in zip(labels, is_negative):
        start = (float(rng.uniform(0, cfg.width)), float(rng.uniform(0, cfg.height)))
        phase = float(rng.uniform(0, 2 * np.pi))
        jitter = float(rng.uniform(0.85, 1.15))
        if domain == "S":
            rotation, speed = 0.0, cfg.speed * jitter
            if negative:  # unusual viewpoint: motion rotated far from its class direction
                rotation = float(rng.choice([-1, 1]) * rng.uniform(55, 70))
            motion = MOTIONS[label]
        else:
            rotation, speed = cfg.target_rotation, cfg.speed * cfg.target_speed * jitter
            motion = UNSEEN_MOTION if negative else MOTIONS[label]
        clips.append(_Clip(motion, start, phase, rotation, speed, negative_style=bool(negative and domain == "S")))
    return clips, is_negative


def generate_video_domains(
    root: str | os.PathLike[str],
    config: SyntheticVideoConfig | None = None,
    *,
    domains: tuple[str, ...] = ("S", "T"),
    **overrides: object,
) -> Path:
    """Write the source (``S``) and target (``T``) domains under ``root`` in the EPIC layout.

    ``domains`` limits the output to some of them (e.g. ``("S",)`` for a loader benchmark); each
    domain draws from its own seed stream, so ``S`` is the same bytes whether or not ``T`` is made.

    Deterministic in ``config.seed``. Returns ``root``. ``overrides`` replace config fields, e.g.
    ``generate_video_domains(tmp, tiny_config(), seed=3)``. Read it back with
    ``EpicClips(root, "S", "train")`` (the split files are found in ``root``).
    """
    cfg = replace(config or SyntheticVideoConfig(), **overrides)  # type: ignore[arg-type]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    unknown = [d for d in domains if d not in ("S", "T")]
    if unknown:
        raise ValueError(f"domains must be a subset of ('S', 'T'), got {domains!r}")
    margin = 2
    for domain, participant in (("S", "P90"), ("T", "P91")):
        if domain not in domains:
            continue
        rng = np.random.default_rng([cfg.seed, 0 if domain == "S" else 1])
        uid = 100000 if domain == "S" else 200000
        palette = (
            np.array([[220, 60, 40], [240, 140, 30], [200, 40, 90]], dtype=np.float64)
            if domain == "S"
            else np.array([[40, 200, 90], [30, 120, 230], [20, 190, 190]], dtype=np.float64)
        )
        video_no = 0
        for split, n in (("train", cfg.train_clips), ("test", cfg.test_clips)):
            fraction = cfg.source_negative_fraction if domain == "S" else cfg.target_negative_fraction
            negatives = int(round(fraction * n)) if split == "train" else 0
            clips, is_negative = _domain_clips(cfg, domain, n, negatives, rng)
            rows: list[dict[str, object]] = []
            for first in range(0, n, cfg.segments_per_video):
                video_no += 1
                video_id = f"{participant}_{video_no:02d}"
                rgb_dir = root / "rgb" / participant / video_id
                u_dir = root / "flow" / participant / video_id / "u"
                v_dir = root / "flow" / participant / video_id / "v"
                for d in (rgb_dir, u_dir, v_dir):
                    d.mkdir(parents=True, exist_ok=True)
                background = _background(domain, cfg.height, cfg.width, rng)
                block_start = 1
                for i in range(first, min(n, first + cfg.segments_per_video)):
                    clip = clips[i]
                    length = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
                    block_end = block_start + length - 1 + 2 * margin
                    start, stop = block_start + margin, block_end - margin
                    frames = np.arange(block_start, block_end + 1)
                    flow_ids = np.arange((block_start + 1) // 2, block_end // 2 + 1)
                    flow_ids = flow_ids[flow_ids >= 1]
                    colour = palette[int(rng.integers(len(palette)))] * rng.uniform(0.85, 1.0)
                    rgb, flow = _render(
                        clip,
                        domain,
                        (frames - start).astype(np.float64),
                        (2 * flow_ids - start).astype(np.float64),
                        background,
                        colour,
                        rng,
                    )
                    for f, image in zip(frames, rgb):
                        write_jpeg(rgb_dir / f"frame_{f:010d}.jpg", image, cfg.jpeg_quality)
                    levels = encode_flow(flow, cfg.flow_bound)
                    for k, pair in zip(flow_ids, levels):
                        write_jpeg(u_dir / f"frame_{k:010d}.jpg", pair[..., 0], cfg.jpeg_quality)
                        write_jpeg(v_dir / f"frame_{k:010d}.jpg", pair[..., 1], cfg.jpeg_quality)
                    label = MOTIONS.index(clip.motion) if clip.motion in MOTIONS else -1
                    verb = clip.motion if clip.motion in MOTIONS else "unseen"
                    rows.append(
                        {
                            "uid": uid,
                            "participant_id": participant,
                            "video_id": video_id,
                            "narration": f"move {clip.motion}",
                            "start_timestamp": _timestamp(start),
                            "stop_timestamp": _timestamp(stop),
                            "start_frame": start,
                            "stop_frame": stop,
                            "verb": verb,
                            "verb_class": label,
                            "is_negative": int(is_negative[i]),
                        }
                    )
                    uid += 1
                    block_start = block_end + 1
            with (root / f"{domain}_{split}.csv").open("w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=[*EPIC_COLUMNS, "is_negative"])
                writer.writeheader()
                writer.writerows(rows)
    meta = {
        "generator": "features.data.synthetic_video",
        "config": asdict(cfg),
        "domains": {"S": "P90", "T": "P91"},
        "classes": list(MOTIONS[: cfg.num_classes]),
        "unseen_motion": {"verb": "unseen", "motion": UNSEEN_MOTION, "verb_class": -1},
        "flow_encoding": {
            "bound_px": cfg.flow_bound,
            "encode": "q = round((clip(f, -bound, bound) + bound) / (2 * bound) * 255)",
            "decode": "f = q / 255 * 2 * bound - bound",
            "zero_motion_level": 128,
            "flow_frame_k": "displacement from RGB frame 2k to RGB frame 2k+2 at object pixels of frame 2k",
        },
    }
    (root / "synthetic_video.json").write_text(json.dumps(meta, indent=1))
    return root
