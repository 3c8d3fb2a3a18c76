"""The phase-2 iteration: one clip through the student (image model + TAU) and the frozen teacher."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from ignite.engine import Engine
from torch import nn

from medvos.losses.flow import backward_flows
from medvos.losses.relearning import RelearnLoss, tps_pseudo_labels


def strong_augment(x: torch.Tensor) -> torch.Tensor:
    """TPS strong augmentation of frames ``(N,3,H,W)`` in [0,1]: colour jitter, random greyscale, Gaussian blur."""
    n = x.shape[0]
    gain = 1.0 + 0.4 * (torch.rand(n, 1, 1, 1, device=x.device) - 0.5)
    bias = 0.2 * (torch.rand(n, 1, 1, 1, device=x.device) - 0.5)
    tint = 1.0 + 0.2 * (torch.rand(n, 3, 1, 1, device=x.device) - 0.5)
    y = (x * gain * tint + bias).clamp(0, 1)
    grey = (torch.rand(n, 1, 1, 1, device=x.device) < 0.2).to(x.dtype)
    y = grey * y.mean(1, keepdim=True).expand_as(y) + (1 - grey) * y
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=x.device)
    k = (k[:, None] * k[None]) / 256.0
    blurred = F.conv2d(F.pad(y, (2, 2, 2, 2), mode="replicate"), k.expand(3, 1, 5, 5), groups=3)
    blur = (torch.rand(n, 1, 1, 1, device=x.device) < 0.5).to(x.dtype)
    return blur * blurred + (1 - blur) * y


class RelearnStep:
    """``SupervisedTrainer(iteration_update=RelearnStep(...))``: L = l1*L_t + l2*L_f + l3*L_p (+ options).

    Args:
        teacher: the frozen phase-1 image model.
        loss: :class:`RelearnLoss` (weights, TAU divergence, TCR).
        tps_weight: weight of TPS temporal pseudo supervision (0 = off).
    """

    def __init__(self, teacher: nn.Module, loss: RelearnLoss, tps_weight: float = 0.0) -> None:
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.loss = loss
        self.tps_weight = tps_weight

    def __call__(self, engine: Engine, batch: dict[str, Any]) -> dict[str, float]:
        device = engine.state.device
        student = engine.network  # possibly DistributedDataParallel: one forward call per step
        plain = getattr(student, "module", student)
        clip = batch["clip"].to(device)
        support, mask = batch["support"][None].to(device), batch["support_mask"][None].to(device)
        size = (int(clip.shape[-2]), int(clip.shape[-1]))
        student.train()
        flows = backward_flows(clip) if (self.loss.tcr_weight or self.tps_weight) else None
        pseudo = None
        if self.tps_weight:
            with torch.no_grad():  # weak view (horizontal flip) of every frame, flipped back
                enc = plain.encode_support(support, mask)
                weak = torch.softmax(plain.segment(clip.flip(-1), enc, size), 1).flip(-1)
            pseudo = tps_pseudo_labels(weak[:-1], flows)
        out = student(clip, support, mask, strong_augment(clip) if self.tps_weight else None)
        y_s = torch.softmax(out["logits"], 1)
        with torch.no_grad():
            z_t = self.teacher.features(clip, self.teacher.encode_support(support, mask))
            y_t = torch.softmax(self.teacher.decode(z_t, size), 1)
        total, parts = self.loss(out["tau"], out["neck"], y_s, z_t, y_t, flows)
        if self.tps_weight:
            l_tps = F.cross_entropy(out["extra_logits"][1:], pseudo)
            parts["loss_tps"] = float(l_tps.detach())
            total = total + self.tps_weight * l_tps
        engine.optimizer.zero_grad(set_to_none=True)
        total.backward()
        engine.optimizer.step()
        return {"loss": float(total.detach()), **parts}
