"""The phase-2 iteration: one clip through the student (image model + TAU) and the frozen teacher."""

from __future__ import annotations

from typing import Any

import torch
from ignite.engine import Engine
from monai.transforms import Compose, Lambda, RandGaussianSmooth, RandLambda, RandScaleIntensity, RandShiftIntensity
from monai.utils import convert_to_tensor
from torch import nn

from medvos.losses.flow import backward_flows
from medvos.losses.relearning import RelearnLoss, tps_pseudo_labels


def strong_view_transform() -> Compose:
    """TPS's strong augmentation of one frame ``(3,H,W)`` in [0,1], as MONAI transforms: brightness gain (x0.8-1.2),
    a colour tint (x0.9-1.1 per channel), an offset (+-0.1), clipped to [0, 1]; greyscale with probability 0.2;
    Gaussian blur (sigma 1 px) with probability 0.5."""
    return Compose([
        RandScaleIntensity(factors=0.2, prob=1.0),
        RandScaleIntensity(factors=0.1, prob=1.0, channel_wise=True),
        RandShiftIntensity(offsets=0.1, prob=1.0),
        Lambda(lambda x: x.clamp(0, 1)),
        RandLambda(lambda x: x.mean(0, keepdim=True).expand_as(x).clone(), prob=0.2),
        RandGaussianSmooth(sigma_x=(1.0, 1.0), sigma_y=(1.0, 1.0), prob=0.5),
    ])


def strong_augment(x: torch.Tensor, transform: Compose | None = None) -> torch.Tensor:
    """The strong view of frames ``(N,3,H,W)`` in [0,1]: ``transform`` (default a new
    :func:`strong_view_transform`) drawn anew for each frame."""
    transform = transform if transform is not None else strong_view_transform()
    return torch.stack([convert_to_tensor(transform(f), track_meta=False) for f in x]).clamp(0, 1).to(x.dtype)


class RelearnStep:
    """``SupervisedTrainer(loss_function=RelearnLoss(...), iteration_update=RelearnStep(teacher))``: one clip through
    the student and the frozen teacher, scored by the engine's ``loss_function`` (a :class:`RelearnLoss`:
    L = lambda_t*L_t + lambda_f*L_f + lambda_p*L_p and the optional TAU divergence, TCR and TPS terms); the flows
    and the TPS views are prepared only when the loss uses them.

    Args:
        teacher: the frozen phase-1 image model.
        seed: of the strong augmentation's random state (TPS).
    """

    def __init__(self, teacher: nn.Module, seed: int = 0) -> None:
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.strong = strong_view_transform().set_random_state(seed)

    def __call__(self, engine: Engine, batch: dict[str, Any]) -> dict[str, float]:
        device = engine.state.device
        student = engine.network  # possibly DistributedDataParallel: one forward call per step
        plain = getattr(student, "module", student)
        clip = batch["clip"].to(device)
        support, mask = batch["support"][None].to(device), batch["support_mask"][None].to(device)
        size = (int(clip.shape[-2]), int(clip.shape[-1]))
        loss: RelearnLoss = engine.loss_function
        student.train()
        flows = backward_flows(clip) if loss.needs_flows else None
        pseudo = None
        if loss.tps_weight:
            with torch.no_grad():  # weak view (horizontal flip) of every frame, flipped back
                enc = plain.encode_support(support, mask)
                weak = torch.softmax(plain.segment(clip.flip(-1), enc, size), 1).flip(-1)
            pseudo = tps_pseudo_labels(weak[:-1], flows)
        out = student(clip, support, mask, strong_augment(clip, self.strong) if loss.tps_weight else None)
        y_s = torch.softmax(out["logits"], 1)
        with torch.no_grad():
            z_t = self.teacher.features(clip, self.teacher.encode_support(support, mask))
            y_t = torch.softmax(self.teacher.decode(z_t, size), 1)
        total, parts = loss(out["tau"], out["neck"], y_s, z_t, y_t, flows,
                            out["extra_logits"][1:] if loss.tps_weight else None, pseudo)
        engine.optimizer.zero_grad(set_to_none=True)
        total.backward()
        engine.optimizer.step()
        return {"loss": float(total.detach()), **parts}
