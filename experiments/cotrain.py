"""Two-stage MMIR co-training (paper sections 3.3, 3.4, 4.1) as one loop of named parts.

Stage 1 trains the backbones and heads on labelled source clips (eq. 11). Stage 2 adds, per
modality k, the discriminator D^k and the refiners (the paper's S-/T-agents, or a control): the
features of each half-batch are cut into candidate sets, the refiners select rows out, and the
objectives (L_cls, L_adv on the kept rows, ...) are summed with the refiners' losses (eq. 9/12).

The parts, each chosen by name in the config and built in :mod:`experiments.loop_parts`:
the :class:`~experiments.cotrain_module.CoTrainModule` (everything that trains by gradient; wrapped
in ``DistributedDataParallel`` under ``torchrun``), the objectives (:mod:`experiments.objectives`),
the refiners (:mod:`experiments.refiners`), the step strategy (:mod:`experiments.steps`) and the
evaluation hooks (:mod:`experiments.evaluation`). Nothing here names a modality or a method.

The public API a benchmark or a notebook uses: ``CoTrainer(cfg)`` builds, ``begin_stage``,
``next_batch`` and ``training_step`` step, ``evaluate`` tests, ``save_checkpoint`` and
``load_checkpoint`` keep and restore everything, ``run`` does all of it with logging.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from experiments.builders import build_datasets, build_model
from experiments.config import RunConfig
from experiments.cotrain_module import CoTrainModule
from experiments.data_streams import StreamPosition, stream_loader
from experiments.distributed import convert_sync_batchnorm, init_distributed, wrap_ddp
from experiments.evaluation import evaluate
from experiments.loop_parts import build_parts, make_optimizer
from experiments.refiners import Refiner
from experiments.refiners.stats import RefinementStats
from experiments.runs import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    RUN_FILES,
    CheckpointError,
    RunLock,
    one_line,
    read_checkpoint,
    remove_stale_temporaries,
    resume_state,
    usable_device,
)
from experiments.steps import StepBatch, StepContext, StepLog
from features.atomic_io import atomic_torch_save, atomic_write_text, json_text
from features.devices import resolve_device

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "CoTrainer", "build_model", "make_optimizer", "resolve_device"]


class CoTrainer:
    """Runs a :class:`~experiments.config.RunConfig`: stage 1, stage 2, evaluations, snapshots, checkpoints.

    :param cfg: the run's configuration.
    :param datasets: optional ``{"source": ..., "target": ..., "test": ...}`` clip datasets
        (default: :func:`experiments.builders.build_datasets` of ``cfg.data.kind``).
    :param model: optional model (default: :func:`build_model`).
    :param on_step: called after every step with ``(stage, step, metrics)`` (progress display).
    """

    def __init__(
        self,
        cfg: RunConfig,
        datasets: Mapping[str, Any] | None = None,
        model: nn.Module | None = None,
        on_step: Callable[[int, int, dict[str, float]], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = usable_device(cfg.device)
        self.dist = init_distributed(cfg.distributed.backend, self.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.on_step = on_step
        self.datasets = dict(datasets) if datasets is not None else build_datasets(cfg)
        torch.manual_seed(cfg.seed)
        parts = build_parts(cfg, model if model is not None else build_model(cfg), self.datasets, self.device)
        self.module: CoTrainModule = parts.module
        self.refiners: dict[tuple[str, str], Refiner] = parts.refiners
        self.strategy = parts.strategy
        if self.dist.enabled and cfg.distributed.sync_batchnorm:
            self.module = convert_sync_batchnorm(self.module, self.device)
        self.parts = parts
        self.forward: nn.Module = self.module
        self.refinement_stats = RefinementStats(cfg.model.num_classes)
        self.stage, self.step = 1, 0
        self.positions = {"stage1": StreamPosition(), "source": StreamPosition(), "target": StreamPosition()}
        self.evaluations: list[dict[str, float]] = []
        self.optimizers = self._make_optimizers(1)
        self.run_dir = cfg.run_dir()
        self._streams: Iterator[StepBatch] | None = None  # the current stage's batches (made on first use)

    # -- the parts ------------------------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        return self.module.model

    @property
    def discriminators(self) -> nn.ModuleDict:
        return self.module.discriminators

    def _make_optimizers(self, stage: int, ddp: bool = False) -> dict[str, torch.optim.Optimizer]:
        """Stage 1: one optimizer over the module's trainable parameters; stage 2: the strategy's groups."""
        self._wrap(stage, ddp)
        sc = self.cfg.stage1 if stage == 1 else self.cfg.stage2
        groups = {"main": self.module.trainable_parameters()} if stage == 1 else self.strategy.param_groups(self.module)
        return {
            name: make_optimizer(params, sc.optimizer, sc.lr, sc.weight_decay, sc.momentum)
            for name, params in groups.items()
        }

    def _wrap(self, stage: int, ddp: bool = False) -> None:
        """One DistributedDataParallel wrapper per stage (their graph settings differ: ``Parts.ddp_settings``)."""
        if not (self.dist.enabled or ddp) or getattr(self, "_wrapped_stage", None) == stage:
            return
        if isinstance(self.forward, DistributedDataParallel):
            self.forward = self.module
            gc.collect()  # the old wrapper's reducer (and its gradient hooks) must be gone first
        self.forward = wrap_ddp(self.module, self.device, **self.parts.ddp_settings(stage))
        self._wrapped_stage = stage

    def begin_stage(self, stage: int, ddp: bool = False) -> None:
        """Start ``stage`` from its first step: its optimizers and DistributedDataParallel wrapper, fresh data streams.

        ``ddp``: wrap in DDP even outside torchrun (an initialised process group of one: benchmarks).
        """
        self.stage, self.step = stage, 0
        self.optimizers = self._make_optimizers(stage, ddp)
        self._streams = None

    def next_batch(self) -> StepBatch:
        """The current stage's next batch on the device, continuing the run's data streams (positions are checkpointed)."""
        if self._streams is None:
            self._streams = self._stage1_batches() if self.stage == 1 else self._stage2_batches()
        return next(self._streams)

    def training_step(self, batch: StepBatch) -> StepLog:
        """One optimisation step of the current stage on ``batch``, read top to bottom (docs/cotraining.md).

        Stage 1 is L_cls (eq. 11); stage 2 is eq. 12: the module's forward extracts both halves'
        features, the refiners (the S-/T-agents) select rows out of each modality's candidate sets,
        the objectives score what is kept, and one backward trains the backbones, heads,
        discriminators and the agents' Q-networks together. A strategy with its own step (MCD) runs
        that instead. Does not advance :attr:`step` (:meth:`run` does, with logging and checkpoints).
        """
        if self.stage == 2 and self.strategy.replaces_step:
            return self.strategy.step(self.step_context(), batch)
        refiners = list(self.refiners.values()) if self.stage == 2 else []
        for opt in self.optimizers.values():  # 1. clear the gradients of everything that trains
            opt.zero_grad(set_to_none=True)
        for refiner in refiners:
            for net in refiner.trainable_modules():
                net.zero_grad(set_to_none=True)
        with self.autocast():  # 2. the forward work, inside DDP under torchrun (CoTrainModule.forward):
            out = self.forward(batch, self.stage)  # features -> logits -> refiners' keep masks -> objectives -> sum
        out.loss.backward()  # 3. one backward for L_cls + L_adv + L_dqn (+ the other objectives)
        for opt in self.optimizers.values():  # 4. step the backbones, heads and discriminators
            opt.step()
        for refiner in refiners:  # 5. the agents' own updates (optimizer step, target sync, epsilon)
            refiner.after_backward()
        for key, result in out.refinement.items():  # 6. what the refiners removed, for reports
            self.refinement_stats.add(key, result, batch.stats_labels.get(key.rpartition("/")[2]))
        return StepLog({"loss": _f(out.loss), **{k: _f(v) for k, v in out.terms.items()}}, out.refinement)

    def step_context(self) -> StepContext:
        """What a step strategy's own step uses: the (DDP-wrapped) forward, the optimizers, the refiners, autocast."""
        return StepContext(
            forward=self.forward, optimizers=self.optimizers, refiners=self.refiners, autocast=self.autocast
        )

    # -- training -------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict[str, Any]:
        """Train both stages (continuing from the run's newest state with ``resume``); returns the summary.

        The main process holds the run folder's :class:`~experiments.runs.RunLock` meanwhile.
        """
        if not self.dist.is_main:
            return self._run(resume)
        with RunLock(self.run_dir):
            remove_stale_temporaries(self.run_dir, RUN_FILES)  # of a killed write; ours alone while we hold the lock
            return self._run(resume)

    def _run(self, resume: bool) -> dict[str, Any]:
        if resume:
            self.load_checkpoint(resume_state(self.run_dir))
        elif self.stage == 1 and self.step == 0:
            torch.manual_seed(self.cfg.seed + 2)  # dropout draws from the global generator: own its state
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.json", json_text(self.cfg.to_dict(), indent=2))
            self._trim_metrics_log(resume)
        if self.stage == 1:
            self._run_stage1()
            if self.dist.is_main:
                self.save_checkpoint(self.run_dir / "stage1.pt")
            self.begin_stage(2)
        self._run_stage2()
        summary = self.summary()
        if self.dist.is_main:
            if self.refiners:
                atomic_write_text(
                    self.run_dir / "refinement_stats.json", json_text(self.refinement_stats.state_dict(), indent=1)
                )
            atomic_write_text(self.run_dir / "summary.json", json_text(summary, indent=2))
        return summary

    def _loader(self, name: str, batch_size: int, stream: int):
        ds = self.datasets["source" if name == "stage1" else name]
        return stream_loader(
            ds,
            batch_size,
            self.cfg.seed,
            stream,
            self.positions[name],
            self.cfg.data.num_workers,
            pin_memory=self.device.type == "cuda",
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )

    def _clips(self, batch: Mapping[str, Any], role: str = "source") -> dict[str, Tensor]:
        """The batch's clips on the device; a dataset with a ``device_transform`` (GPU decoding) finishes them there."""
        transform = getattr(self.datasets[role], "device_transform", None)
        if transform is not None:
            batch = transform(batch, self.device)
        return {m: batch[m].to(self.device, non_blocking=True) for m in self.model.modalities}

    def _stage1_batches(self) -> Iterator[StepBatch]:
        batches, sampler = self._loader("stage1", self.cfg.stage1.batch_size, 0)
        while True:
            batch = next(batches)
            sampler.advance()
            yield StepBatch(self._clips(batch), batch["label"].to(self.device))

    def _stage2_batches(self) -> Iterator[StepBatch]:
        half = self.cfg.stage2.batch_size // 2
        src_batches, src_sampler = self._loader("source", half, 1)
        tgt_batches, tgt_sampler = self._loader("target", half, 2)
        while True:
            src, tgt = next(src_batches), next(tgt_batches)
            src_sampler.advance()
            tgt_sampler.advance()
            yield StepBatch(
                self._clips(src),
                src["label"].to(self.device),
                self._clips(tgt, "target"),
                src.get("is_negative"),
                tgt.get("is_negative"),
                progress=self.step / max(1, self.cfg.stage2.steps),
                stats_labels={"source": src.get("label"), "target": tgt.get("label")},
            )

    def _run_stage1(self) -> None:
        self.module.train()
        while self.step < self.cfg.stage1.steps:
            log = self.training_step(self.next_batch())
            self.step += 1
            self._after_step(log)

    def _run_stage2(self) -> None:
        sc = self.cfg.stage2
        while self.step < sc.steps:
            self.module.train()
            log = self.training_step(self.next_batch())
            self.step += 1
            if self.dist.is_main and (self.step % self.cfg.evaluation.every == 0 or self.step == sc.steps):
                self.evaluations.append({"step": self.step, **self.evaluate()})
            if (
                self.dist.is_main
                and self.cfg.snapshots.enabled
                and ((self.cfg.snapshots.every and self.step % self.cfg.snapshots.every == 0) or self.step == sc.steps)
            ):
                self.write_snapshot()
            self._after_step(log)

    def _trim_metrics_log(self, resume: bool) -> None:
        """Make ``metrics.jsonl`` describe this run only: empty on a fresh start; on resume, the lines up to the checkpoint.

        Steps logged after the last checkpoint of an interrupted run are trained again, and an
        earlier run in the same folder is not this one; appending to either would log steps twice.
        """
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        kept = []
        if resume:
            reached = (self.stage, self.step)
            kept = [
                line
                for line in path.read_text().splitlines()
                if line and tuple(json.loads(line)[k] for k in ("stage", "step")) <= reached
            ]
        atomic_write_text(path, "".join(line + "\n" for line in kept))

    def _after_step(self, log: StepLog) -> None:
        metrics = {"stage": self.stage, "step": self.step, **log.as_dict()}
        if not self.dist.is_main:
            if self.on_step is not None:
                self.on_step(self.stage, self.step, metrics)
            return
        if self.evaluations and self.evaluations[-1]["step"] == self.step and self.stage == 2:
            metrics.update({f"eval/{k}": v for k, v in self.evaluations[-1].items() if k != "step"})
        with (self.run_dir / "metrics.jsonl").open("a") as fh:
            fh.write(json_text(metrics) + "\n")
        if self.step % self.cfg.checkpoints.every == 0:
            self.save_checkpoint(self.run_dir / "checkpoint.pt")
        if self.on_step is not None:
            self.on_step(self.stage, self.step, metrics)

    def autocast(self) -> AbstractContextManager[Any]:
        """bf16 autocast when ``precision = "bf16"``, else a no-op context."""
        enabled = self.cfg.precision == "bf16"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Target top-1 and mean class accuracy over the whole test split (:func:`experiments.evaluation.evaluate`)."""
        return evaluate(self.model, self.datasets, self.cfg, self.device, self.autocast)

    def summary(self) -> dict[str, Any]:
        last = self.evaluations[-self.cfg.evaluation.last :]
        return {
            "name": self.cfg.name,
            "method": self.cfg.method,
            "evaluations": self.evaluations,
            "top1_last": float(np.mean([e["top1"] for e in last]))
            if last
            else None,  # None: JSON null, never a bare NaN
            "mean_class_accuracy_last": float(np.mean([e["mean_class_accuracy"] for e in last])) if last else None,
            "evaluations_averaged": len(last),
        }

    # -- snapshots and checkpoints --------------------------------------------------------------
    def write_snapshot(self) -> Path:
        """Features of both training domains and the discriminators' weights, as an HDF5 snapshot."""
        from torch.utils.data import ConcatDataset, DataLoader

        from features.data.epic import EpicClips
        from features.extract import extract_snapshot

        parts = []
        for role in ("source", "target"):
            ds = self.datasets[role]
            if isinstance(ds, EpicClips):  # deterministic windows and centre crops for stored features
                ds = EpicClips(
                    ds.root,
                    ds.domain,
                    ds.split,
                    mode="test",
                    segments=ds.segments,
                    modalities=ds.modalities,
                    size=ds.size,
                    num_frames=ds.num_frames,
                    test_clips=1,
                    seed=ds.seed,
                    role=role,
                )
            parts.append(ds)
        loader = DataLoader(
            ConcatDataset(parts),
            batch_size=self.cfg.evaluation.batch_size,
            num_workers=self.cfg.data.num_workers,
            generator=torch.Generator().manual_seed(0),
        )
        backbones = {m: _Features(self.model, m) for m in self.model.modalities}
        path = self.run_dir / "snapshots" / f"step{self.step:06d}.h5"
        extract_snapshot(
            backbones,
            loader,
            path,
            self.cfg.model.num_classes,
            dtype=self.cfg.snapshots.dtype,
            step=self.step,
            stage=self.stage,
            config=self.cfg.to_dict(),
            discriminators=dict(self.discriminators),
            progress=False,
        )
        return path

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit for bit: the module, the optimizers, the refiners, positions, RNG."""
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "stage": self.stage,
            "step": self.step,
            "module": self.module.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "refiners": {
                f"{m}/{d}": r.state_dict(include_replay=self.cfg.checkpoints.replay)
                for (m, d), r in self.refiners.items()
            },
            "positions": {k: [p.epoch, p.batch] for k, p in self.positions.items()},
            "evaluations": json.dumps(self.evaluations),
            "refinement_stats": json.dumps(self.refinement_stats.state_dict()),
            "torch_rng": torch.get_rng_state(),
        }

    def save_checkpoint(self, path: Path) -> None:
        atomic_torch_save(self.state_dict(), path)

    def _read_checkpoint(self, path: Path) -> dict[str, Any]:
        return read_checkpoint(path, map_location=self.device)

    def start_stage2_from(self, path: Path) -> None:
        """Begin stage 2 from the model of another run's checkpoint (methods sharing one stage 1)."""
        state = self._read_checkpoint(path)
        prefix = "model."
        self.model.load_state_dict({k[len(prefix) :]: v for k, v in state["module"].items() if k.startswith(prefix)})
        self.begin_stage(2)
        torch.set_rng_state(state["torch_rng"].cpu())

    def load_checkpoint(self, path: Path) -> None:
        state = self._read_checkpoint(path)
        try:
            self._load_state(state)
        except (KeyError, RuntimeError, ValueError) as err:  # load_state_dict: missing keys, shape mismatches
            raise CheckpointError(
                f"{path} does not fit this run's config (model, refiners or optimizers differ: {one_line(err)}); "
                "resume with the config it was written with"
            ) from None

    def _load_state(self, state: dict[str, Any]) -> None:
        self._streams = None  # the data streams continue from the checkpoint's positions
        self.stage, self.step = int(state["stage"]), int(state["step"])
        self.module.load_state_dict(state["module"])
        self.optimizers = self._make_optimizers(self.stage)
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for key, refiner_state in state["refiners"].items():
            m, d = key.split("/")
            self.refiners[(m, d)].load_state_dict(refiner_state)
        for k, (epoch, batch) in state["positions"].items():
            self.positions[k] = StreamPosition(int(epoch), int(batch))
        self.evaluations = json.loads(state["evaluations"])
        self.refinement_stats.load_state_dict(json.loads(state["refinement_stats"]))
        torch.set_rng_state(state["torch_rng"].cpu())


class _Features(nn.Module):
    """One modality's backbone of a two-stream model as a clips -> features module (for snapshots)."""

    def __init__(self, model: nn.Module, modality: str) -> None:
        super().__init__()
        self.model, self.modality = model, modality

    def forward(self, clips: Tensor) -> Tensor:
        backbone = self.model.backbones[self.modality]
        return backbone.extract_features(clips) if hasattr(backbone, "extract_features") else backbone(clips)


def _f(t: Tensor) -> float:
    return float(t.detach())
