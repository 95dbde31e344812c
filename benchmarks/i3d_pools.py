"""I3D trunk forward + backward by pool and BatchNorm kernels, side by side in one run.

Variants (same weights, same clips, timed alternately, ``--repeats`` times each; medians):

- ``today``: the pools as they were (``F.pad`` copy for SAME padding, ``F.max_pool3d``) and
  ``nn.BatchNorm3d`` on ``channels_last_3d``;
- ``native pools (default)``: ``F.max_pool3d`` with the trailing SAME pixel as ``ceil_mode`` (no
  copy) and BatchNorm through the 2-D channels_last kernels (``bn_as_2d``), bit for bit ``today``
  on CPU;
- ``separable pools``: as the default, with every max pool a 2-D pool over frames then a 1-D pool
  over time (``pool="separable"``; same outputs, gradients up to rounding);
- ``separable, BatchNorm3d``: separable pools with the plain 5-D BatchNorm (the pools' share alone).

On CPU in fp32 (``--threads`` torch threads); on CUDA in bf16 autocast with ``cudnn.benchmark``
(``--precision fp32`` for TF32), all in ``channels_last_3d``. A second table times every pool shape
of the network alone (forward + backward of ``MaxPool3dSamePadding`` on the activations it sees).
The step is ``extract_features`` (the trunk through ``Mixed_5c`` and the average pool) and the
backward of a scalar loss on the features, in training mode.

    python benchmarks/i3d_pools.py [--device auto] [--batch N] [--repeats 5] [--size 224] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.i3d import InceptionI3d, MaxPool3dSamePadding  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "today": {"pool": "today", "bn_as_2d": False},
    "native pools (default)": {"pool": "native", "bn_as_2d": True},
    "separable pools": {"pool": "separable", "bn_as_2d": True},
    "separable, BatchNorm3d": {"pool": "separable", "bn_as_2d": False},
}


def _same_pads(kernel: tuple[int, ...], stride: tuple[int, ...], size: torch.Size) -> list[int]:
    pads: list[int] = []
    for k, s, n in zip(reversed(kernel), reversed(stride), reversed(tuple(size))):
        total = max(k - (s if n % s == 0 else n % s), 0)
        pads += [total // 2, total - total // 2]
    return pads


class TodaysPool(torch.nn.Module):
    """The I3D max pool as it was: stride-1 padding in the kernel, otherwise an ``F.pad`` copy."""

    def __init__(self, kernel: tuple[int, ...], stride: tuple[int, ...]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if all(s == 1 and k % 2 == 1 for k, s in zip(self.kernel, self.stride)):
            return F.max_pool3d(x, self.kernel, self.stride, padding=tuple((k - 1) // 2 for k in self.kernel))
        return F.max_pool3d(F.pad(x, _same_pads(self.kernel, self.stride, x.shape[2:])), self.kernel, self.stride)


def build(variant: dict[str, Any], width: float, device: torch.device, state: dict[str, torch.Tensor]) -> InceptionI3d:
    pool = variant["pool"]
    model = InceptionI3d(width=width, pool="native" if pool == "today" else pool, bn_as_2d=variant["bn_as_2d"])
    model.load_state_dict(state)
    if pool == "today":
        for name, module in list(model.named_modules()):
            if isinstance(module, MaxPool3dSamePadding):
                parent, _, child = name.rpartition(".")
                owner = model.get_submodule(parent) if parent else model
                setattr(owner, child, TodaysPool(module.kernel_size, module.stride))  # type: ignore[arg-type]
    return model.to(device).train()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def interleaved(steps: dict[str, Callable[[], None]], repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of each step, the steps taken in turn ``repeats`` times (after one warm-up each)."""
    for step in steps.values():
        step()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def trunk_times(
    device: torch.device,
    batch: int,
    size: int = 224,
    frames: int = 16,
    width: float = 1.0,
    repeats: int = 5,
    precision: str = "fp32",
    variants: dict[str, dict[str, Any]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per trunk forward + backward of one I3D RGB stream on ``batch`` clips, per variant."""
    torch.manual_seed(0)
    state = InceptionI3d(width=width).state_dict()
    x = torch.randn(batch, 3, frames, size, size, device=device).contiguous(memory_format=torch.channels_last_3d)
    steps: dict[str, Callable[[], None]] = {}
    for name, variant in (variants or VARIANTS).items():
        model = build(variant, width, device, state)

        def step(model: InceptionI3d = model) -> None:
            with _autocast(device, precision):
                features = model.extract_features(x)
            features.float().square().mean().backward()
            model.zero_grad(set_to_none=True)

        steps[name] = step
    return interleaved(steps, repeats, device)


def pool_shapes(width: float, batch: int, size: int, frames: int) -> Iterator[tuple[str, MaxPool3dSamePadding, tuple]]:
    """Every distinct pool of the network with the activation shape it sees (from one forward)."""
    model = InceptionI3d(width=width).eval()
    seen: dict[tuple, tuple[str, MaxPool3dSamePadding]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, MaxPool3dSamePadding):

            def record(m: torch.nn.Module, inputs: tuple[torch.Tensor], _out: Any, name: str = name) -> None:
                key = (m.kernel_size, m.stride, tuple(inputs[0].shape))
                seen.setdefault(key, (name, m))  # type: ignore[arg-type]

            hooks.append(module.register_forward_hook(record))
    with torch.no_grad():
        model(torch.zeros(1, 3, frames, size, size))
    for h in hooks:
        h.remove()
    for (_kernel, _stride, shape), (name, module) in seen.items():
        yield name, module, (batch, *shape[1:])


def pool_times(
    device: torch.device, batch: int, size: int, frames: int, width: float, repeats: int, precision: str
) -> list[tuple[str, str, dict[str, float]]]:
    """Median seconds of forward + backward of each network pool alone: today's, native, separable."""
    rows = []
    dtype = torch.bfloat16 if precision == "bf16" and device.type == "cuda" else torch.float32
    for name, module, shape in pool_shapes(width, batch, size, frames):
        x = torch.rand(shape, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last_3d)
        x.requires_grad_()
        kernel, stride = module.kernel_size, module.stride
        pools: dict[str, torch.nn.Module] = {
            "today": TodaysPool(kernel, stride),  # type: ignore[arg-type]
            "native": MaxPool3dSamePadding(kernel, stride, pool="native"),
            "separable": MaxPool3dSamePadding(kernel, stride, pool="separable"),
        }
        steps: dict[str, Callable[[], None]] = {}
        for key, pool in pools.items():

            def step(pool: torch.nn.Module = pool) -> None:
                y = pool(x)
                y.backward(torch.ones_like(y))
                x.grad = None

            steps[key] = step
        times = interleaved(steps, repeats, device)
        rows.append((name, "x".join(map(str, shape)), {k: statistics.median(v) for k, v in times.items()}))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    parser.add_argument("--batch", type=int, default=0, help="clips per step (default: 2 on CPU, 40 on CUDA)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--width", type=float, default=1.0, help="I3D channel multiplier (1.0: the published model)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="", help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU (0: torch's default)")
    parser.add_argument("--skip-pools", action="store_true", help="skip the per-pool table")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    batch = args.batch or (40 if device.type == "cuda" else 2)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    console = Console()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    console.print(
        f"torch {torch.__version__}, {device} ({where}), {precision}, channels_last_3d, "
        f"{os.cpu_count()} CPUs, load average {load:.1f}"
    )
    times = trunk_times(device, batch, args.size, args.frames, args.width, args.repeats, precision)
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians["today"]
    table = Table(title=f"I3D trunk forward + backward, {batch} clips {args.frames}x{args.size}, width {args.width}")
    for col in ("variant", "median s", "min s", "max s", "clips/s", "speed-up vs today"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for name, t in times.items():
        m = medians[name]
        table.add_row(name, f"{m:.4f}", f"{min(t):.4f}", f"{max(t):.4f}", f"{batch / m:.1f}", f"{base / m:.3f}x")
    console.print(table)
    out: dict[str, Any] = {
        "device": str(device),
        "precision": precision,
        "batch": batch,
        "size": args.size,
        "frames": args.frames,
        "width": args.width,
        "repeats": args.repeats,
        "trunk_seconds": times,
    }
    if not args.skip_pools:
        rows = pool_times(device, batch, args.size, args.frames, args.width, args.repeats, precision)
        pools = Table(title="each pool alone, forward + backward (median ms)")
        for col in ("pool", "input", "today", "native", "separable", "separable vs today"):
            pools.add_column(col, justify="left" if col in ("pool", "input") else "right")
        for name, shape, t in rows:
            pools.add_row(
                name, shape, *(f"{1e3 * t[k]:.2f}" for k in ("today", "native", "separable")),
                f"{t['today'] / t['separable']:.2f}x",
            )  # fmt: skip
        console.print(pools)
        out["pool_seconds"] = [{"pool": n, "input": s, **t} for n, s, t in rows]
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
