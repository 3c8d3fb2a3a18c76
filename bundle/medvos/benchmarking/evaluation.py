"""Run several propagation methods on the same videos and supports; per-frame, per-video and overall scores."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from medvos.metrics import video_scores

# method(frames (T,3,H,W) float [0,1], labels (T,H,W) uint8, support_frames, entry) -> predicted labels (T,H,W)
Method = Callable[[np.ndarray, np.ndarray, Sequence[int], dict[str, Any]], np.ndarray]


def evaluate_methods(dataset: Sequence[dict[str, Any]], methods: dict[str, Method], shots: int = 1,
                     progress: bool = True) -> dict[str, Any]:
    """Scores of every method on every video of ``dataset`` (items of :class:`medvos.data.videos.VideoDataset`).

    Support = the first ``shots`` labelled frames; they are excluded from the scores.

    Returns:
        ``{"videos": [{"id", "frames", "support", "<method>": {"dice", "iou", "frame_dice", "fps"}}],
        "overall": {"<method>": {"dice", "iou", "fps"}}}`` (overall = mean over videos; fps over all frames).
    """
    videos, seconds, counts = [], {m: 0.0 for m in methods}, {m: 0 for m in methods}
    bar = tqdm(range(len(dataset)), desc="videos", disable=not progress)
    for i in bar:
        d = dataset[i]
        frames = np.asarray(d["image"], dtype=np.float32)
        labels = np.asarray(d["label"])[:, 0]
        support = list((d.get("labeled_frames") or [0])[:shots])
        row: dict[str, Any] = {"id": d.get("id", str(i)), "frames": int(frames.shape[0]), "support": support}
        for name, method in methods.items():
            t0 = time.perf_counter()
            pred = method(frames, labels, support, d.get("entry") or {})
            dt = time.perf_counter() - t0
            s = video_scores(pred, labels, support)
            seconds[name] += dt
            counts[name] += frames.shape[0] - len(support)
            row[name] = {"dice": s["dice"], "iou": s["iou"], "frame": s["frame"].tolist(),
                         "frame_dice": s["frame_dice"].tolist(), "fps": (frames.shape[0] - len(support)) / max(dt, 1e-9)}
        videos.append(row)
        bar.set_postfix({m: f"{np.mean([v[m]['dice'] for v in videos]):.3f}" for m in methods})
    overall = {m: {"dice": float(np.mean([v[m]["dice"] for v in videos])),
                   "iou": float(np.mean([v[m]["iou"] for v in videos])),
                   "fps": counts[m] / max(seconds[m], 1e-9)} for m in methods}
    return {"videos": videos, "overall": overall}


def markdown_table(results: dict[str, Any], methods: Sequence[str] | None = None) -> str:
    """Per-video and overall Dice / IoU as a Markdown table."""
    methods = list(methods or results["overall"].keys())
    head = "| video | frames | " + " | ".join(f"{m} Dice | {m} IoU" for m in methods) + " |"
    sep = "|" + "---|" * (2 + 2 * len(methods))
    lines = [head, sep]
    for v in results["videos"]:
        cells = " | ".join(f"{v[m]['dice']:.3f} | {v[m]['iou']:.3f}" for m in methods)
        lines.append(f"| {v['id']} | {v['frames']} | {cells} |")
    cells = " | ".join(f"**{results['overall'][m]['dice']:.3f}** | **{results['overall'][m]['iou']:.3f}**"
                       for m in methods)
    lines.append(f"| mean over videos | {sum(v['frames'] for v in results['videos'])} | {cells} |")
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    """The machine a benchmark ran on (CPU model, cores, torch threads, GPU)."""
    import os
    import platform

    import torch

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__}
