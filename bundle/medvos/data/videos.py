"""Whole-video datasets for few-shot evaluation and inference (frames kept at their original size)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.transforms import Compose
from torch.utils.data import Dataset

from medvos.data.transforms import LoadCined, ScaleCineIntensityd, ToThreeChannelsd


def video_pipeline() -> Compose:
    """Load a cine (at least 2 frames) and its mask, intensities to [0, 1], RGB."""
    return Compose([LoadCined(min_frames=2), ScaleCineIntensityd(keys="image"), ToThreeChannelsd(keys="image")])


class VideoDataset(Dataset):
    """Item: ``{"id", "image": (T,3,H,W) float in [0,1], "label": (T,1,H,W) uint8, "labeled_frames", "image_meta"}``."""

    def __init__(self, entries: Sequence[dict[str, Any]]) -> None:
        self.entries = list(entries)
        self.load = video_pipeline()

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        d = self.load(self.entries[index])
        d["image"] = torch.from_numpy(d["image"])
        if d.get("label") is not None:
            d["label"] = torch.from_numpy(d["label"])
        d.setdefault("id", str(self.entries[index]["image"]))
        return d


def first_item_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Videos differ in length and size: a batch is one video, passed through unchanged."""
    if len(batch) != 1:
        raise ValueError("video loaders use batch_size=1")
    return batch[0]
