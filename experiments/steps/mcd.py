"""MCD as a step strategy: two classifiers, three phases per batch (Saito et al., CVPR 2018).

(A) the generator G (backbones) and both classifiers learn the labelled source; (B) with G fixed,
C1 (the model's heads) and C2 (second heads of the same shape) keep the source loss and *maximise*
their discrepancy on target features; (C) with C1, C2 fixed, G *minimises* it
``stage2.mcd_generator_steps`` times. Each phase's forward work runs inside the CoTrainModule's
forward (``phase="source" | "maximise" | "minimise"``), so DistributedDataParallel sees every
parameter it trains. The maths (Saito et al.'s discrepancy, the second heads) live here too.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from experiments.steps import StepBatch, StepContext, StepLog, StepStrategy


def classifier_discrepancy(logits_1: Tensor, logits_2: Tensor) -> Tensor:
    """``mean |softmax(p1) - softmax(p2)|`` over the batch and the classes (Saito et al., eq. 1)."""
    return (F.softmax(logits_1, dim=1) - F.softmax(logits_2, dim=1)).abs().mean()


def second_heads(model: nn.Module, dropout: float) -> nn.ModuleDict:
    """C2: one ``Dropout -> Linear(d_k, classes)`` head per modality, like the model's own."""
    return nn.ModuleDict(
        {m: nn.Sequential(nn.Dropout(dropout), nn.Linear(d, model.num_classes)) for m, d in model.feature_dims.items()}
    )


def fused_logits(heads: nn.ModuleDict, features: Mapping[str, Tensor], fusion: str = "sum") -> Tensor:
    """Late fusion of ``heads`` over modalities (eq. 1)."""
    logits = torch.stack([heads[m](f) for m, f in features.items()]).sum(0)
    return logits / len(features) if fusion == "mean" else logits


def mcd_losses(
    model: nn.Module,
    heads_2: nn.ModuleDict,
    f_src: Mapping[str, Tensor],
    labels: Tensor,
    f_tgt: Mapping[str, Tensor] | None,
) -> tuple[Tensor, Tensor]:
    """Source cross-entropy of both classifiers, and their discrepancy on target features (0 without them)."""
    fusion = getattr(model, "fusion", "sum")
    cls = F.cross_entropy(model.classify(f_src).logits, labels) + F.cross_entropy(
        fused_logits(heads_2, f_src, fusion), labels
    )
    if f_tgt is None:
        return cls, torch.zeros((), device=labels.device)
    disc = classifier_discrepancy(model.classify(f_tgt).logits, fused_logits(heads_2, f_tgt, fusion))
    return cls, disc


class MCDStrategy(StepStrategy):
    replaces_step = True
    uses_objectives = False  # MCD's classifier discrepancy is its own alignment

    def __init__(self, config, model: nn.Module) -> None:
        super().__init__(config, model)
        for attr in ("backbones", "heads", "feature_dims", "num_classes"):
            if not hasattr(model, attr):
                raise ValueError(
                    f"the mcd strategy needs a model with backbones and heads (TwoStream); {type(model).__name__} has no {attr!r}"
                )
        self.model = model

    def modules(self) -> dict[str, nn.Module]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed + 3)
            return {"mcd_heads": second_heads(self.model, self.config.model.dropout)}

    def param_groups(self, module: nn.Module) -> dict[str, list[nn.Parameter]]:
        heads = [p for p in module.model.heads.parameters() if p.requires_grad] + list(
            module.extras["mcd_heads"].parameters()
        )
        generator = [p for p in module.model.backbones.parameters() if p.requires_grad]
        return {"generator": generator, "classifiers": heads}

    def step(self, ctx: StepContext, batch: StepBatch) -> StepLog:
        generator, classifiers = ctx.optimizers["generator"], ctx.optimizers["classifiers"]

        def zero() -> None:
            for opt in ctx.optimizers.values():
                opt.zero_grad(set_to_none=True)

        zero()
        with ctx.autocast():
            cls = ctx.forward(batch, 2, phase="source")
        cls.backward()
        generator.step()
        classifiers.step()
        zero()
        with ctx.autocast():
            loss_b = ctx.forward(batch, 2, phase="maximise")
        loss_b.backward()
        classifiers.step()
        disc_c = torch.zeros(())
        for _ in range(self.config.stage2.mcd_generator_steps):
            zero()
            with ctx.autocast():
                disc_c = ctx.forward(batch, 2, phase="minimise")
            disc_c.backward()
            generator.step()
        zero()
        return StepLog({"loss": float(cls.detach()), "cls": float(cls.detach()), "discrepancy": float(disc_c.detach())})

    def forward_phase(self, phase: str, module: nn.Module, batch: StepBatch) -> Tensor:
        heads_2 = module.extras["mcd_heads"]
        if phase == "source":  # (A) source cross-entropy of both classifiers (trains G, C1, C2)
            f_src, _ = module.extract(batch.source, None)
            return mcd_losses(module.model, heads_2, f_src, batch.labels, None)[0]
        if phase == "maximise":  # (B) source loss minus target discrepancy, G fixed (trains C1, C2)
            with torch.no_grad():
                f_src, f_tgt = module.extract(batch.source, batch.target)
            cls, disc = mcd_losses(module.model, heads_2, f_src, batch.labels, f_tgt)
            return cls - disc
        if phase == "minimise":  # (C) target discrepancy (G minimises it; C1, C2 are not stepped)
            f_tgt = module.model.extract_features(batch.target)
            fusion = getattr(module.model, "fusion", "sum")
            return classifier_discrepancy(module.model.classify(f_tgt).logits, fused_logits(heads_2, f_tgt, fusion))
        return super().forward_phase(phase, module, batch)
