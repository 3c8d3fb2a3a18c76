"""Few-shot evaluation datasets: whole videos (frames kept at their original size) and held-out image targets."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose
from torch.utils.data import Dataset

from medvos.data.transforms import LoadCined, ScaleCineIntensityd, ToThreeChannelsd


def video_pipeline() -> Compose:
    """Load a cine (at least 2 frames) and its mask, intensities to [0, 1], RGB."""
    return Compose([LoadCined(min_frames=2), ScaleCineIntensityd(keys="image"), ToThreeChannelsd(keys="image")])


def is_image_entry(entry: dict[str, Any]) -> bool:
    """Image entries (one labelled image of a target) carry a ``group``; videos do not."""
    return "group" in entry


def video_entries(spec: str) -> list[dict[str, Any]]:
    """The video entries a ``DATALIST:SPLIT[:ID_PREFIX]`` spec names (the development-set argument of the tuning
    and sweep scripts): ``SPLIT``'s videos whose ``id`` starts with ``ID_PREFIX``."""
    from medvos.data.datalist import load_datalist
    from medvos.io.errors import DatalistError

    datalist, split, *prefix = spec.split(":")
    out = [e for e in load_datalist(datalist, split) if not is_image_entry(e)
           and str(e.get("id", e["image"])).startswith(prefix[0] if prefix else "")]
    if not out:
        raise DatalistError(datalist, f"no video in '{split}'"
                            + (f" with an id starting '{prefix[0]}'" if prefix else ""))
    return out


def image_episodes(entries: Sequence[dict[str, Any]], image_size: int | Sequence[int], seed: int = 0
                   ) -> list[dict[str, Any]]:
    """Held-out 1-shot image episodes, one item per target (``group``).

    Each image of a target is a query once; its support is a fixed random image of the same target from another
    patient (the same image if the target has one patient only). Frames and masks are prepared exactly as the
    training bank does (:class:`medvos.data.episodes.FrameBank`).

    Returns:
        ``[{"id": target, "query": (N,3,S,S) float, "support": (N,3,S,S), "support_mask": (N,S,S) uint8,
        "label": (N,S,S) uint8}]``.
    """
    from medvos.data.episodes import FrameBank

    bank = FrameBank(entries, image_size, progress=False)
    rng = random.Random(seed)
    items = []
    for target in sorted(bank.by_group):
        idx = bank.by_group[target]
        sup = []
        for q in idx:
            others = [j for j in idx if bank.patients[j] != bank.patients[q]] or [q]
            sup.append(rng.choice(others))
        stack = lambda ids, arr: np.stack([arr[i] for i in ids])  # noqa: E731
        items.append({"id": target, "query": torch.from_numpy(stack(idx, bank.images)).float() / 255.0,
                      "support": torch.from_numpy(stack(sup, bank.images)).float() / 255.0,
                      "support_mask": torch.from_numpy(stack(sup, bank.masks)[:, 0]),
                      "label": torch.from_numpy(stack(idx, bank.masks)[:, 0])})
    return items


class VideoDataset(Dataset):
    """Item: ``{"id", "image": (T,3,H,W) float in [0,1], "label": (T,1,H,W) uint8, "labeled_frames", "image_meta",
    "entry"}`` (``entry``: the datalist entry it was read from).

    With ``image_size``, image entries (see :func:`is_image_entry`) become one held-out 1-shot item per target
    (:func:`image_episodes`) after the videos; without it, every entry is read as a video.
    """

    def __init__(self, entries: Sequence[dict[str, Any]], image_size: int | Sequence[int] | None = None) -> None:
        entries = list(entries)
        images = [e for e in entries if is_image_entry(e)] if image_size is not None else []
        self.entries = [e for e in entries if not (image_size is not None and is_image_entry(e))]
        self.targets = image_episodes(images, image_size) if images else []
        self.load = video_pipeline()

    def __len__(self) -> int:
        return len(self.entries) + len(self.targets)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index >= len(self.entries):
            return self.targets[index - len(self.entries)]
        d = self.load(self.entries[index])
        d["image"] = torch.from_numpy(d["image"])
        if d.get("label") is not None:
            d["label"] = torch.from_numpy(d["label"])
        d.setdefault("id", str(self.entries[index]["image"]))
        d["entry"] = self.entries[index]
        return d


def first_item_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Videos differ in length and size: a batch is one video, passed through unchanged."""
    if len(batch) != 1:
        raise ValueError("video loaders use batch_size=1")
    return batch[0]
