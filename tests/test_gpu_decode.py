"""``EpicClips(decode="gpu")`` on CPU: its fallback, its batched path with a stand-in decoder, and the untouched CPU path.

On CPU the fallback decodes with the same decoder as ``decode="cpu"`` (simplejpeg, libjpeg-turbo)
and runs the same uint8 torch operations, so the clips are compared for exact equality. On a GPU,
nvjpeg's IDCT, colour conversion and chroma upsampling differ from libjpeg-turbo's, and CUDA
resizes in float (at most one level on about a fifth of the pixels, ``augment``). The tolerance we
expect, and the CUDA test below asserts (it is skipped without CUDA and torchvision): mean |diff| <=
1 grey level; max <= 8 levels for RGB (colour edges, where chroma upsampling differs most) and
<= 2 for the grey flow JPEGs (1 level = 1/127.5 in the clips' [-1, 1] units). Not yet measured:
``benchmarks/gpu_cotrain.py`` reports the real numbers on the GPU.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from features.data import epic
from features.data.epic import DecodeFallbackWarning, EpicClips, FrameReadError, decode_jpeg, epic_splits
from features.data.synthetic_video import generate_video_domains, tiny_config

# sha256[:16] of rgb then flow bytes of every item, recorded with the code before decode="gpu" existed
# (torch 2.13.0, simplejpeg 1.9.0, numpy 2.4): EpicClips(root, "S", "train", num_frames=8, seed=3, ...)
HEAD_DIGESTS = {
    "train/e0": ["550c2dd67ad5ac20", "4ab4fa127551669c", "9ceb012bf07f18a4", "c533acdc83e7c78d"],
    "train/e1": ["5920aa10e4b67966", "850dce113cb8ce5d", "145fa2ee2f3a519f", "7a1b8d719ad06ec4"],
    "train_sync/e0": ["ab283537aed61b3b", "d1f936b3d25fc3af", "314deada5c8c4010", "6d90e4aec9346c72"],
    "test/e0": [
        "c022e4b4a9a80235",
        "63db08e47f67d4e4",
        "f04f5e66a216dda1",
        "eae8dbfb317ad23c",
        "4ea1176ff9fd6163",
        "9d6a702bf0243239",
        "4543763eac882fdd",
        "c3b61bb11a0d334d",
    ],
}
VARIANTS = {"train": {}, "train_sync": {"synchronised": True}, "test": {"mode": "test", "test_clips": 2}}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return generate_video_domains(tmp_path_factory.mktemp("gpu_decode"), tiny_config(seed=0), train_clips=4)


def clips(root: Path, decode: str = "cpu", variant: str = "train", **kw) -> EpicClips:
    return EpicClips(root, "S", "train", num_frames=8, seed=3, size=24, decode=decode, **{**VARIANTS[variant], **kw})


def whole(ds: EpicClips, workers: int = 0) -> dict:
    return next(iter(DataLoader(ds, batch_size=len(ds), num_workers=workers)))


def digest(item: dict) -> str:
    h = hashlib.sha256()
    for m in ("rgb", "flow"):
        x = item[m]
        h.update(m.encode())
        h.update(str(tuple(x.shape)).encode())
        h.update(x.numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(epic, "_warned", set())  # the fallback warns once per process


def test_cpu_path_is_unchanged(root):
    import simplejpeg

    versions = (torch.__version__.split("+")[0], simplejpeg.__version__, ".".join(np.__version__.split(".")[:2]))
    if versions != ("2.13.0", "1.9.0", "2.4"):  # other kernels may round differently: the digests were recorded there
        pytest.skip(f"digests recorded with torch 2.13.0 / simplejpeg 1.9.0 / numpy 2.4, here {versions}")
    for key, expected in HEAD_DIGESTS.items():
        variant, epoch = key.split("/e")
        ds = clips(root, variant=variant)
        assert ds.decode == "cpu"  # the default
        ds.set_epoch(int(epoch))
        assert [digest(ds[i]) for i in range(len(ds))] == expected, key
    batch = whole(clips(root))
    out = clips(root).device_transform(batch, "cpu")
    assert all(out[k] is batch[k] for k in batch)  # decode="cpu": the loop's hook passes the batch through


@pytest.mark.parametrize("variant", ["train", "train_sync", "test"])
def test_fallback_equals_cpu_clips_and_warns_once(root, variant, fresh_warnings):
    cpu, gpu = clips(root, "cpu", variant), clips(root, "gpu", variant)
    for epoch in (0, 1):
        cpu.set_epoch(epoch)
        gpu.set_epoch(epoch)
        expected = whole(cpu)
        raw = whole(gpu, workers=1 if epoch == 0 and variant == "train" else 0)  # bytes through a worker too
        assert "rgb" not in raw and isinstance(raw["rgb_jpeg"]["data"][0], bytes)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = gpu.device_transform(raw, torch.device("cpu"))
        fallback = [w for w in caught if issubclass(w.category, DecodeFallbackWarning)]
        assert len(fallback) == (1 if epoch == 0 else 0)  # once per process, not per batch
        if fallback:
            assert "not CUDA" in str(fallback[0].message) and "\n" not in str(fallback[0].message)
        assert set(out) == set(expected)
        for m in ("rgb", "flow"):
            assert out[m].dtype == expected[m].dtype == torch.float32
            assert out[m].shape == expected[m].shape
            assert torch.equal(out[m], expected[m]), (variant, epoch, m)  # same decoder, same ops: exact
        for key in ("label", "uid", "clip_index", "is_negative"):
            assert torch.equal(out[key], expected[key])


def test_crop_and_flip_parameters_match_the_cpu_path(root, monkeypatch):
    drawn: list[tuple[str, tuple, bool]] = []
    untouched = EpicClips.transform

    def spy(self, frames, modality, box, flip):
        drawn.append((modality, tuple(box), bool(flip)))
        return untouched(self, frames, modality, box, flip)

    monkeypatch.setattr(EpicClips, "transform", spy)
    cpu, gpu = clips(root, "cpu"), clips(root, "gpu")
    for epoch in (0, 1):
        cpu.set_epoch(epoch)
        gpu.set_epoch(epoch)
        for i in range(len(cpu)):
            cpu[i]
            item = gpu[i]
            for m in ("rgb", "flow"):
                assert (m, tuple(item[f"{m}_jpeg"]["box"].tolist()), item[f"{m}_jpeg"]["flip"]) in drawn[-2:]
    flips = {f for _, _, f in drawn}
    assert flips == {True, False}  # both branches were compared
    assert len({b for _, b, _ in drawn}) > 2  # and several crops


def test_batched_device_path_with_a_stand_in_decoder(root, monkeypatch, fresh_warnings):
    """The nvjpeg branch's plumbing (one call per modality, byte views, re-assembly) with simplejpeg behind it."""
    calls: list[tuple[str, int]] = []

    def stand_in(files, mode, device):
        assert all(f.dtype == torch.uint8 and f.dim() == 1 for f in files)
        calls.append((mode, len(files)))
        out = [torch.from_numpy(decode_jpeg(f.numpy().tobytes(), mode == "GRAY")) for f in files]
        return [x[None] if x.dim() == 2 else x.permute(2, 0, 1) for x in out]  # [C, H, W], as torchvision

    monkeypatch.setattr(epic, "_nvjpeg", lambda device: stand_in)
    cpu, gpu = clips(root, "cpu"), clips(root, "gpu")
    expected, raw = whole(cpu), whole(gpu)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DecodeFallbackWarning)  # nothing falls back here
        out = gpu.device_transform(raw, "cpu")
    assert calls == [("RGB", 4 * 8), ("GRAY", 4 * 16)]  # B x T RGB files, B x 2T flow files (u then v)
    for m in ("rgb", "flow"):
        assert torch.equal(out[m], expected[m])


def test_float_resize_of_the_cuda_branch_is_within_one_grey_level(root):
    gpu = clips(root, "gpu")
    item = gpu[0]
    raw = item["rgb_jpeg"]
    bounds = raw["offsets"].tolist()
    frames = torch.from_numpy(np.stack([decode_jpeg(raw["data"][a:b], False) for a, b in zip(bounds, bounds[1:])]))
    box = tuple(raw["box"].tolist())
    exact = epic.augment(frames, "rgb", box, True, 24, uint8_resize=True)
    float_resize = epic.augment(frames, "rgb", box, True, 24, uint8_resize=False)
    levels = (exact - float_resize).abs() * 127.5
    assert float(levels.max()) <= 1.0 + 1e-4  # the uint8 kernel's fixed-point weights: off by one level at most,
    assert float(levels.mean()) < 0.3  # on about a fifth of the pixels (measured: 0.20 here)


def test_missing_frame_names_the_file(root, tmp_path):
    copy = Path(shutil.copytree(root, tmp_path / "copy"))
    ds = clips(copy, "gpu", variant="test")
    victim = sorted((copy / "flow").rglob("frame_*.jpg"))[0]
    victim.unlink()
    with pytest.raises(FrameReadError, match=victim.name):
        for i in range(len(ds)):
            ds[i]


def test_bad_decode_value_is_a_one_line_error(root):
    for call in (
        lambda: EpicClips(root, "S", "train", decode="GPU"),
        lambda: epic_splits(root, "S", "T", decode="cuda"),
    ):
        with pytest.raises(ValueError) as err:
            call()
        message = str(err.value)
        assert "decode must be 'cpu' or 'gpu'" in message and "\n" not in message


def test_run_config_decode_gpu_trains_like_cpu(root, tmp_path, fresh_warnings):
    """data.decode = "gpu" through the loop on CPU: same losses and accuracy as "cpu"; the test set decodes the same way."""
    from experiments.builders import build_datasets
    from experiments.config import RunConfig, validate
    from experiments.cotrain import CoTrainer

    def config(decode: str, adabn: bool = False) -> RunConfig:
        cfg = RunConfig(name=decode + ("-adabn" if adabn else ""), output_dir=str(tmp_path), device="cpu", seed=0)
        cfg.evaluation.hooks = ["adabn"] if adabn else []
        cfg.data.root, cfg.data.source, cfg.data.target = str(root), "S", "T"
        cfg.data.size, cfg.data.frames, cfg.data.num_workers, cfg.data.decode = 24, 8, 0, decode
        cfg.model.width, cfg.model.num_classes = 0.0625, 3
        cfg.stage1.steps, cfg.stage1.batch_size = 1, 4
        cfg.stage2.steps, cfg.stage2.batch_size = 2, 4
        cfg.env.n_c, cfg.agents.batch_size, cfg.agents.learning_starts = 2, 2, 2
        cfg.evaluation.every, cfg.evaluation.windows = 2, 2
        cfg.snapshots.dtype = "float32"
        return validate(cfg)

    datasets = build_datasets(config("gpu"))
    assert [datasets[k].decode for k in ("source", "target", "test")] == ["gpu", "gpu", "gpu"]
    summaries = {}
    for decode in ("cpu", "gpu"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DecodeFallbackWarning)
            summaries[decode] = CoTrainer(config(decode)).run()
            # AdaBN's statistics pass reads the target training clips through the same device transform
            summaries[decode + "-adabn"] = CoTrainer(config(decode, adabn=True)).run()
    assert summaries["gpu-adabn"]["evaluations"] == summaries["cpu-adabn"]["evaluations"]
    summaries = {d: summaries[d] for d in ("cpu", "gpu")}
    losses = {
        d: [json.loads(line)["loss"] for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
        for d in summaries
    }
    assert len(losses["gpu"]) == 3 and np.isfinite(losses["gpu"]).all()
    assert losses["gpu"] == losses["cpu"]  # bit-identical clips, same training
    assert summaries["gpu"]["evaluations"] == summaries["cpu"]["evaluations"]  # evaluation through the device transform
    assert sorted(p.name for p in (tmp_path / "gpu" / "snapshots").glob("*.h5")) == ["step000002.h5"]


def _nvjpeg_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import torchvision.io  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(
    not _nvjpeg_available(), reason="needs CUDA and torchvision (nvjpeg); runs on the GPU machine (docs/gpu.md)"
)
def test_nvjpeg_clips_are_within_the_stated_tolerance(root, fresh_warnings):
    """On a GPU: decode="gpu" clips from nvjpeg against decode="cpu" (libjpeg-turbo), in grey levels."""
    for variant in ("train", "test"):
        cpu, gpu = clips(root, "cpu", variant), clips(root, "gpu", variant)
        expected = whole(cpu)
        with warnings.catch_warnings():
            warnings.simplefilter("error", DecodeFallbackWarning)  # nvjpeg must have decoded them
            out = gpu.device_transform(whole(gpu), torch.device("cuda"))
        for m, worst in (("rgb", 8.0), ("flow", 2.0)):
            assert out[m].is_cuda and out[m].dtype == torch.float32 and out[m].shape == expected[m].shape
            levels = (out[m].cpu() - expected[m]).abs() * 127.5
            assert float(levels.mean()) <= 1.0, (variant, m, float(levels.mean()))
            assert float(levels.max()) <= worst, (variant, m, float(levels.max()))
