"""Video few-shot metrics: per-frame Dice/IoU (support frames excluded), mean per video, mean over videos."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ignite.metrics import Metric
from monai.metrics import compute_dice, compute_iou
from monai.networks.utils import one_hot


def frame_scores(pred: np.ndarray, gt: np.ndarray, exclude: Sequence[int] = ()) -> dict[str, np.ndarray]:
    """Per-frame Dice and IoU of label maps ``pred``, ``gt`` ``(T,H,W)``, averaged over the objects present in
    either (background never counts: an empty prediction of a present object scores 0).

    A frame where an object is absent from both prediction and truth scores 1 for that object (MONAI's
    ``ignore_empty=False``). Frames in ``exclude`` (supports) are dropped.

    Returns:
        ``{"frame": indices, "dice": (N,), "iou": (N,)}``.
    """
    keep = [t for t in range(gt.shape[0]) if t not in set(int(e) for e in exclude)]
    values = sorted((set(np.unique(gt).tolist()) | set(np.unique(pred).tolist())) - {0}) or [1]  # objects only
    n = max(values) + 1
    p = one_hot(torch.from_numpy(pred[keep].astype(np.int64))[:, None], n)
    g = one_hot(torch.from_numpy(gt[keep].astype(np.int64))[:, None], n)
    idx = torch.tensor(values)
    dice = compute_dice(p, g, include_background=True, ignore_empty=False)[:, idx].mean(1)
    iou = compute_iou(p, g, include_background=True, ignore_empty=False)[:, idx].mean(1)
    return {"frame": np.asarray(keep), "dice": dice.numpy(), "iou": iou.numpy()}


def video_scores(pred: np.ndarray, gt: np.ndarray, support: Sequence[int] = ()) -> dict[str, Any]:
    """How one video is scored, by validation and by the benchmarks alike: :func:`frame_scores` over the non-support
    frames and their means ``{"frame", "frame_dice", "frame_iou", "dice", "iou"}`` (NaN when no frame is left)."""
    s = frame_scores(pred, gt, support)
    mean = (lambda v: float(v.mean()) if len(v) else float("nan"))  # noqa: E731
    return {"frame": s["frame"], "frame_dice": s["dice"], "frame_iou": s["iou"], "dice": mean(s["dice"]),
            "iou": mean(s["iou"])}


class VideoMean(Metric):
    """Mean over videos of an engine output's per-video score (``output[key]``), gathered across ranks."""

    def __init__(self, key: str = "dice", output_transform=lambda x: x, device: str | torch.device = "cpu") -> None:  # noqa: ANN001
        self.key = key
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._values: list[float] = []

    def iteration_completed(self, engine) -> None:  # noqa: ANN001 - ignite hook; the output is our own dict
        self.update(self._output_transform(engine.state.output))

    def update(self, output: dict) -> None:
        self._values.append(float(output[self.key]))

    def gathered(self) -> torch.Tensor:
        """Every rank's per-video values."""
        import ignite.distributed as idist

        values = torch.tensor(self._values, dtype=torch.float64)
        if idist.get_world_size() > 1:
            values = idist.all_gather(values)
        if values.numel() == 0:
            raise RuntimeError("no video was evaluated")
        return values

    def compute(self) -> float:
        return float(self.gathered().mean())


class VideoCount(VideoMean):
    """How many videos were evaluated, over all ranks (shows every rank took part)."""

    def compute(self) -> float:
        return float(self.gathered().numel())


class PerItemScore(VideoMean):
    """Every item's score as its own metric ``{prefix}/{item id}`` (per held-out target and per video), for
    MLflow; single process only (ids are not gathered across ranks)."""

    def __init__(self, key: str = "dice", prefix: str = "val_dice", output_transform=lambda x: x,  # noqa: ANN001
                 device: str | torch.device = "cpu") -> None:
        self.prefix = prefix
        super().__init__(key, output_transform, device)

    def reset(self) -> None:
        self._items: dict[str, float] = {}

    def update(self, output: dict) -> None:
        self._items[str(output["id"])] = float(output[self.key])

    def compute(self) -> dict[str, float]:
        return {f"{self.prefix}/{k}": v for k, v in self._items.items()}
