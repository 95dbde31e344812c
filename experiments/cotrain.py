"""Two-stage MMIR co-training (paper sections 3.3, 3.4, 4.1).

Stage 1 trains the backbones and heads on labelled source clips (eq. 11). Stage 2 adds, per
modality k, the discriminator D^k and the S-/T-agents: the features of each half-batch are cut
into candidate sets, the agents select rows out, and L_adv (eq. 8) is computed on the kept
instances only; L = L_cls + L_adv + L_dqn (eq. 9/12). Nothing here names a modality: the model's
``modalities`` come from the config. :func:`stage2_step` is the whole stage-2 step in one place.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from agents.dqn import atomic_torch_save
from experiments.builders import build_datasets
from experiments.config import RunConfig
from experiments.data_streams import StreamPosition, stream_loader
from experiments.distributed import average_gradients, barrier, broadcast_buffers, init_distributed
from experiments.losses import CorrespondenceHead, adversarial_loss, classification_loss, grl_coefficient
from experiments.methods.adabn import adapt_batchnorm
from experiments.methods.mcd import classifier_discrepancy, fused_logits, mcd_losses, second_heads
from experiments.methods.mmd import mk_mmd
from experiments.refinement import DomainRefiner, RefinementResult, RefinementStats
from mmir_env.discriminator import DomainDiscriminator

CHECKPOINT_FORMAT = "mmir-cotrain"
CHECKPOINT_VERSION = 1


@dataclass
class StepOutput:
    """Losses and agent statistics of one training step (floats, for logs and progress)."""

    loss: float
    cls: float
    adv: float = 0.0
    dqn: float = 0.0
    corr: float = 0.0
    mmd: float = 0.0
    discrepancy: float = 0.0
    refinement: dict[str, RefinementResult] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        out = {"loss": self.loss, "cls": self.cls, "adv": self.adv, "dqn": self.dqn, "corr": self.corr}
        if self.mmd:
            out["mmd"] = self.mmd
        if self.discrepancy:
            out["discrepancy"] = self.discrepancy
        for key, r in self.refinement.items():
            out[f"reward/{key}"] = r.mean_reward
            out[f"removed/{key}"] = r.removed
            out[f"removal_rate/{key}"] = r.removed / max(1, r.keep.numel())
            out[f"negatives_removed/{key}"] = r.negatives_removed
            out[f"negatives_present/{key}"] = r.negatives_present
        return out


def extract(model: nn.Module, source: Mapping[str, Tensor], target: Mapping[str, Tensor] | None, per_domain_bn: bool) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """Features of both halves: separate forwards (per-domain BatchNorm statistics, MM-SADA) or one joint forward."""
    if target is None:
        return model.extract_features(source), None
    if per_domain_bn:
        return model.extract_features(source), model.extract_features(target)
    n = next(iter(source.values())).shape[0]
    joint = model.extract_features({k: torch.cat([source[k], target[k]]) for k in source})
    return {k: v[:n] for k, v in joint.items()}, {k: v[n:] for k, v in joint.items()}


def stage2_step(
    model: nn.Module,
    discriminators: Mapping[str, nn.Module],
    refiners: Mapping[tuple[str, str], DomainRefiner],
    source: Mapping[str, Tensor],
    labels: Tensor,
    target: Mapping[str, Tensor],
    *,
    adversarial: bool = True,
    per_domain_bn: bool = True,
    correspondence: CorrespondenceHead | None = None,
    correspondence_weight: float = 0.0,
    source_negative: Tensor | None = None,
    target_negative: Tensor | None = None,
    mmd_weight: float = 0.0,
) -> tuple[Tensor, StepOutput]:
    """The stage-2 loss (eq. 12) of one batch; the caller backpropagates and steps the optimizers.

    ``source``/``target``: modality -> clips of each half-batch. Only source ``labels`` exist here:
    the classifier never sees target labels. ``refiners`` holds the enabled agents, keyed by
    ``(modality, "source"|"target")``; a modality without one keeps all its rows. ``mmd_weight``
    adds the DAN baseline's MK-MMD between the halves' features per modality.
    """
    f_src, f_tgt = extract(model, source, target, per_domain_bn)
    assert f_tgt is not None
    l_cls = classification_loss(model.classify(f_src).logits, labels)
    l_adv = torch.zeros((), device=labels.device)
    l_dqn = torch.zeros((), device=labels.device)
    results: dict[str, RefinementResult] = {}
    for modality in model.modalities:
        keep = {}
        for domain, feats, negative in (("source", f_src[modality], source_negative), ("target", f_tgt[modality], target_negative)):
            refiner = refiners.get((modality, domain))
            if refiner is None:
                keep[domain] = torch.ones(feats.shape[0], dtype=torch.bool, device=feats.device)
                continue
            result = refiner.refine(feats, negative)
            results[f"{modality}/{domain}"] = result
            keep[domain] = result.keep
            l_dqn = l_dqn + refiner.loss()
        if adversarial:
            l_adv = l_adv + adversarial_loss(discriminators[modality], f_src[modality], f_tgt[modality], keep["source"], keep["target"])
    l_corr = torch.zeros((), device=labels.device)
    if correspondence is not None and correspondence_weight > 0:
        for feats in (f_src, f_tgt):
            l_corr = l_corr + correspondence([feats[m] for m in model.modalities])
    total = l_cls + l_adv + l_dqn + correspondence_weight * l_corr
    l_mmd = torch.zeros((), device=labels.device)
    if mmd_weight > 0:
        for modality in model.modalities:
            l_mmd = l_mmd + mk_mmd(f_src[modality].float(), f_tgt[modality].float())
        total = total + mmd_weight * l_mmd
    return total, StepOutput(loss=_f(total), cls=_f(l_cls), adv=_f(l_adv), dqn=_f(l_dqn), corr=_f(l_corr), mmd=_f(l_mmd),
                             refinement=results)


def stage1_step(model: nn.Module, source: Mapping[str, Tensor], labels: Tensor, correspondence: CorrespondenceHead | None = None,
                correspondence_weight: float = 0.0) -> tuple[Tensor, StepOutput]:
    """The stage-1 loss (eq. 11): L_cls, plus the optional correspondence term."""
    feats, _ = extract(model, source, None, True)
    l_cls = classification_loss(model.classify(feats).logits, labels)
    l_corr = torch.zeros((), device=labels.device)
    if correspondence is not None and correspondence_weight > 0:
        l_corr = correspondence([feats[m] for m in model.modalities])
    total = l_cls + correspondence_weight * l_corr
    return total, StepOutput(loss=_f(total), cls=_f(l_cls), corr=_f(l_corr))


def _f(t: Tensor) -> float:
    return float(t.detach())


def make_optimizer(params: list[nn.Parameter], optimizer: str, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(cfg: RunConfig) -> nn.Module:
    """The config's model (``model.backbone``; random init seeded by ``cfg.seed``, or checkpoints)."""
    from experiments import builders

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return builders.build_model(cfg)


class CoTrainer:
    """Runs a :class:`~experiments.config.RunConfig`: stage 1, stage 2, evaluations, snapshots, checkpoints.

    :param cfg: the run's configuration.
    :param datasets: optional ``{"source": ..., "target": ..., "test": ...}`` clip datasets
        (default: :func:`experiments.builders.build_datasets` of ``cfg.data.kind``).
    :param model: optional model (default: :func:`build_model`).
    :param on_step: called after every step with ``(stage, step, metrics)`` (progress display).
    """

    def __init__(self, cfg: RunConfig, datasets: Mapping[str, Any] | None = None, model: nn.Module | None = None,
                 on_step: Callable[[int, int, dict[str, float]], None] | None = None) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.dist = init_distributed(cfg.distributed.backend, self.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.on_step = on_step
        self.datasets = dict(datasets) if datasets is not None else build_datasets(cfg)
        torch.manual_seed(cfg.seed)
        self.model = (model or build_model(cfg)).to(self.device)
        dims = self.model.feature_dims
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 1)
            self.discriminators = nn.ModuleDict({
                m: DomainDiscriminator(dims[m], cfg.discriminator.hidden_dim, negative_slope=cfg.discriminator.negative_slope)
                for m in self.model.modalities
            }).to(self.device)
            weights = (cfg.stage1.correspondence_weight, cfg.stage2.correspondence_weight)
            self.correspondence = (CorrespondenceHead([dims[m] for m in self.model.modalities]).to(self.device)
                                   if len(self.model.modalities) > 1 and max(weights) > 0 else None)
        half = cfg.stage2.batch_size // 2
        self.refiners: dict[tuple[str, str], DomainRefiner] = {}
        if cfg.stage2.refinement:
            for i, (modality, domain) in enumerate((m, d) for m in self.model.modalities for d in ("source", "target")):
                enabled = cfg.agents.s_agents if domain == "source" else cfg.agents.t_agents
                if modality in enabled:
                    self.refiners[(modality, domain)] = DomainRefiner(
                        modality, domain, self.discriminators[modality], dims[modality], half, cfg.agents, cfg.env,
                        seed=cfg.seed * 100 + i, device=self.device)
        self.second_heads: nn.ModuleDict | None = None
        if cfg.stage2.mcd:
            for attr in ("backbones", "heads", "feature_dims", "num_classes"):
                if not hasattr(self.model, attr):
                    raise ValueError(f"stage2.mcd needs a model with backbones and heads (TwoStream); {type(self.model).__name__} has no {attr!r}")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed + 3)
                self.second_heads = second_heads(self.model, cfg.model.dropout).to(self.device)
        self.classifier_optimizer: torch.optim.Optimizer | None = None
        self.refinement_stats = RefinementStats(cfg.model.num_classes)
        self.stage, self.step = 1, 0
        self.positions = {"stage1": StreamPosition(), "source": StreamPosition(), "target": StreamPosition()}
        self.evaluations: list[dict[str, float]] = []
        self.optimizer = self._make_optimizer(1)
        self.run_dir = cfg.run_dir()

    # -- construction ---------------------------------------------------------------------------
    def _make_optimizer(self, stage: int) -> torch.optim.Optimizer:
        sc = self.cfg.stage1 if stage == 1 else self.cfg.stage2
        if stage == 2 and self.second_heads is not None:
            # MCD steps the generator and the two classifiers separately (Saito et al. 2018)
            heads = [p for p in self.model.heads.parameters() if p.requires_grad] + list(self.second_heads.parameters())
            self.classifier_optimizer = make_optimizer(heads, sc.optimizer, sc.lr, sc.weight_decay, sc.momentum)
            generator = [p for p in self.model.backbones.parameters() if p.requires_grad]
            return make_optimizer(generator, sc.optimizer, sc.lr, sc.weight_decay, sc.momentum)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if stage == 2:
            params += list(self.discriminators.parameters())
        if self.correspondence is not None:
            params += list(self.correspondence.parameters())
        return make_optimizer(params, sc.optimizer, sc.lr, sc.weight_decay, sc.momentum)

    # -- training -------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict[str, Any]:
        """Train both stages (continuing from the run's checkpoint with ``resume``); returns the summary."""
        if resume:
            self.load_checkpoint(self.run_dir / "checkpoint.pt")
        elif self.stage == 1 and self.step == 0:
            torch.manual_seed(self.cfg.seed + 2)  # dropout draws from the global generator: own its state
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
            self._trim_metrics_log(resume)
        if self.stage == 1:
            self._run_stage1()
            if self.dist.is_main:
                self.save_checkpoint(self.run_dir / "stage1.pt")
            self.stage, self.step = 2, 0
            self.optimizer = self._make_optimizer(2)
        self._run_stage2()
        summary = self.summary()
        if self.dist.is_main:
            if self.refiners:
                (self.run_dir / "refinement_stats.json").write_text(json.dumps(self.refinement_stats.state_dict(), indent=1))
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _loader(self, name: str, batch_size: int, stream: int):
        ds = self.datasets["source" if name == "stage1" else name]
        it, sampler = stream_loader(ds, batch_size, self.cfg.seed, stream, self.positions[name], self.cfg.data.num_workers,
                                    pin_memory=self.device.type == "cuda", rank=self.dist.rank, world_size=self.dist.world_size)
        return it, sampler

    def _run_stage1(self) -> None:
        sc = self.cfg.stage1
        if self.step >= sc.steps:
            return
        batches, sampler = self._loader("stage1", sc.batch_size, 0)
        self.model.train()
        while self.step < sc.steps:
            batch = next(batches)
            sampler.advance()
            clips = {m: batch[m].to(self.device, non_blocking=True) for m in self.model.modalities}
            labels = batch["label"].to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                loss, out = stage1_step(self.model, clips, labels, self.correspondence, sc.correspondence_weight)
            loss.backward()
            self._sync_gradients()
            self.optimizer.step()
            broadcast_buffers(self.model, self.dist)
            self.step += 1
            self._after_step(out)

    def _run_stage2(self) -> None:
        sc = self.cfg.stage2
        half = sc.batch_size // 2
        if self.step >= sc.steps:
            return
        src_batches, src_sampler = self._loader("source", half, 1)
        tgt_batches, tgt_sampler = self._loader("target", half, 2)
        while self.step < sc.steps:
            self.model.train()
            self.discriminators.train()
            src, tgt = next(src_batches), next(tgt_batches)
            src_sampler.advance()
            tgt_sampler.advance()
            coeff = grl_coefficient(self.cfg.discriminator.grl_schedule, self.cfg.discriminator.grl_scale, self.step / max(1, sc.steps))
            for d in self.discriminators.values():
                d.grl.coeff = coeff
            source = {m: src[m].to(self.device, non_blocking=True) for m in self.model.modalities}
            target = {m: tgt[m].to(self.device, non_blocking=True) for m in self.model.modalities}
            if self.second_heads is not None:
                out = self._mcd_step(source, src["label"].to(self.device), target)
                self._finish_stage2_step(out)
                continue
            self.optimizer.zero_grad(set_to_none=True)
            for r in self.refiners.values():
                r.agent.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                loss, out = stage2_step(
                    self.model, self.discriminators, self.refiners, source, src["label"].to(self.device), target,
                    adversarial=sc.adversarial, per_domain_bn=self.cfg.model.batchnorm == "per-domain",
                    correspondence=self.correspondence, correspondence_weight=sc.correspondence_weight,
                    source_negative=src.get("is_negative"), target_negative=tgt.get("is_negative"),
                    mmd_weight=sc.mmd_weight,
                )
            loss.backward()
            self._sync_gradients()
            self.optimizer.step()
            for r in self.refiners.values():
                if len(r.agent.replay) >= r.agent.learning_starts:
                    r.agent.optimizer_step()
            for key, result in out.refinement.items():
                self.refinement_stats.add(key, result, (src if key.endswith("/source") else tgt).get("label"))
            self._finish_stage2_step(out)

    def _finish_stage2_step(self, out: StepOutput) -> None:
        """Buffers, step count, evaluation, snapshot, logs: the same after every kind of stage-2 step."""
        sc = self.cfg.stage2
        broadcast_buffers(self.model, self.dist)
        self.step += 1
        if self.dist.is_main and (self.step % self.cfg.evaluation.every == 0 or self.step == sc.steps):
            self.evaluations.append({"step": self.step, **self.evaluate()})
        if self.dist.is_main and self.cfg.snapshots.enabled and (
                (self.cfg.snapshots.every and self.step % self.cfg.snapshots.every == 0) or self.step == sc.steps):
            self.write_snapshot()
        self._after_step(out)

    def _mcd_step(self, source: dict[str, Tensor], labels: Tensor, target: dict[str, Tensor]) -> StepOutput:
        """One MCD batch: (A) source loss for G, C1, C2; (B) C1, C2 maximise the target discrepancy; (C) G minimises it k times."""
        assert self.second_heads is not None and self.classifier_optimizer is not None
        per_domain = self.cfg.model.batchnorm == "per-domain"
        optimizers = (self.optimizer, self.classifier_optimizer)

        def zero() -> None:
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)

        zero()
        with self._autocast():
            f_src, _ = extract(self.model, source, None, per_domain)
            cls, _ = mcd_losses(self.model, self.second_heads, f_src, labels, None)
        cls.backward()
        self._sync_gradients()
        for opt in optimizers:
            opt.step()
        zero()
        with self._autocast():
            with torch.no_grad():
                f_src, f_tgt = extract(self.model, source, target, per_domain)
            cls_b, disc_b = mcd_losses(self.model, self.second_heads, f_src, labels, f_tgt)
        (cls_b - disc_b).backward()
        self._sync_gradients()
        self.classifier_optimizer.step()
        disc_c = torch.zeros(())
        for _ in range(self.cfg.stage2.mcd_generator_steps):
            zero()
            with self._autocast():
                f_tgt = self.model.extract_features(target)
                disc_c = classifier_discrepancy(self.model.classify(f_tgt).logits,
                                                fused_logits(self.second_heads, f_tgt, getattr(self.model, "fusion", "sum")))
            disc_c.backward()
            self._sync_gradients()
            self.optimizer.step()
        zero()
        return StepOutput(loss=_f(cls), cls=_f(cls), discrepancy=_f(disc_c))

    def _sync_gradients(self) -> None:
        """Average gradients over processes (no-op in a single process); keeps every replica identical."""
        modules: list[nn.Module] = [self.model, self.discriminators]
        if self.correspondence is not None:
            modules.append(self.correspondence)
        modules += [r.agent.q_net for r in self.refiners.values()]
        if self.second_heads is not None:
            modules.append(self.second_heads)
        average_gradients(modules, self.dist)

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
            kept = [line for line in path.read_text().splitlines() if line and tuple(json.loads(line)[k] for k in ("stage", "step")) <= reached]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)

    def _after_step(self, out: StepOutput) -> None:
        barrier(self.dist)  # the main process may have evaluated or written a snapshot
        if not self.dist.is_main:
            if self.on_step is not None:
                self.on_step(self.stage, self.step, {"stage": self.stage, "step": self.step, **out.as_dict()})
            return
        metrics = {"stage": self.stage, "step": self.step, **out.as_dict()}
        if self.evaluations and self.evaluations[-1]["step"] == self.step and self.stage == 2:
            metrics.update({f"eval/{k}": v for k, v in self.evaluations[-1].items() if k != "step"})
        with (self.run_dir / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        if self.step % self.cfg.checkpoints.every == 0:
            self.save_checkpoint(self.run_dir / "checkpoint.pt")
        if self.on_step is not None:
            self.on_step(self.stage, self.step, metrics)

    def _autocast(self):
        enabled = self.cfg.precision == "bf16"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Target top-1 and mean class accuracy over the whole test split (every window, none dropped).

        The softmax of the fused logits is averaged over each segment's windows (paper 4.2, MM-SADA).
        """
        from torch.utils.data import DataLoader

        ds = self.datasets["test"]
        was_training = self.model.training
        self.model.eval()
        model = self.model
        if self.cfg.evaluation.adabn:  # AdaBN: a copy with the target training clips' BatchNorm statistics
            # own generator: a DataLoader without one draws its seed from the global RNG, which would
            # shift training's dropout stream and make AdaBN's training differ from source-only's
            target = DataLoader(self.datasets["target"], batch_size=self.cfg.evaluation.batch_size, shuffle=False,
                                num_workers=self.cfg.data.num_workers, generator=torch.Generator().manual_seed(0))
            model = adapt_batchnorm(self.model, target, self.model.modalities, self.device, self.cfg.evaluation.adabn_batches)
        loader = DataLoader(ds, batch_size=self.cfg.evaluation.batch_size, shuffle=False, drop_last=False,
                            num_workers=self.cfg.data.num_workers, generator=torch.Generator().manual_seed(0))
        probs: dict[int, Tensor] = {}
        labels: dict[int, int] = {}
        for batch in loader:
            clips = {m: batch[m].to(self.device) for m in self.model.modalities}
            with self._autocast():
                p = torch.softmax(model(clips).logits.float(), dim=1).cpu()
            for uid, label, row in zip(batch["uid"].tolist(), batch["label"].tolist(), p):
                probs[uid] = probs.get(uid, 0) + row
                labels[uid] = label
        self.model.train(was_training)
        uids = sorted(probs)
        pred = torch.stack([probs[u] for u in uids]).argmax(1).numpy()
        truth = np.array([labels[u] for u in uids])
        valid = truth >= 0
        correct = pred[valid] == truth[valid]
        per_class = [float(correct[truth[valid] == c].mean()) for c in np.unique(truth[valid])]
        return {"top1": float(correct.mean()), "mean_class_accuracy": float(np.mean(per_class)), "segments": int(valid.sum())}

    def summary(self) -> dict[str, Any]:
        last = self.evaluations[-self.cfg.evaluation.last:]
        return {
            "name": self.cfg.name,
            "method": self.cfg.method,
            "evaluations": self.evaluations,
            "top1_last": float(np.mean([e["top1"] for e in last])) if last else float("nan"),
            "mean_class_accuracy_last": float(np.mean([e["mean_class_accuracy"] for e in last])) if last else float("nan"),
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
                ds = EpicClips(ds.root, ds.domain, ds.split, mode="test", segments=ds.segments, modalities=ds.modalities,
                               size=ds.size, num_frames=ds.num_frames, test_clips=1, seed=ds.seed, role=role)
            parts.append(ds)
        loader = DataLoader(ConcatDataset(parts), batch_size=self.cfg.evaluation.batch_size, num_workers=self.cfg.data.num_workers,
                            generator=torch.Generator().manual_seed(0))
        backbones = {m: _Features(self.model, m) for m in self.model.modalities}
        path = self.run_dir / "snapshots" / f"step{self.step:06d}.h5"
        extract_snapshot(backbones, loader, path, self.cfg.model.num_classes, dtype=self.cfg.snapshots.dtype, step=self.step, stage=self.stage,
                         config=self.cfg.to_dict(), discriminators=dict(self.discriminators), progress=False)
        return path

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "stage": self.stage, "step": self.step,
            "model": self.model.state_dict(), "discriminators": self.discriminators.state_dict(),
            "correspondence": None if self.correspondence is None else self.correspondence.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "agents": {f"{m}/{d}": r.agent.state_dict(include_replay=True) for (m, d), r in self.refiners.items()},
            "positions": {k: [p.epoch, p.batch] for k, p in self.positions.items()},
            "evaluations": json.dumps(self.evaluations),
            "refinement_stats": json.dumps(self.refinement_stats.state_dict()),
            "second_heads": None if self.second_heads is None else self.second_heads.state_dict(),
            "classifier_optimizer": None if self.classifier_optimizer is None else self.classifier_optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def save_checkpoint(self, path: Path) -> None:
        atomic_torch_save(self.state_dict(), path)

    def start_stage2_from(self, path: Path) -> None:
        """Begin stage 2 from the model of another run's checkpoint (methods sharing one stage 1)."""
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not an mmir co-training checkpoint")
        self.model.load_state_dict(state["model"])
        self.stage, self.step = 2, 0
        self.optimizer = self._make_optimizer(2)
        torch.set_rng_state(state["torch_rng"].cpu())

    def load_checkpoint(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint to resume from at {path}")
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT or state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path} is not an mmir co-training checkpoint of version {CHECKPOINT_VERSION}")
        self.stage, self.step = int(state["stage"]), int(state["step"])
        self.model.load_state_dict(state["model"])
        self.discriminators.load_state_dict(state["discriminators"])
        if self.correspondence is not None and state["correspondence"] is not None:
            self.correspondence.load_state_dict(state["correspondence"])
        self.optimizer = self._make_optimizer(self.stage)
        self.optimizer.load_state_dict(state["optimizer"])
        for key, agent_state in state["agents"].items():
            m, d = key.split("/")
            self.refiners[(m, d)].agent.load_state_dict(agent_state)
        for k, (epoch, batch) in state["positions"].items():
            self.positions[k] = StreamPosition(int(epoch), int(batch))
        self.evaluations = json.loads(state["evaluations"])
        self.refinement_stats.load_state_dict(json.loads(state["refinement_stats"]))
        if self.second_heads is not None and state.get("second_heads") is not None:
            self.second_heads.load_state_dict(state["second_heads"])
        if self.classifier_optimizer is not None and state.get("classifier_optimizer") is not None:
            self.classifier_optimizer.load_state_dict(state["classifier_optimizer"])
        torch.set_rng_state(state["torch_rng"].cpu())


class _Features(nn.Module):
    """One modality's backbone of a two-stream model as a clips -> features module (for snapshots)."""

    def __init__(self, model: nn.Module, modality: str) -> None:
        super().__init__()
        self.model, self.modality = model, modality

    def forward(self, clips: Tensor) -> Tensor:
        backbone = self.model.backbones[self.modality]
        return backbone.extract_features(clips) if hasattr(backbone, "extract_features") else backbone(clips)
