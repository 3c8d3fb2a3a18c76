"""Memory tree (SAM2Long-style) on a synthetic video where a look-alike distractor appears mid-video.

The network here is a tiny stand-in with no learning (foreground = pixels whose colour is close to the support
object's mean colour), so the test is about the tree's logic, not about a trained model: single-path propagation
segments the distractor too from the moment it appears (it cannot tell them apart), the tree keeps the object.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medvos.inference.memory_tree import MemoryTreePropagator
from medvos.inference.propagator import FewShotPropagator


class ColourTemplateNet(nn.Module):
    """Few-shot 'network': support = mean colour of the masked pixels; logit = sharpness * (r^2 - distance^2)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def encode_query(self, q: torch.Tensor) -> torch.Tensor:
        return q

    def encode_support(self, s: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        w = m[0]  # (K,1,H,W)
        return (s[0] * w).sum((0, 2, 3)) / w.sum().clamp_min(1.0)

    def segment_encoded(self, q: torch.Tensor, colour: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        d2 = ((q - colour[None, :, None, None]) ** 2).sum(1, keepdim=True)
        fg = 60.0 * (0.04 - d2)
        return torch.cat([torch.zeros_like(fg), fg], 1)


def distractor_video(t: int = 24, size: int = 64, appear: int = 10) -> tuple[torch.Tensor, np.ndarray]:
    """A bright disk drifting right on a dark noisy background; an identical disk appears at ``appear``."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    frames = np.zeros((t, 3, size, size), np.float32)
    labels = np.zeros((t, size, size), np.uint8)
    for k in range(t):
        img = 0.2 + 0.03 * rng.standard_normal((size, size))
        obj = (yy - 20) ** 2 + (xx - (14 + k)) ** 2 <= 36
        img[obj] = 0.8
        if k >= appear:
            img[(yy - 48) ** 2 + (xx - 48) ** 2 <= 36] = 0.8
        frames[k] = np.clip(img, 0, 1)[None]
        labels[k] = obj
    return torch.from_numpy(frames), labels


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def test_memory_tree_keeps_the_object_when_a_distractor_appears():
    frames, labels = distractor_video()
    net = ColourTemplateNet().eval()
    single, _, _ = FewShotPropagator(net, 64, 4).propagate(frames, torch.from_numpy(labels), [0])
    tree, _, conf = MemoryTreePropagator(net, 64, 4, pathways=3).propagate(frames, torch.from_numpy(labels), [0])
    after = range(10, 24)
    single_dice = np.mean([dice(single[t] > 0, labels[t] > 0) for t in after])
    tree_dice = np.mean([dice(tree[t] > 0, labels[t] > 0) for t in after])
    assert single_dice < 0.75, single_dice  # single path takes the look-alike as well
    assert tree_dice > 0.95, tree_dice  # the tree keeps only the tracked object
    before = range(1, 10)
    assert np.mean([dice(tree[t] > 0, labels[t] > 0) for t in before]) > 0.95
    assert tree.shape == labels.shape and conf.shape == (24,) and np.all((conf >= 0) & (conf <= 1))


def test_memory_tree_streams_in_order_and_matches_single_path_without_distractor():
    frames, labels = distractor_video(appear=10**6)
    net = ColourTemplateNet().eval()
    prop = MemoryTreePropagator(net, 64, 4, pathways=3, max_lag=5)
    sup = prop.supports({0: (frames[0], torch.from_numpy(labels[0]))})
    starts = []
    out = np.zeros_like(labels)
    for start, lab, c, p, _ in prop.stream(prop.windows(frames), sup):
        starts.append((start, len(lab)))
        out[start : start + len(lab)] = lab
    covered = [s + k for s, n in starts for k in range(n)]
    assert covered == list(range(24))  # every frame exactly once, in order
    single, _, _ = FewShotPropagator(net, 64, 4).propagate(frames, torch.from_numpy(labels), [0])
    assert np.mean([dice(out[t] > 0, single[t] > 0) for t in range(1, 24)]) > 0.98


def test_multi_object_annotation_in_the_middle():
    frames, labels = distractor_video(appear=10**6)
    two = labels.copy()
    two[:, 50:56, 4:10] = 2  # a second, static object (its colour: the bright value too)
    frames = frames.clone()
    frames[:, :, 50:56, 4:10] = 0.55
    net = ColourTemplateNet().eval()
    out, _, _ = MemoryTreePropagator(net, 64, 4).propagate(frames, torch.from_numpy(two), [6])
    assert np.array_equal(out[6], two[6])
    assert np.mean([dice(out[t] == 2, two[t] == 2) for t in range(24)]) > 0.95
    assert np.mean([dice(out[t] == 1, two[t] == 1) for t in range(24)]) > 0.9
