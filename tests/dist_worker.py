"""Run by tests/test_distributed.py under torchrun: a few co-training steps, then each rank saves its state."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))

from cotrain_helpers import equivalence_config, toy_config, toy_datasets, toy_model  # noqa: E402

from experiments.cotrain import CoTrainer  # noqa: E402


def equivalence(out: Path, sync_batchnorm: bool) -> None:
    """The DDP half of the single-process equivalence test: save the trained module's parameters."""
    torch.set_num_threads(1)
    cfg = equivalence_config(out, world_size=2, sync_batchnorm=sync_batchnorm)
    trainer = CoTrainer(
        cfg, datasets=toy_datasets(), model=toy_model(batchnorm=sync_batchnorm, dropout=0.0, bias_before_norm=False)
    )
    trainer.run()
    state = {k: v for k, v in trainer.module.state_dict().items()}
    torch.save(state, out / f"rank{trainer.dist.rank}.pt")
    dist.destroy_process_group()


def main(out: Path) -> None:
    torch.set_num_threads(1)
    cfg = toy_config(out)
    cfg.stage2.steps = 6
    cfg.agents.learning_starts = 3  # the agents start learning mid-stage: DDP's graph settings switch there
    cfg.distributed.backend = "gloo"
    trainer = CoTrainer(cfg, datasets=toy_datasets(), model=toy_model())
    seen: list[list[int]] = []
    trainer.on_step = lambda stage, step, metrics: None
    trainer.run()
    # which clips this rank trained on in its first stage-2 step (disjoint across ranks)
    from experiments.data_streams import BatchStream

    stream = BatchStream(
        60, cfg.stage2.batch_size // 2, cfg.seed, 1, rank=trainer.dist.rank, world_size=trainer.dist.world_size
    )
    seen.append([i for _, i in stream.batch_indices(0, 0)])
    state = {
        "model": torch.cat([p.detach().flatten() for p in trainer.model.parameters()]),
        "discriminators": torch.cat([p.detach().flatten() for p in trainer.discriminators.parameters()]),
        "agents": torch.cat(
            [p.detach().flatten() for r in trainer.refiners.values() for p in r.agent.q_net.parameters()]
        ),
        "replay": torch.tensor([len(r.agent.replay) for r in trainer.refiners.values()]),
        "agent_updates": torch.tensor([r.agent.updates for r in trainer.refiners.values()]),
        "find_unused_at_end": torch.tensor(int(trainer.forward.find_unused_parameters)),
        "static_graph_at_end": torch.tensor(int(trainer.forward.static_graph)),
        "first_batch": torch.tensor(seen[0]),
        "world_size": torch.tensor(trainer.dist.world_size),
    }
    torch.save(state, out / f"rank{trainer.dist.rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    if len(sys.argv) > 2:
        equivalence(Path(sys.argv[1]), sync_batchnorm=sys.argv[2] == "sync")
    else:
        main(Path(sys.argv[1]))
