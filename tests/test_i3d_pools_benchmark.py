"""``benchmarks/i3d_pools.py`` and ``benchmarks/loader_workers.py`` run on CPU at a tiny size (the GPU check's smoke test)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from benchmark_scripts import load_benchmark


def test_i3d_pools_times_every_variant_and_pool(tmp_path: Path) -> None:
    script = load_benchmark("i3d_pools")
    out = tmp_path / "pools.json"
    threads = torch.get_num_threads()
    try:
        script.main(["--device", "cpu", "--width", "0.125", "--size", "32", "--frames", "8", "--batch", "2"]
                    + ["--repeats", "1", "--json", str(out)])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    assert list(result["trunk_seconds"]) == list(script.VARIANTS)
    assert all(len(t) == 1 and t[0] > 0 for t in result["trunk_seconds"].values())
    pools = {row["pool"] for row in result["pool_seconds"]}
    assert {"MaxPool3d_2a_3x3", "MaxPool3d_3a_3x3", "MaxPool3d_4a_3x3", "MaxPool3d_5a_2x2"} <= pools
    assert any(p.endswith(".b3a") for p in pools)
    assert all(row[k] > 0 for row in result["pool_seconds"] for k in ("today", "native", "separable"))


def test_todays_pool_of_the_benchmark_is_the_network_pool_bit_for_bit() -> None:
    from features.i3d import MaxPool3dSamePadding

    script = load_benchmark("i3d_pools")
    x = torch.randint(0, 3, (2, 4, 5, 8, 9)).float().contiguous(memory_format=torch.channels_last_3d)
    for kernel, stride in (
        ((1, 3, 3), (1, 2, 2)),
        ((3, 3, 3), (2, 2, 2)),
        ((2, 2, 2), (2, 2, 2)),
        ((3, 3, 3), (1,) * 3),
    ):
        assert torch.equal(script.TodaysPool(kernel, stride)(x), MaxPool3dSamePadding(kernel, stride)(x))


def test_loader_workers_checks_its_batches(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from features.data.synthetic_video import generate_video_domains, tiny_config

    script = load_benchmark("loader_workers")
    root = generate_video_domains(tmp_path / "video", tiny_config(0))
    dataset = script.EpicClips(root, "S", "train", size=24, num_frames=8, seed=0)
    _, reference = script.measure(dataset, 4, 0, 2, None)
    for init in script.VARIANTS.values():
        rate, seen = script.measure(dataset, 4, 1, 2, init)
        assert rate > 0 and script.same_batches(seen, reference)
