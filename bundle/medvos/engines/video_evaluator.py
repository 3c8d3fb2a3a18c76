"""A MONAI ``SupervisedEvaluator`` whose iteration is one whole video: few-shot propagation + frame scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.engines import SupervisedEvaluator

from medvos.inference.propagator import FewShotPropagator
from medvos.metrics import video_scores


class VideoEvaluator(SupervisedEvaluator):
    """Evaluates few-shot video segmentation: support = the first ``shots`` labelled frames, queries = the rest.

    An item holding held-out image episodes of one target (``"query"`` key, see
    :func:`medvos.data.videos.image_episodes`) is scored 1-shot image by image instead, at the network size.

    Each iteration takes one video ``{"image": (T,3,H,W), "label": (T,1,H,W), "labeled_frames", "id"}`` and sets
    ``engine.state.output`` to ``{"id", "support", "frame", "frame_dice", "frame_iou", "dice", "iou", "pred",
    "confidence"}`` (``dice``/``iou``: mean over the non-support frames of the video).

    Args:
        image_size: network input size. window: frames per forward pass. shots: support frames per video.
        other args: as :class:`monai.engines.SupervisedEvaluator`.
    """

    def __init__(self, device: torch.device | str, val_data_loader: Any, network: torch.nn.Module,
                 image_size: int | Sequence[int] = 256, clip_length: int = 8, shots: int = 1, threshold: float = 0.5,
                 **kwargs: Any) -> None:
        kwargs.setdefault("decollate", False)
        super().__init__(device=device, val_data_loader=val_data_loader, network=network, **kwargs)
        # DDP: evaluation needs no gradient synchronisation, so the wrapped module is used directly
        self.propagator = FewShotPropagator(getattr(network, "module", network), image_size, clip_length, threshold)
        self.shots = shots

    @torch.inference_mode()
    def _image_iteration(self, batchdata: dict[str, Any]) -> dict[str, Any]:
        net = self.propagator.network
        net.eval()
        device = self.propagator.device
        preds = []
        for i in range(0, len(batchdata["query"]), 16):
            q = batchdata["query"][i : i + 16].to(device)
            s = batchdata["support"][i : i + 16, None].to(device)
            m = batchdata["support_mask"][i : i + 16, None, None].to(device, torch.float32)
            logits = net.segment(q, net.encode_support(s, m), tuple(q.shape[-2:]))
            preds.append((torch.softmax(logits, 1)[:, 1] > self.propagator.threshold).to(torch.uint8).cpu())
        pred = torch.cat(preds).numpy()
        return {"id": str(batchdata["id"]), "support": [], **video_scores(pred, batchdata["label"].numpy()),
                "pred": pred, "confidence": [1.0] * len(pred)}

    def _iteration(self, engine: SupervisedEvaluator, batchdata: dict[str, Any]) -> dict[str, Any]:
        if "query" in batchdata:
            engine.state.output = self._image_iteration(batchdata)
            return engine.state.output
        frames, labels = batchdata["image"], batchdata["label"][:, 0]
        labeled = batchdata.get("labeled_frames") or [0]
        support = list(labeled[: self.shots])
        self.propagator.network.eval()
        pred, _, conf = self.propagator.propagate(frames, labels, support)
        engine.state.output = {"id": str(batchdata.get("id", engine.state.iteration)), "support": support,
                               **video_scores(pred, labels.numpy(), support), "pred": pred, "confidence": conf}
        return engine.state.output
