"""Episodic few-shot training data: support/query pairs drawn from the same source.

A :class:`FrameBank` holds decoded, resized labelled frames grouped by source (an image set, or one
video); :class:`EpisodeDataset` draws a query and K supports from one group, augments each independently
with MONAI transforms and packs them as the network's input (see ``medvos.networks.image_model``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose
from torch.utils.data import Dataset
from tqdm import tqdm

from medvos.data.transforms import LoadCined, ResizeCined, ScaleCineIntensityd, ToThreeChannelsd

logger = logging.getLogger(__name__)


def frame_pipeline(image_size: int | Sequence[int]) -> Compose:
    """Load -> [0,1] intensity -> RGB -> resize (area for frames, nearest for masks)."""
    return Compose([
        LoadCined(),
        ScaleCineIntensityd(keys="image"),
        ToThreeChannelsd(keys="image"),
        ResizeCined(keys=("image", "label"), spatial_size=image_size, mode=("area", "nearest")),
    ])


class FrameBank:
    """Labelled frames ``(3,H,W)`` uint8 + masks ``(1,H,W)`` uint8 (binary), grouped by target.

    A target is an image entry's ``group`` (dataset + structure; default ``"images"``) or one video. An entry
    with ``label_value`` keeps that structure of a multi-label mask; otherwise multi-label masks are binarised
    (any object). ``patients`` holds each frame's ``patient`` (default: the entry, so a video is one patient).
    """

    def __init__(self, entries: Sequence[dict[str, Any]], image_size: int | Sequence[int], progress: bool = True) -> None:
        load = frame_pipeline(image_size)
        self.images: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.groups: list[str] = []
        self.patients: list[str] = []
        for entry in tqdm(entries, desc="loading frames", disable=not progress, leave=False):
            d = load(entry)
            frames, labels = d["image"], d["label"]
            single = frames.shape[0] == 1
            group = str(entry.get("group", "images")) if single else str(entry.get("id", entry["image"]))
            ts = [0] if single else d["labeled_frames"]
            value = entry.get("label_value")
            for t in ts:
                self.images.append(np.clip(np.rint(frames[t] * 255), 0, 255).astype(np.uint8))
                self.masks.append((labels[t] == value if value is not None else labels[t] > 0).astype(np.uint8))
                self.groups.append(group)
                self.patients.append(str(entry.get("patient", entry.get("id", entry["image"]))))
        by_group: dict[str, list[int]] = defaultdict(list)
        for i, g in enumerate(self.groups):
            by_group[g].append(i)
        self.by_group = dict(by_group)
        logger.info("frame bank: %d frames in %d groups", len(self.images), len(self.by_group))

    def __len__(self) -> int:
        return len(self.images)

    def item(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": torch.from_numpy(self.images[i]).float() / 255.0, "label": torch.from_numpy(self.masks[i]).float()}


class EpisodeDataset(Dataset):
    """Episodes ``{"image": (3+4K, H, W) packed, "label": (1, H, W)}`` from a :class:`FrameBank`.

    Supports are drawn from the query's target, from other patients when the target has any (else other frames
    of the same patient, e.g. a video).

    Args:
        bank: labelled frames.
        shots: K supports per query.
        transform: MONAI dict transform applied independently to query and to each support.
        length: episodes per epoch (default: one per frame).
        balanced: ``True`` (or ``"target"``): pick the target first (episode ``i`` takes target ``i mod #targets``),
            then a random query of it, so every target is seen equally often whatever its size. ``"dataset"``: pick
            the dataset first (the group's part before ``/``) in turn, then one of its targets at random, so a set
            with three structures (a cardiac MRI set: LV, RV, myocardium) gets one share, not three. ``False``: one
            episode per frame.
        self_support: the fraction of episodes whose supports are other augmented views of the query's own frame
            (the same object instance, as in a cine, where the annotated frame shows the very target to follow:
            STM's static-image pre-training, Oh et al., ICCV 2019); the rest draw supports from other patients.
            A query with an empty mask always takes other frames' supports.
    """

    def __init__(self, bank: FrameBank, shots: int = 1, transform: Callable | None = None,
                 length: int | None = None, balanced: bool | str = False, self_support: float = 0.0) -> None:
        if balanced not in (False, True, "target", "dataset"):
            raise ValueError(f"balanced must be False, True, 'target' or 'dataset', got {balanced!r}")
        if not 0.0 <= float(self_support) <= 1.0:
            raise ValueError(f"self_support must be a fraction in [0, 1], got {self_support!r}")
        self.self_support = float(self_support)
        self.bank, self.shots, self.transform = bank, shots, transform
        self.length = length or len(bank)
        self.balanced = "target" if balanced is True else balanced
        self.targets = sorted(bank.by_group)
        by_dataset: dict[str, list[str]] = defaultdict(list)
        for target in self.targets:
            by_dataset[target.split("/")[0]].append(target)
        self.datasets = [by_dataset[name] for name in sorted(by_dataset)]  # each image set's targets

    def _target(self, index: int) -> str:
        """The target episode ``index`` draws from (balanced modes only)."""
        if self.balanced == "target":
            return self.targets[index % len(self.targets)]
        targets = self.datasets[index % len(self.datasets)]
        return targets[np.random.randint(len(targets))]

    def __len__(self) -> int:
        return self.length

    def _view(self, i: int, need_foreground: bool) -> dict[str, torch.Tensor]:
        item = self.bank.item(i)
        if self.transform is None:
            return item
        for _ in range(3):
            out = self.transform(dict(item))
            out = {k: torch.as_tensor(v).float() for k, v in out.items() if k in ("image", "label")}
            out["label"] = (out["label"] > 0.5).float()
            if not need_foreground or out["label"].sum() > 0:
                return out
        return item  # augmentation kept cutting the object out of the support: use the plain frame

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.balanced:
            qi = int(np.random.choice(self.bank.by_group[self._target(index)]))
        else:
            qi = index % len(self.bank)
        if self.self_support and np.random.rand() < self.self_support and self.bank.masks[qi].any():
            picks = np.full(self.shots, qi)
        else:
            group = self.bank.by_group[self.bank.groups[qi]]
            patient = self.bank.patients[qi]
            others = ([j for j in group if self.bank.patients[j] != patient] or [j for j in group if j != qi] or [qi])
            picks = np.random.choice(others, size=self.shots, replace=len(others) < self.shots)
        query = self._view(qi, need_foreground=False)
        supports = [self._view(int(j), need_foreground=True) for j in picks]
        shots = [torch.cat([s["image"], s["label"]], dim=0) for s in supports]
        return {"image": torch.cat([query["image"]] + shots, dim=0), "label": query["label"]}
