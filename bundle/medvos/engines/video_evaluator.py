"""A MONAI ``SupervisedEvaluator`` whose iteration is one whole video: few-shot propagation + frame scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.engines import SupervisedEvaluator

from medvos.engines.metrics import frame_scores
from medvos.inference.propagator import FewShotPropagator


class VideoEvaluator(SupervisedEvaluator):
    """Evaluates few-shot video segmentation: support = the first ``shots`` labelled frames, queries = the rest.

    Each iteration takes one video ``{"image": (T,3,H,W), "label": (T,1,H,W), "labeled_frames", "id"}`` and sets
    ``engine.state.output`` to ``{"id", "support", "frame", "frame_dice", "frame_iou", "dice", "iou", "pred",
    "confidence"}`` (``dice``/``iou``: mean over the non-support frames of the video).

    Args:
        image_size: network input size. window: frames per forward pass. shots: support frames per video.
        other args: as :class:`monai.engines.SupervisedEvaluator`.
    """

    def __init__(self, device: torch.device | str, val_data_loader: Any, network: torch.nn.Module,
                 image_size: int | Sequence[int] = 256, window: int = 8, shots: int = 1, threshold: float = 0.5,
                 **kwargs: Any) -> None:
        kwargs.setdefault("decollate", False)
        super().__init__(device=device, val_data_loader=val_data_loader, network=network, **kwargs)
        # DDP: evaluation needs no gradient synchronisation, so the wrapped module is used directly
        self.propagator = FewShotPropagator(getattr(network, "module", network), image_size, window, threshold)
        self.shots = shots

    def _iteration(self, engine: SupervisedEvaluator, batchdata: dict[str, Any]) -> dict[str, Any]:
        frames, labels = batchdata["image"], batchdata["label"][:, 0]
        labeled = batchdata.get("labeled_frames") or [0]
        support = list(labeled[: self.shots])
        self.propagator.network.eval()
        pred, _, conf = self.propagator.propagate(frames, labels, support)
        scores = frame_scores(pred, labels.numpy(), support)
        engine.state.output = {
            "id": str(batchdata.get("id", engine.state.iteration)),
            "support": support,
            "frame": scores["frame"],
            "frame_dice": scores["dice"],
            "frame_iou": scores["iou"],
            "dice": float(scores["dice"].mean()) if len(scores["dice"]) else float("nan"),
            "iou": float(scores["iou"].mean()) if len(scores["iou"]) else float("nan"),
            "pred": pred,
            "confidence": conf,
        }
        return engine.state.output
