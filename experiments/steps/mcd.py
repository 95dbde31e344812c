"""MCD as a step strategy: two classifiers, three phases per batch (Saito et al., CVPR 2018).

(A) the generator G (backbones) and both classifiers learn the labelled source; (B) with G fixed,
C1 (the model's heads) and C2 (second heads of the same shape) keep the source loss and *maximise*
their discrepancy on target features; (C) with C1, C2 fixed, G *minimises* it
``stage2.mcd_generator_steps`` times. Each phase's forward runs inside the CoTrainModule's forward
(a closure), so DistributedDataParallel sees every parameter it trains.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from experiments.methods.mcd import classifier_discrepancy, fused_logits, mcd_losses, second_heads
from experiments.steps import StepBatch, StepContext, StepLog, StepStrategy


class MCDStrategy(StepStrategy):
    def __init__(self, config, model: nn.Module) -> None:
        super().__init__(config, model)
        for attr in ("backbones", "heads", "feature_dims", "num_classes"):
            if not hasattr(model, attr):
                raise ValueError(
                    f"stage2.mcd needs a model with backbones and heads (TwoStream); {type(model).__name__} has no {attr!r}"
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
            cls = ctx.forward(batch.source, batch.labels, None, closure=_phase_a)
        cls.backward()
        generator.step()
        classifiers.step()
        zero()
        with ctx.autocast():
            loss_b = ctx.forward(batch.source, batch.labels, batch.target, closure=_phase_b)
        loss_b.backward()
        classifiers.step()
        disc_c = torch.zeros(())
        for _ in range(self.config.stage2.mcd_generator_steps):
            zero()
            with ctx.autocast():
                disc_c = ctx.forward(batch.source, batch.labels, batch.target, closure=_phase_c)
            disc_c.backward()
            generator.step()
        zero()
        return StepLog({"loss": float(cls.detach()), "cls": float(cls.detach()), "discrepancy": float(disc_c.detach())})


def _phase_a(module: nn.Module, source, labels: Tensor, target) -> Tensor:
    """Source cross-entropy of both classifiers (trains G, C1, C2)."""
    f_src, _ = module.extract(source, None)
    cls, _ = mcd_losses(module.model, module.extras["mcd_heads"], f_src, labels, None)
    return cls


def _phase_b(module: nn.Module, source, labels: Tensor, target) -> Tensor:
    """Source loss minus target discrepancy, G fixed (trains C1, C2)."""
    with torch.no_grad():
        f_src, f_tgt = module.extract(source, target)
    cls, disc = mcd_losses(module.model, module.extras["mcd_heads"], f_src, labels, f_tgt)
    return cls - disc


def _phase_c(module: nn.Module, source, labels: Tensor, target) -> Tensor:
    """Target discrepancy (G minimises it; C1, C2 are not stepped)."""
    f_tgt = module.model.extract_features(target)
    return classifier_discrepancy(
        module.model.classify(f_tgt).logits,
        fused_logits(module.extras["mcd_heads"], f_tgt, getattr(module.model, "fusion", "sum")),
    )
