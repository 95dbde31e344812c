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
import itertools
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from experiments.builders import build_datasets, build_model
from experiments.config import ConfigError, RunConfig
from experiments.cotrain_module import CoTrainModule
from experiments.data_streams import StreamPosition, stream_loader, worker_init_fn
from experiments.device_prefetch import DevicePrefetcher
from experiments.distributed import convert_sync_batchnorm, init_distributed, wrap_ddp
from experiments.evaluation import evaluate
from experiments.evaluation.schedule import full_evaluation_steps, monitor_indices, monitor_steps
from experiments.loop_parts import build_parts, make_optimizer
from experiments.refiners import Refiner, after_backward_all
from experiments.refiners.stats import RefinementStats
from experiments.runs import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    LOCATION_KEYS,
    RESUMABLE_KEYS,
    RUN_FILES,
    CheckpointError,
    RunFolderError,
    RunLock,
    config_differences,
    one_line,
    read_checkpoint,
    remove_stale_temporaries,
    resume_state,
    usable_device,
)
from experiments.steps import StepBatch, StepContext, StepLog
from features.atomic_io import append_line, atomic_torch_save, atomic_write_text, json_text
from features.devices import resolve_device

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CoTrainer",
    "NonFiniteLossError",
    "build_model",
    "make_optimizer",
    "resolve_device",
]


class NonFiniteLossError(ConfigError):
    """A step's loss is NaN or inf; the message names the step and the term.

    A :class:`~experiments.config.ConfigError` because what fixes it is the run's config: its data
    (``data.root``), a learning rate, or ``nonfinite_loss = "skip"``; ``mmir train`` reports it as
    one line (exit 2).
    """


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
        if self.device.type == "cpu" and cfg.threads:
            torch.set_num_threads(cfg.threads)  # a run's numbers are bit-exact only at one thread count: the config's
        self.dist = init_distributed(cfg.distributed.backend, self.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if self.dist.enabled and cfg.nonfinite_loss == "skip":
            raise ConfigError(
                "nonfinite_loss = 'skip' runs in one process only: under torchrun a process that skips its backward "
                "would leave the others waiting in DDP's all-reduce; use nonfinite_loss = 'stop'"
            )
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
        # the agents' Q-network parameters, listed once: clearing their gradients every step without a module walk
        # (optimizers and checkpoints update these tensors in place, never replace them)
        self._agent_parameters = list(self.module.agents.parameters())
        self.refinement_stats = RefinementStats(cfg.model.num_classes)
        self.stage, self.step = 1, 0
        self.positions = {"stage1": StreamPosition(), "source": StreamPosition(), "target": StreamPosition()}
        self.evaluations: list[dict[str, float]] = []  # the full evaluations (experiments.evaluation.schedule)
        self._monitored: dict[str, float] | None = None  # the latest monitor's step and accuracies
        self.optimizers = self._make_optimizers(1)
        self.run_dir = cfg.run_dir()
        self._streams: Iterator[StepBatch] | None = None  # the current stage's batches (made on first use)
        self._metrics_file: tuple[int, int, int] | None = None  # (device, inode, size) of metrics.jsonl as last written

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
        """One DistributedDataParallel wrapper per stage and agents' phase (their graph settings differ: ``Parts.ddp_settings``).

        In stage 2 the agents' Q-networks get gradients only once their replays hold enough transitions:
        until then DDP must look for unused parameters every step; from then on it need not, and the
        wrapper is rebuilt once (every rank switches at the same step: replay sizes are the same on all).
        """
        if not (self.dist.enabled or ddp or getattr(self, "_ddp", False)):
            return
        learning = stage == 2 and self.parts.agents_learning()
        if getattr(self, "_wrapped", None) == (stage, learning):
            return
        if isinstance(self.forward, DistributedDataParallel):
            self.forward = self.module
            gc.collect()  # the old wrapper's reducer (and its gradient hooks) must be gone first
        self.forward = wrap_ddp(self.module, self.device, **self.parts.ddp_settings(stage, learning))
        self._wrapped = (stage, learning)
        self._ddp = True

    def begin_stage(self, stage: int, ddp: bool = False) -> None:
        """Start ``stage`` from its first step: its optimizers and DistributedDataParallel wrapper, fresh data streams.

        ``ddp``: wrap in DDP even outside torchrun (an initialised process group of one: benchmarks).
        """
        self.stage, self.step = stage, 0
        self.optimizers = self._make_optimizers(stage, ddp)
        self._close_streams()

    def close(self) -> None:
        """End the data streams and their prefetch thread (:meth:`run` does; a caller of :meth:`next_batch` should)."""
        self._close_streams()

    def _close_streams(self) -> None:
        """End the current data streams (and a prefetch thread); the next batch starts them from the positions."""
        if self._streams is not None:
            self._streams.close()
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
            log = self.strategy.step(self.step_context(), batch)
            self._check_finite(log.terms)  # its update is done: stop before it is logged or checkpointed
            return log
        refiners = list(self.refiners.values()) if self.stage == 2 else []
        for opt in self.optimizers.values():  # 1. clear the gradients of everything that trains
            opt.zero_grad(set_to_none=True)
        if refiners:  # the agents' Q-networks (the module holds every refiner's trainable modules)
            for parameter in self._agent_parameters:
                parameter.grad = None
        skip = self.cfg.nonfinite_loss == "skip"
        buffers = [b.detach().clone() for b in self.module.buffers()] if skip else []  # BatchNorm statistics
        if (
            getattr(self, "_ddp", False) and self.stage == 2
        ):  # the agents may have started learning: DDP's graph settings
            self._wrap(2)
        with self.autocast():  # 2. the forward work, inside DDP under torchrun (CoTrainModule.forward):
            out = self.forward(batch, self.stage)  # features -> logits -> refiners' keep masks -> objectives -> sum
        if skip and not bool(torch.isfinite(out.loss)):
            return self._skip_step(out, buffers)
        # 3. what the refiners removed, for reports: counted before the backward, while its inputs are in cache
        self.refinement_stats.add_all(out.refinement, batch.stats_labels)
        out.loss.backward()  # 4. one backward for L_cls + L_adv + L_dqn (+ the other objectives)
        for opt in self.optimizers.values():  # 5. step the backbones, heads and discriminators
            opt.step()
        after_backward_all(refiners)  # 6. the agents' own updates (optimizer step, target sync, epsilon)
        log = StepLog({"loss": _f(out.loss), **{k: _f(v) for k, v in out.terms.items()}}, out.refinement)
        self._check_finite(log.terms)  # reads the floats the log holds anyway: no extra device sync
        return log

    def _skip_step(self, out: Any, buffers: list[Tensor]) -> StepLog:
        """``nonfinite_loss = "skip"``: no backward and no update; the module's buffers (BatchNorm statistics) as
        before the forward. What the refiners did in the forward (their selections, their replay) stays."""
        with torch.no_grad():
            for buffer, saved in zip(self.module.buffers(), buffers):
                buffer.copy_(saved)
        terms = {"loss": _f(out.loss), **{k: _f(v) for k, v in out.terms.items()}}
        return StepLog({**terms, "nonfinite_skipped": 1.0})

    def _check_finite(self, terms: Mapping[str, float]) -> None:
        """Stop at the first step whose loss is NaN or inf, naming the step and the first such term."""
        if math.isfinite(terms["loss"]):
            return
        bad = next(((k, v) for k, v in terms.items() if k != "loss" and not math.isfinite(v)), None)
        which = f"{bad[0]} = {bad[1]}" if bad else "every term is finite: their sum overflowed"
        raise NonFiniteLossError(
            f"stage {self.stage} step {self.step + 1}: the loss is {terms['loss']} ({which}); the run stops before this "
            "step is logged or checkpointed. Check the data for NaN/inf and the learning rate, or set "
            'nonfinite_loss = "skip" to skip such batches'
        )

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
        try:
            if not self.dist.is_main:
                return self._run(resume)
            with RunLock(self.run_dir):
                remove_stale_temporaries(
                    self.run_dir, RUN_FILES
                )  # of a killed write; ours alone while we hold the lock
                return self._run(resume)
        finally:
            self.close()

    def _run(self, resume: bool) -> dict[str, Any]:
        kept: list[str] = []  # the metrics records this run continues (all of them before its checkpoint)
        if resume:
            path = resume_state(self.run_dir)
            state = self._read_checkpoint(path)
            self._check_resumed_config(state, path)
            if self.dist.is_main:
                kept = self._resumed_metrics(path, (int(state["stage"]), int(state["step"])))
            self._load_checkpoint_state(state, path)
        elif self.stage == 1 and self.step == 0:
            torch.manual_seed(self.cfg.seed + 2)  # dropout draws from the global generator: own its state
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.json", json_text(self.cfg.to_dict(), indent=2))
            self._start_metrics_log(kept)
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

    def _prefetching(self) -> bool:
        """Whether the next batch is finished on the device while the step runs (``data.prefetch``)."""
        if self.cfg.data.prefetch != "auto":
            return self.cfg.data.prefetch == "on"
        return self.device.type == "cuda" and self.cfg.data.decode == "gpu"

    def _finished(self, raw: Iterator[Any], finish: Callable[[Any], Any]) -> Iterator[tuple[Any, Any]]:
        """``(raw, finish(raw))`` per raw batch: finished in a prefetch thread or here, in the same order."""
        if not self._prefetching():
            for batch in raw:
                yield batch, finish(batch)
            return
        with DevicePrefetcher(raw, finish, self.device) as prefetched:
            yield from prefetched

    def _stage1_batches(self) -> Iterator[StepBatch]:
        batches, sampler = self._loader("stage1", self.cfg.stage1.batch_size, 0)
        for batch, clips in self._finished(batches, self._clips):
            sampler.advance()  # as a batch is used, not as it is fetched: checkpoints record what was trained on
            yield StepBatch(clips, batch["label"].to(self.device))

    def _stage2_batches(self) -> Iterator[StepBatch]:
        half = self.cfg.stage2.batch_size // 2
        src_batches, src_sampler = self._loader("source", half, 1)
        tgt_batches, tgt_sampler = self._loader("target", half, 2)
        pairs = ((next(src_batches), next(tgt_batches)) for _ in itertools.count())
        for (src, tgt), (src_clips, tgt_clips) in self._finished(
            pairs, lambda pair: (self._clips(pair[0]), self._clips(pair[1], "target"))
        ):
            src_sampler.advance()
            tgt_sampler.advance()
            yield StepBatch(
                src_clips,
                src["label"].to(self.device),
                tgt_clips,
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

    def evaluation_steps(self) -> tuple[list[int], list[int]]:
        """``(full, monitor)``: the stage-2 steps that test on the whole test split, and those that run the monitor."""
        e = self.cfg.evaluation
        full = full_evaluation_steps(self.cfg.stage2.steps, e.every, e.last, e.schedule)
        return full, (monitor_steps(self.cfg.stage2.steps, e.monitor_every, full) if e.schedule == "protocol" else [])

    def _run_stage2(self) -> None:
        sc = self.cfg.stage2
        full, monitors = (set(s) for s in self.evaluation_steps())
        while self.step < sc.steps:
            self.module.train()
            log = self.training_step(self.next_batch())
            self.step += 1
            if self.dist.is_main and self.step in full:
                self.evaluations.append({"step": self.step, **self.evaluate()})
            elif self.dist.is_main and self.step in monitors:
                self._monitored = {"step": self.step, **self.monitor()}
            if (
                self.dist.is_main
                and self.cfg.snapshots.enabled
                and ((self.cfg.snapshots.every and self.step % self.cfg.snapshots.every == 0) or self.step == sc.steps)
            ):
                self.write_snapshot()
            self._after_step(log)

    # -- the run's records ------------------------------------------------------------------------
    def _check_resumed_config(self, state: Mapping[str, Any], path: Path) -> None:
        """Refuse a resume whose config is not the one the checkpoint was trained with (but for the step budgets).

        The checkpoint keeps its config, so this holds whether or not ``config.json`` is still there;
        a checkpoint of an earlier mmir without one is checked against ``config.json``.
        """
        stored_json = state.get("config")
        config_path = self.run_dir / "config.json"
        if isinstance(stored_json, str):
            stored, source = json.loads(stored_json), f"{path} does not fit this config: its own config differs"
        elif config_path.is_file():
            try:
                stored = json.loads(config_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise RunFolderError(
                    f"{config_path}: unreadable ({one_line(err)}); cannot check that --resume continues the same run"
                ) from None
            source = f"the config differs from the run's {config_path}"
        else:
            raise RunFolderError(
                f"{config_path} is missing and {path} was written by an mmir that kept no config in checkpoints: "
                "nothing says what this run trained. Put config.json back to --resume, or start again with --overwrite"
            )
        changed = config_differences(stored, self.cfg.to_dict(), ignore=RESUMABLE_KEYS + LOCATION_KEYS)
        if changed:
            raise RunFolderError(
                f"--resume: {source} in {'; '.join(changed)} "
                f"(only {', '.join(RESUMABLE_KEYS)} may change); start a new run under another name instead"
            )
        if self.dist.is_main and not config_path.is_file():
            warnings.warn(
                f"{config_path} was missing; written again from the config kept in {path}", RuntimeWarning, stacklevel=3
            )

    def _resumed_metrics(self, checkpoint: Path, reached: tuple[int, int]) -> list[str]:
        """The lines of ``metrics.jsonl`` up to the checkpoint's step, checked and repaired.

        Steps logged after the checkpoint are trained again, so their lines go. A damaged last line (a
        write cut short by a kill or a full disk) is cut with a warning; a damaged or missing record up
        to the checkpoint is an error, since the run's record would otherwise be silently partial.
        """
        path = self.run_dir / "metrics.jsonl"
        where = f"{checkpoint.name}'s stage {reached[0]} step {reached[1]}"
        recover = f"restore {path.name} from a copy and --resume, or start the run again with --overwrite"
        if not path.is_file():
            if reached == (1, 0):
                return []
            raise RunFolderError(
                f"{path} is missing, but the run has trained up to {where}: its records are lost; {recover}"
            )
        lines = path.read_bytes().decode("utf-8", errors="replace").split("\n")
        entries = [(number, line, _record_key(line)) for number, line in enumerate(lines, 1) if line.strip()]
        cut = []
        if entries and entries[-1][2] is None:
            cut.append(entries.pop())
        for i, (number, line, key) in enumerate(entries):
            if key is not None:
                continue
            if any(k is not None and k <= reached for _, _, k in entries[i + 1 :]):
                raise RunFolderError(
                    f"{path}: line {number} is not a metrics record with a stage and a step ({_excerpt(line)}), "
                    f"before {where}; {recover}"
                )
            cut.append((number, line, key))  # after the checkpoint: trained again anyway
        kept = [(key, line) for _, line, key in entries if key is not None and key <= reached]
        problem = _gap([key for key, _ in kept], reached)
        if problem:
            raise RunFolderError(f"{path}: {problem} before {where}; {recover}")
        for number, line, _ in cut:
            warnings.warn(
                f"{path}: cut damaged line {number} ({_excerpt(line)}), after {where}; those steps are trained again",
                RuntimeWarning,
                stacklevel=3,
            )
        return [line for _, line in kept]

    def _start_metrics_log(self, lines: list[str]) -> None:
        """Write ``metrics.jsonl`` afresh with ``lines`` (a resumed run's records) and remember which file it is."""
        path = self.run_dir / "metrics.jsonl"
        atomic_write_text(path, "".join(line + "\n" for line in lines))
        st = os.stat(path)
        self._metrics_file = (st.st_dev, st.st_ino, st.st_size)

    def _append_metrics(self, record: Mapping[str, Any]) -> None:
        """Append one record, first checking that the log is still the file this run wrote (not deleted or replaced)."""
        path = self.run_dir / "metrics.jsonl"
        if self._metrics_file is not None:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            if st is None or (st.st_dev, st.st_ino, st.st_size) != self._metrics_file:
                what = (
                    "was deleted or moved away"
                    if st is None
                    else "was replaced or changed by another program"
                    if (st.st_dev, st.st_ino) != self._metrics_file[:2]
                    else f"was changed by another program ({st.st_size} bytes, this run wrote {self._metrics_file[2]})"
                )
                raise RunFolderError(
                    f"{path} {what} while the run trained (noticed at stage {self.stage} step {self.step}): the run's "
                    "records are incomplete, so it stops; start it again with --overwrite (or put the file back and --resume)"
                )
        size = append_line(path, json_text(record))  # a whole line or none, also on a full disk
        if self._metrics_file is not None:
            self._metrics_file = (*self._metrics_file[:2], size)

    def _after_step(self, log: StepLog) -> None:
        metrics = {"stage": self.stage, "step": self.step, **log.as_dict()}
        if not self.dist.is_main:
            if self.on_step is not None:
                self.on_step(self.stage, self.step, metrics)
            return
        if self.evaluations and self.evaluations[-1]["step"] == self.step and self.stage == 2:
            metrics.update({f"eval/{k}": v for k, v in self.evaluations[-1].items() if k != "step"})
        if self._monitored is not None and self._monitored["step"] == self.step and self.stage == 2:
            metrics.update({f"monitor/{k}": v for k, v in self._monitored.items() if k != "step"})
        self._append_metrics(metrics)
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

    def monitor(self) -> dict[str, float]:
        """The cheap progress check: top-1 and mean class accuracy on the fixed monitor subsample of test windows."""
        indices = monitor_indices(len(self.datasets["test"]), self.cfg.evaluation.monitor_windows)
        return evaluate(self.model, self.datasets, self.cfg, self.device, self.autocast, indices=indices)

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
            worker_init_fn=worker_init_fn,
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
            "config": json.dumps(self.cfg.to_dict()),  # what trained: a resume must not change it (config.json may go)
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
        """Continue from the checkpoint at ``path`` (its config is not compared: :meth:`run` with ``resume`` does that)."""
        self._load_checkpoint_state(self._read_checkpoint(path), path)

    def _load_checkpoint_state(self, state: dict[str, Any], path: Path) -> None:
        try:
            self._load_state(state)
        except (KeyError, RuntimeError, ValueError) as err:  # load_state_dict: missing keys, shape mismatches
            raise CheckpointError(
                f"{path} does not fit this run's config (model, refiners or optimizers differ: {one_line(err)}); "
                "resume with the config it was written with"
            ) from None

    def _load_state(self, state: dict[str, Any]) -> None:
        self._close_streams()  # the data streams continue from the checkpoint's positions
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


def _record_key(line: str) -> tuple[int, int] | None:
    """``(stage, step)`` of a metrics line, or None for a line that is not such a record (cut short, foreign)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    stage, step = record.get("stage"), record.get("step")
    if type(stage) is not int or type(step) is not int:
        return None
    return stage, step


def _excerpt(line: str, limit: int = 60) -> str:
    return repr(line if len(line) <= limit else line[:limit] + "...")


def _gap(keys: list[tuple[int, int]], reached: tuple[int, int]) -> str:
    """What is missing from the records ``keys`` of a run at ``reached`` (empty: steps 1..N of each stage, in order).

    Stage 1 may be absent altogether: a run that started stage 2 from another run's model logs none.
    """
    for stage in sorted({s for s, _ in keys} | {reached[0]}):
        steps = [step for s, step in keys if s == stage]
        last = reached[1] if stage == reached[0] else (steps[-1] if steps else 0)
        if steps != list(range(1, last + 1)):
            missing = sorted(set(range(1, last + 1)) - set(steps))
            if missing:
                return f"the records of stage {stage} step(s) {_ranges(missing)} are missing"
            return f"the records of stage {stage} are duplicated or out of order"
    if keys != sorted(keys):
        return "the records are out of order"
    return ""


def _ranges(values: list[int]) -> str:
    """``[1, 2, 3, 7]`` as ``1-3, 7``."""
    out: list[str] = []
    start = prev = values[0]
    for v in [*values[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        out.append(f"{start}-{prev}" if prev > start else str(start))
        if v is not None:
            start = prev = v
    return ", ".join(out)
