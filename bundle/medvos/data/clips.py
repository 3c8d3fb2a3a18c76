"""Clips of |B| consecutive frames of (unlabelled) videos with their support frame(s), for phase-2 relearning."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from medvos.data.episodes import frame_pipeline
from medvos.io.errors import MaskMismatchError


class ClipDataset(Dataset):
    """Item: ``{"clip": (B,3,H,W), "support": (K,3,H,W), "support_mask": (K,1,H,W), "id", "start"}`` in [0, 1].

    Only the support frames' masks are used (the first ``shots`` labelled frames of each entry): the rest of the
    video is unlabelled. For a multi-label support one object is drawn per item. Each epoch visits every video
    ``ceil(T / B)`` times at random start positions; a video shorter than B repeats its last frame.

    Args:
        entries: datalist entries (videos with a mask covering at least the support frames).
        image_size: network input size. clip_length: |B|. shots: support frames per video.
    """

    def __init__(self, entries: Sequence[dict[str, Any]], image_size: int | Sequence[int], clip_length: int = 8,
                 shots: int = 1, progress: bool = True) -> None:
        load = frame_pipeline(image_size)
        self.clip_length, self.videos = clip_length, []
        for entry in tqdm(entries, desc="loading videos", disable=not progress, leave=False):
            d = load(entry)
            frames = np.clip(np.rint(d["image"] * 255), 0, 255).astype(np.uint8)
            if frames.shape[0] < 2:
                continue
            labeled = d.get("labeled_frames") or []
            if d.get("label") is None or not labeled:
                raise MaskMismatchError(entry.get("label", entry["image"]), "relearning needs a labelled support frame")
            sup = list(labeled[:shots])
            masks = d["label"][sup, 0]
            if not masks.any(axis=(1, 2)).all():
                raise MaskMismatchError(entry.get("label", entry["image"]), f"support frame(s) {sup} have an empty mask")
            self.videos.append({"id": entry.get("id", str(entry["image"])), "frames": frames, "support": sup,
                                "masks": masks})
        self.index = [(v, k) for v, video in enumerate(self.videos)
                      for k in range(-(-video["frames"].shape[0] // clip_length))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        video = self.videos[self.index[i][0]]
        frames = video["frames"]
        t = frames.shape[0]
        start = int(np.random.randint(0, max(t - self.clip_length, 0) + 1))
        idx = np.minimum(np.arange(start, start + self.clip_length), t - 1)
        values = [int(v) for v in np.unique(video["masks"]) if v]
        target = values[int(np.random.randint(len(values)))]
        return {
            "clip": torch.from_numpy(frames[idx]).float() / 255.0,
            "support": torch.from_numpy(frames[video["support"]]).float() / 255.0,
            "support_mask": torch.from_numpy(video["masks"] == target).float()[:, None],
            "id": video["id"],
            "start": start,
        }
