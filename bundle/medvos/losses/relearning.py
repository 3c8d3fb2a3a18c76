"""Spatiotemporal consistency relearning losses (Zheng et al. 2024) and the related options (TAU, TCR, TPS).

Shapes: ``f``/``z``: ``(B, C, h, w)`` features of the |B| consecutive frames of one clip; ``y``: ``(B, 2, H, W)``
softmax probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medvos.losses.flow import warp


def temporal_consistency_loss(f: torch.Tensor) -> torch.Tensor:
    """L_t = 1 - mean_t cos(f_t, f_{t+1}) over the |B|-1 consecutive pairs (features flattened per frame).

    The paper writes the sum over |B|-1 pairs divided by |B|; we divide by |B|-1 so identical frames give 0 (the
    two differ by a constant offset and the gradient by the factor (|B|-1)/|B|, absorbed in l1).
    """
    if f.shape[0] < 2:
        return f.sum() * 0.0
    flat = f.flatten(1)
    return 1.0 - F.cosine_similarity(flat[:-1], flat[1:], dim=1, eps=1e-8).mean()


def feature_loss(z_student: torch.Tensor, z_teacher: torch.Tensor) -> torch.Tensor:
    """L_f = 1/(|B| D) sum_t sum_j ||z^_{t,j} - z_{t,j}||^2 over positions j, with D = channels."""
    b, c = z_student.shape[:2]
    return (z_student - z_teacher.detach()).pow(2).sum() / (b * c)


def prediction_loss(y_student: torch.Tensor, y_teacher: torch.Tensor) -> torch.Tensor:
    """L_p = (1/|B|) sum_t (y^_t - y_t)^2, averaged over classes and pixels."""
    return (y_student - y_teacher.detach()).pow(2).mean()


def differential_divergence_loss(pred: torch.Tensor, target: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """TAU's differential divergence regulariser: KL between softmax((x_{t+1} - x_t)/tau) over (C,h,w) of the
    prediction's and the target's frame differences (target detached)."""
    if pred.shape[0] < 2:
        return pred.sum() * 0.0
    dp = (pred[1:] - pred[:-1]).flatten(1) / tau
    dt = (target[1:] - target[:-1]).detach().flatten(1) / tau
    return F.kl_div(F.log_softmax(dp, dim=1), F.log_softmax(dt, dim=1), log_target=True, reduction="batchmean")


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Pixel-wise entropy ``(N,1,H,W)`` of class probabilities ``(N,C,H,W)``."""
    return -(p * p.clamp_min(1e-8).log()).sum(1, keepdim=True)


def tcr_loss(y: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
    """TCR (Guan et al. 2021), intra-domain: previous-frame softmax and entropy warped to the current frame;
    ``w = valid * [H_prev_warped < H_cur]``; loss = mean(w * |P_cur - P_prev_warped|) (previous frame detached).

    ``y``: ``(B,C,H,W)`` softmax of consecutive frames; ``flows``: ``(B-1,2,h,w)`` backward flows t -> t-1.
    """
    if y.shape[0] < 2:
        return y.sum() * 0.0
    prev = y[:-1].detach()
    warped, valid = warp(torch.cat([prev, entropy(prev)], 1), flows)
    p_prev, h_prev = warped[:, :-1], warped[:, -1:]
    w = valid * (h_prev < entropy(y[1:]).detach()).to(y.dtype)
    return (w * (y[1:] - p_prev).abs()).mean()


def tps_pseudo_labels(y_prev_weak: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
    """TPS (Xing et al. 2022): warp the previous frames' (weakly augmented, no-grad) softmax to the current frames
    and take the argmax -> pseudo labels ``(B-1, H, W)``."""
    warped, _ = warp(y_prev_weak.detach(), flows)
    return warped.argmax(1)


class RelearnLoss(nn.Module):
    """``L = lambda_t*L_t + lambda_f*L_f + lambda_p*L_p (+ divergence_weight*L_div + tcr_weight*L_tcr +
    tps_weight*L_tps)``; every weight is the config key of the same name (``relearn.yaml``).

    Call with the student's TAU features ``f``, neck features ``z_s``, softmax ``y_s``, the teacher's neck
    features ``z_t`` and softmax ``y_t``, (for TCR) backward flows, and (for TPS) the student's logits on the
    strongly augmented frames 1.. and their pseudo labels (flow-warped weak predictions of the previous frames; the
    step prepares both when ``tps_weight`` is set). Returns ``(total, {name: value})``.
    """

    def __init__(self, lambda_t: float = 1.0, lambda_f: float = 1.0, lambda_p: float = 1.0,
                 divergence_weight: float = 0.0, divergence_tau: float = 0.1, tcr_weight: float = 0.0,
                 tps_weight: float = 0.0) -> None:
        super().__init__()
        self.lambda_t, self.lambda_f, self.lambda_p = lambda_t, lambda_f, lambda_p
        self.divergence_weight, self.divergence_tau, self.tcr_weight = divergence_weight, divergence_tau, tcr_weight
        self.tps_weight = tps_weight

    @property
    def needs_flows(self) -> bool:
        return bool(self.tcr_weight or self.tps_weight)

    def forward(self, f: torch.Tensor, z_s: torch.Tensor, y_s: torch.Tensor, z_t: torch.Tensor, y_t: torch.Tensor,
                flows: torch.Tensor | None = None, tps_logits: torch.Tensor | None = None,
                tps_labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        parts = {
            "loss_t": temporal_consistency_loss(f),
            "loss_f": feature_loss(z_s, z_t),
            "loss_p": prediction_loss(y_s, y_t),
        }
        total = self.lambda_t * parts["loss_t"] + self.lambda_f * parts["loss_f"] + self.lambda_p * parts["loss_p"]
        if self.divergence_weight:
            parts["loss_div"] = differential_divergence_loss(f, z_t, self.divergence_tau)
            total = total + self.divergence_weight * parts["loss_div"]
        if self.tcr_weight:
            if flows is None:
                raise ValueError("TCR needs optical flows between consecutive frames")
            parts["loss_tcr"] = tcr_loss(y_s, flows)
            total = total + self.tcr_weight * parts["loss_tcr"]
        if self.tps_weight:
            if tps_logits is None or tps_labels is None:
                raise ValueError("TPS needs the student's logits on the strong view and the pseudo labels")
            parts["loss_tps"] = F.cross_entropy(tps_logits, tps_labels)
            total = total + self.tps_weight * parts["loss_tps"]
        return total, {k: float(v.detach()) for k, v in parts.items()}
