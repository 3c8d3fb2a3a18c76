"""MONAI dictionary transforms for the cine pipeline. Arrays use the frames layout ``(T, C, H, W)``."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Resize
from monai.utils import ensure_tuple_rep

from medvos.io.errors import MaskMismatchError
from medvos.io.readers import read_cine, read_mask


class LoadCined(MapTransform):
    """Read ``image`` (cine) and optionally ``label`` (mask video) with :func:`read_cine` / :func:`read_mask`.

    Adds ``<image>_meta`` (geometry: spacing, frame_time_ms, source, format) and, for a labelled entry,
    ``labeled_frames`` (from the entry if given, ``"all"`` for every frame, else the frames the mask covers).
    Output: ``image`` float32 ``(T, C, H, W)``; ``label`` uint8 ``(T, 1, H, W)``.
    """

    def __init__(self, image_key: str = "image", label_key: str | None = "label", min_frames: int = 1,
                 allow_missing_keys: bool = True) -> None:
        super().__init__([image_key] + ([label_key] if label_key else []), allow_missing_keys)
        self.image_key, self.label_key, self.min_frames = image_key, label_key, min_frames

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        cine = read_cine(d[self.image_key], min_frames=self.min_frames)
        d[self.image_key] = cine.frames
        d[f"{self.image_key}_meta"] = {"spacing": cine.spacing, "frame_time_ms": cine.frame_time_ms,
                                       "source": cine.source, "format": cine.format, "size": cine.size}
        if self.label_key and d.get(self.label_key) is not None:
            mask = read_mask(d[self.label_key], like=cine)
            d[self.label_key] = mask.labels[:, None]
            given = d.get("labeled_frames")
            if given is None:
                d["labeled_frames"] = mask.labeled_frames
            elif given == "all":
                d["labeled_frames"] = list(range(cine.num_frames))
            else:
                bad = [t for t in given if not 0 <= int(t) < cine.num_frames]
                if bad:
                    raise MaskMismatchError(mask.source, f"labeled_frames {bad} outside 0..{cine.num_frames - 1}")
                d["labeled_frames"] = [int(t) for t in given]
        return d


def intensity_range(frames: Any, max_frames: int = 64) -> tuple[float, float] | None:
    """The cine's intensity window: ``None`` for 8-bit-range data (scaled by /255), else its 0.5-99.5
    percentiles. Estimated on at most ``max_frames`` evenly spaced frames, so a streamed cine is read once."""
    if getattr(frames, "eight_bit", False):  # the reader knows (8-bit DICOM, video): nothing to decode here
        return None
    t = len(frames)
    idx = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
    if isinstance(frames, np.ndarray):
        sample = frames if len(idx) == t else frames[idx]
        eight_bit = float(sample.min()) >= 0.0 and float(sample.max()) <= 255.0
    else:  # streamed: one frame at a time; frames are kept only once one leaves the 8-bit range
        kept: list[np.ndarray] | None = None
        for n, i in enumerate(idx):
            f = np.asarray(frames[int(i)])
            if kept is None and not (0.0 <= float(f.min()) and float(f.max()) <= 255.0):
                kept = [np.asarray(frames[int(j)]) for j in idx[:n]]  # the earlier (in-range) frames, read again
            if kept is not None:
                kept.append(f)
        eight_bit = kept is None
        sample = None if kept is None else np.stack(kept)
    if eight_bit:
        return None
    p_lo, p_hi = np.percentile(sample, [0.5, 99.5])
    return float(p_lo), float(p_hi)


def scale_intensity(frames: np.ndarray, value_range: tuple[float, float] | None | str = "auto") -> np.ndarray:
    """Map intensities to [0, 1] with :func:`intensity_range` (computed from ``frames`` unless given)."""
    value_range = intensity_range(frames) if isinstance(value_range, str) else value_range
    if value_range is None:
        return np.clip(np.asarray(frames, np.float32) / 255.0, 0.0, 1.0)
    lo, hi = value_range
    return np.clip((np.asarray(frames, np.float32) - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


class ScaleCineIntensityd(MapTransform):
    """Per-cine intensity scaling to [0, 1] (see :func:`scale_intensity`)."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = scale_intensity(np.asarray(d[key], dtype=np.float32))
        return d


class ToThreeChannelsd(MapTransform):
    """Grey ``(T,1,H,W)`` -> ``(T,3,H,W)`` by repetition (the backbone is an RGB ImageNet model)."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            if x.shape[1] == 1:
                d[key] = np.repeat(x, 3, axis=1) if isinstance(x, np.ndarray) else x.repeat(1, 3, 1, 1)
        return d


class ResizeCined(MapTransform):
    """Resize every frame to ``spatial_size``; ``mode`` per key (``"area"``/``"bilinear"`` images, ``"nearest"`` masks)."""

    def __init__(self, keys: KeysCollection, spatial_size: int | Sequence[int], mode: str | Sequence[str] = "area",
                 allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        size = ensure_tuple_rep(spatial_size, 2)
        self.resizers = [Resize(size, mode=m, anti_aliasing=m != "nearest" and m != "area")
                         for m in ensure_tuple_rep(mode, len(self.keys))]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, resize in self.key_iterator(d, self.resizers):
            x = d[key]
            t, c = x.shape[:2]
            dtype = x.dtype
            flat = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(t * c, *x.shape[2:])
            out = resize(flat)
            out = torch.as_tensor(out).reshape(t, c, *out.shape[1:]).numpy()
            d[key] = out.astype(dtype) if dtype == np.uint8 else out.astype(np.float32)
        return d
