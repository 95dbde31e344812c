"""Data-parallel co-training: two gloo processes under torchrun stay identical."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from cotrain_helpers import equivalence_config, toy_datasets, toy_model  # noqa: E402

from experiments.cotrain import CoTrainer  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str) -> None:
    worker = Path(__file__).parent / "dist_worker.py"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        str(worker),
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_two_gloo_processes_keep_identical_parameters(tmp_path):
    torchrun(str(tmp_path))
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert int(r0["world_size"]) == 2
    for key in ("model", "discriminators", "agents"):
        assert torch.equal(r0[key], r1[key]), key
    assert torch.all(r0["replay"] > 0) and torch.equal(r0["replay"], r1["replay"])
    # the agents learned through the joint backward under DDP, and once they all did, DDP stopped tracing the
    # graph for unused parameters every step (a static graph from then on)
    assert torch.all(r0["agent_updates"] > 0) and torch.equal(r0["agent_updates"], r1["agent_updates"])
    assert int(r0["find_unused_at_end"]) == 0 and int(r0["static_graph_at_end"]) == 1
    # each process trained on its own half of the global batch
    assert not set(r0["first_batch"].tolist()) & set(r1["first_batch"].tolist())
    # only rank 0 wrote the run folder's logs
    assert (tmp_path / "toy" / "metrics.jsonl").is_file()
    assert len((tmp_path / "toy" / "metrics.jsonl").read_text().splitlines()) == 4 + 6


@pytest.mark.parametrize("sync_batchnorm", [False, True], ids=["ddp", "ddp-syncbn"])
def test_ddp_equals_one_process_on_the_same_global_batches(tmp_path, sync_batchnorm):
    """2 gloo processes (DistributedDataParallel) end where one process trained on their global batches ends.

    Without SyncBatchNorm the model has no BatchNorm (each process would normalise its own half);
    with it, BatchNorm statistics are the global batch's, so the BatchNorm model must match too.
    """
    torchrun(str(tmp_path / "ddp"), "sync" if sync_batchnorm else "plain")
    r0 = torch.load(tmp_path / "ddp" / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "ddp" / "rank1.pt", weights_only=True)
    assert r0.keys() == r1.keys()
    for name, value in r0.items():
        assert torch.equal(value, r1[name]), name  # DDP keeps the replicas identical
    single = CoTrainer(
        equivalence_config(tmp_path / "single", world_size=1, sync_batchnorm=False),
        datasets=toy_datasets(),
        model=toy_model(batchnorm=sync_batchnorm, dropout=0.0, bias_before_norm=False),
    )
    single.run()
    reference = single.module.state_dict()
    assert reference.keys() == r0.keys()
    assert any("running_mean" in k for k in reference) == sync_batchnorm
    start = toy_model(batchnorm=sync_batchnorm, dropout=0.0, bias_before_norm=False).state_dict()
    assert any(not torch.equal(start[k], reference["model." + k]) for k in start)  # it trained
    for name, value in reference.items():
        if not value.is_floating_point():
            assert torch.equal(value, r0[name]), name
            continue
        err = float((r0[name] - value).norm() / value.norm().clamp_min(1e-12))  # relative difference of the tensor
        assert err <= 1e-6, f"{name}: relative difference {err:.2e} between DDP and one process"
