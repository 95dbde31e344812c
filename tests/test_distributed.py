"""Data-parallel co-training: two gloo processes under torchrun stay identical."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_keep_identical_parameters(tmp_path):
    worker = Path(__file__).parent / "dist_worker.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", str(worker), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert int(r0["world_size"]) == 2
    for key in ("model", "discriminators", "agents"):
        assert torch.equal(r0[key], r1[key]), key
    assert torch.all(r0["replay"] > 0) and torch.equal(r0["replay"], r1["replay"])
    # each process trained on its own half of the global batch
    assert not set(r0["first_batch"].tolist()) & set(r1["first_batch"].tolist())
    # only rank 0 wrote the run folder's logs
    assert (tmp_path / "toy" / "metrics.jsonl").is_file()
    assert len((tmp_path / "toy" / "metrics.jsonl").read_text().splitlines()) == 4 + 6
