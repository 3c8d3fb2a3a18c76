"""GiraffeDet-style generalised FPN ("heavy neck") on a 3-level pyramid built from the fused features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medvos.networks.parts import Part


class FusionNode(nn.Module):
    """Concat fusion: ``Concat(inputs) -> Conv1x1 -> SiLU -> Conv3x3 + BN + SiLU``."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1),
            nn.SiLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.SiLU(inplace=True),
        )

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.block(torch.cat(inputs, dim=1))


def _node_sources(level: int, layer: int, levels: int) -> list[tuple[int, int]]:
    """(level, layer) of every input of node (level, layer): queen fusion + log2n skip connections."""
    src = [(level, layer - 1)]
    if level + 1 < levels:
        src.append((level + 1, layer - 1))  # coarser neighbour, upsampled
    if level - 1 >= 0:
        src.append((level - 1, layer - 1))  # finer neighbour, max-pooled
    n = 1
    while layer - 2**n >= 0:  # log2n skip layers (same level)
        src.append((level, layer - 2**n))
        n += 1
    return src


def _needed_nodes(levels: int, depth: int) -> set[tuple[int, int]]:
    """Nodes ``(level, layer)``, layer >= 1, from which the output node ``(0, depth)`` is reachable."""
    needed, todo = set(), [(0, depth)]
    while todo:
        node = todo.pop()
        if node in needed or node[1] == 0:
            continue
        needed.add(node)
        todo.extend(_node_sources(node[0], node[1], levels))
    return needed


class GFPNNeck(Part):
    """Generalised FPN over levels of strides ``s, 2s, 4s`` (level 0 = finest = the fused map).

    Node ``(l, k)`` fuses node ``(l, k-1)``, the coarser ``(l+1, k-1)`` (nearest upsampling), the finer
    ``(l-1, k-1)`` (max pooling) and the log2n skips ``(l, k - 2^n)``, n >= 1. All nodes have ``channels``
    channels, so no 1x1 adapters are needed. Output: the finest level of the last layer; only nodes that reach
    it are built (the last layers' coarse nodes would feed nothing).

    Args:
        channels: width of every node.
        levels: pyramid levels (3).
        depth: fusion layers (3).
    """

    def __init__(self, channels: int = 64, levels: int = 3, depth: int = 3) -> None:
        super().__init__()
        self.channels, self.levels, self.depth = channels, levels, depth
        self.nodes = nn.ModuleDict()
        self.needed = _needed_nodes(levels, depth)
        for k in range(1, depth + 1):
            for lv in range(levels):
                if (lv, k) in self.needed:
                    n_in = len(_node_sources(lv, k, levels))
                    self.nodes[f"{lv}_{k}"] = FusionNode(n_in * channels, channels)
        self._register_load_state_dict_pre_hook(self._drop_unused_nodes)

    def _drop_unused_nodes(self, state: dict, prefix: str, *args) -> None:  # noqa: ANN002
        """Checkpoints of medvos <= 0.1.0 hold last-layer coarse nodes that never affected the output."""
        for key in [k for k in state if k.startswith(prefix + "nodes.")]:
            if key[len(prefix) + len("nodes.") :].split(".")[0] not in self.nodes:
                del state[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w) -> (B, C, h, w)``."""
        feats: dict[tuple[int, int], torch.Tensor] = {(0, 0): x}
        for lv in range(1, self.levels):
            feats[(lv, 0)] = F.max_pool2d(feats[(lv - 1, 0)], 2, ceil_mode=True)
        for k in range(1, self.depth + 1):
            for lv in range(self.levels):
                if (lv, k) not in self.needed:
                    continue
                size = feats[(lv, 0)].shape[-2:]
                inputs = []
                for sl, sk in _node_sources(lv, k, self.levels):
                    f = feats[(sl, sk)]
                    if sl > lv:
                        f = F.interpolate(f, size=size, mode="nearest")
                    elif sl < lv:
                        f = F.adaptive_max_pool2d(f, size)
                    inputs.append(f)
                feats[(lv, k)] = self.nodes[f"{lv}_{k}"](inputs)
        return feats[(0, self.depth)]
