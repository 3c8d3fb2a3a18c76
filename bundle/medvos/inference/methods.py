"""Propagation methods by name, with one calling convention, for benchmarks and ablations.

A method maps ``(frames (T,3,H,W) float [0,1], labels (T,H,W) uint8, support_frames)`` to labels ``(T,H,W)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvos.inference.baselines import FlowPropagator, copy_mask
from medvos.inference.memory_tree import MemoryTreePropagator
from medvos.inference.propagator import FewShotPropagator
from medvos.networks.checkpoint import load_model
from medvos.networks.image_model import FewShotSegNet

Method = Callable[[np.ndarray, np.ndarray, Sequence[int]], np.ndarray]


def copy_method() -> Method:
    return lambda frames, labels, support: copy_mask(labels, support)


def flow_method(kind: str = "dis") -> Method:
    return FlowPropagator(kind).propagate


def model_method(checkpoint: str | Path, image_size: int = 256, window: int = 8, tau_hidden: int = 256,
                 memory_tree: bool = False, tree_options: dict[str, Any] | None = None,
                 image_model: dict[str, Any] | None = None) -> Method:
    """A phase-1 or relearned checkpoint as a method, optionally with the memory tree."""
    net = load_model(checkpoint, FewShotSegNet(backbone_weights=None, **(image_model or {})), window, tau_hidden)
    net = net.to(torch.device("cuda" if torch.cuda.is_available() else "cpu")).eval()
    prop = (MemoryTreePropagator(net, image_size, window, **(tree_options or {})) if memory_tree
            else FewShotPropagator(net, image_size, window))

    def run(frames: np.ndarray, labels: np.ndarray, support: Sequence[int]) -> np.ndarray:
        return prop.propagate(torch.from_numpy(frames), torch.from_numpy(labels), support)[0]

    return run
