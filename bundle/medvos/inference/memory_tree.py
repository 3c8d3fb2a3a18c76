"""SAM2Long-style memory tree for few-shot propagation (DESIGN §2; Ding et al. 2024, adapted to a few-shot model).

Per object, ``pathways`` hypotheses run through the video. Each pathway has its own support memory: the annotated
frame(s) plus up to ``memory_size`` of its own confident predictions, encoded as extra supports (a prediction
enters memory only when its confidence reaches ``memory_threshold``, at most one every ``memory_gap`` frames).
For every frame each pathway proposes candidates from its probability map (mean over its memory's supports):

- ``all``: every pixel above the threshold;
- ``tracked``: only the connected components that touch the pathway's previous mask (dilated), which drops a
  look-alike that appears elsewhere in the frame.

A candidate's confidence is its certainty (mean foreground probability over its pixels) times its temporal
consistency (share of its pixels inside the dilated previous mask, at least ``min_consistency``). Pathways keep
a cumulative log-confidence; the ``pathways`` best (pathway, candidate) pairs survive. When every candidate is
uncertain (confidence below ``uncertain_threshold``) distinct masks are kept instead of near-duplicates, so an
alternative survives until the evidence settles. Frames are output once every surviving pathway descends from
the same hypothesis for them (the common ancestor), so the answer is the best pathway traced back, streamed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from medvos.inference.propagator import FewShotPropagator, Support, Window, _resize


@dataclass
class _Node:
    """One accepted hypothesis for one frame; ``parent`` is the same pathway's previous frame."""

    frame: int
    mask: np.ndarray  # (H, W) bool
    prob: np.ndarray  # (H, W) float16
    conf: float
    parent: _Node | None


@dataclass
class _Pathway:
    node: _Node | None
    score: float = 0.0
    memory: tuple[Any, ...] = ()  # keys of predicted-frame supports (annotations are always used)
    last_memory: int = -(10**9)
    active: tuple[Any, ...] = ()  # the memory this window's probabilities were computed with


@dataclass
class _Tree:
    """The pathways of one object and the frames already output."""

    value: int
    annotated: list[Support]
    paths: list[_Pathway] = field(default_factory=lambda: [_Pathway(None)])
    emitted: int = 0  # frames before this one are final


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


class MemoryTreePropagator(FewShotPropagator):
    """:class:`FewShotPropagator` with a memory tree per object (same ``stream`` interface and outputs).

    Args (besides the propagator's):
        pathways: P, hypotheses kept per object.
        memory_size: predicted frames kept as extra supports per pathway.
        memory_threshold: confidence a prediction needs to enter memory.
        memory_gap: frames between two memory entries of a pathway (default: the window).
        uncertain_threshold: below it for every candidate, keep diverse candidates.
        dilation: radius of the temporal-consistency neighbourhood, as a fraction of the frame's larger side.
        min_consistency: floor of the consistency factor (a moving object is never scored zero).
        max_lag: frames pathways may stay apart before the worst are pruned (bounds memory and output delay).
    """

    def __init__(self, *args: Any, pathways: int = 3, memory_size: int = 3, memory_threshold: float = 0.85,
                 memory_gap: int | None = None, uncertain_threshold: float = 0.5, dilation: float = 0.06,
                 min_consistency: float = 0.05, max_lag: int = 32, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pathways, self.memory_size, self.memory_threshold = pathways, memory_size, memory_threshold
        self.memory_gap = memory_gap if memory_gap is not None else self.clip_length
        self.uncertain_threshold, self.dilation, self.min_consistency = uncertain_threshold, dilation, min_consistency
        self.max_lag = max_lag
        self._annotation_masks: dict[tuple[int, int], np.ndarray] = {}
        self._memory: dict[Any, Any] = {}

    # ------------------------------------------------------------------------------------------- candidates
    def _kernel(self, shape: tuple[int, int]) -> np.ndarray:
        r = max(1, int(round(self.dilation * max(shape))))
        return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))

    def candidates(self, prob: np.ndarray, prev: np.ndarray | None) -> list[tuple[str, np.ndarray, float]]:
        """``(kind, mask, confidence)`` proposals for one frame's foreground probability ``prob (H,W)``."""
        full = prob > self.threshold
        near = None if prev is None else cv2.dilate(prev.astype(np.uint8), self._kernel(prob.shape)) > 0
        masks = [("all", full)]
        if near is not None and full.any():
            n, comp = cv2.connectedComponents(full.astype(np.uint8))
            touching = [int(k) for k in np.unique(comp[near]) if k != 0]
            if 0 < len(touching) < n - 1:
                masks.append(("tracked", np.isin(comp, touching)))
        out = []
        for kind, m in masks:
            area = int(m.sum())
            if area == 0:
                certainty = 1.0 - float(prob.max()) if prev is None or not prev.any() else 0.05
                consistency = 1.0
            else:
                certainty = float(prob[m].mean())
                consistency = 1.0 if near is None else float(np.logical_and(m, near).sum() / area)
            out.append((kind, m, certainty * max(consistency, self.min_consistency)))
        return out

    def _select(self, cands: list[tuple[float, _Pathway, np.ndarray, float]]) -> list[tuple[float, _Pathway, np.ndarray,
                                                                                     float]]:
        cands = sorted(cands, key=lambda c: -c[0])
        if max(c[3] for c in cands) >= self.uncertain_threshold:
            chosen = []
            for c in cands:  # the best ones, without exact duplicates
                if all(not np.array_equal(c[2], d[2]) for d in chosen):
                    chosen.append(c)
                if len(chosen) == self.pathways:
                    break
            return chosen
        chosen = []
        for c in cands:  # all uncertain: keep distinct alternatives alive
            if all(_iou(c[2], d[2]) < 0.8 for d in chosen):
                chosen.append(c)
            if len(chosen) == self.pathways:
                break
        return chosen

    # ------------------------------------------------------------------------------------------------ stream
    def _probabilities(self, q_enc: Any, keys: list[Any], encodings: dict[Any, Any], cache: dict[Any, np.ndarray],
                       size: tuple[int, int]) -> np.ndarray:
        """Mean foreground probability ``(n,H,W)`` of a window over the supports ``keys``; each support's map is
        computed once per window (pathways share most of their memory)."""
        for k in keys:
            if k not in cache:
                logits = self.network.segment_encoded(q_enc, encodings[k], self.image_size)
                cache[k] = _resize(torch.softmax(logits, 1)[:, 1:2].float(), size, "bilinear")[:, 0].cpu().numpy()
        return np.mean([cache[k] for k in keys], axis=0)

    @torch.inference_mode()
    def stream(self, windows: Iterable[tuple[int, torch.Tensor]], supports: list[Support]) -> Iterator[Window]:
        supports = [s for s in supports if not s.absent]  # the tree tracks an object from where it is shown
        trees = [_Tree(v, [s for s in supports if s.value == v]) for v in sorted({s.value for s in supports})]
        self._memory, self._next = {}, 0
        ready: dict[int, dict[int, _Node]] = {}
        for start, frames in windows:
            size = (int(frames.shape[-2]), int(frames.shape[-1]))
            q = _resize(frames.to(self.device, torch.float32), self.image_size, "bilinear")
            q_enc = self.encode_queries(start, q)
            cache: dict[Any, np.ndarray] = {}
            in_use = {k for tree in trees for path in tree.paths for k in path.memory}
            self._memory = {k: v for k, v in self._memory.items() if k in in_use}  # forgotten supports freed
            for tree in trees:
                for i, s in enumerate(tree.annotated):
                    self._memory[("annotated", tree.value, i)] = s.encoding
                base = [("annotated", tree.value, i) for i in range(len(tree.annotated))]
                probs: dict[tuple, np.ndarray] = {}
                for path in tree.paths:
                    path.active = path.memory  # memory added inside a window counts from the next window
                    if path.memory not in probs:
                        probs[path.memory] = self._probabilities(q_enc, base + list(path.memory), self._memory, cache,
                                                                 size)
                for i in range(frames.shape[0]):
                    t = start + i
                    if (tree.value, t) in self._annotation_masks:
                        self._annotate(tree, t)
                    else:
                        self._step(tree, t, {m: p[i] for m, p in probs.items()}, q[i])
                    for node in self._final_nodes(tree):
                        ready.setdefault(node.frame, {})[tree.value] = node
            yield from self._flush(ready, len(trees))
        for tree in trees:  # the end: the best pathway traced back
            node = max(tree.paths, key=lambda p: p.score).node
            while node is not None and node.frame >= tree.emitted:
                ready.setdefault(node.frame, {})[tree.value] = node
                node = node.parent
        yield from self._flush(ready, len(trees))

    def _flush(self, ready: dict[int, dict[int, _Node]], n_trees: int) -> Iterator[Window]:
        """Yield the next consecutive frames that every object's tree has finalised, as one chunk."""
        start, done = self._next, []
        while self._next in ready and len(ready[self._next]) == n_trees:
            done.append(ready.pop(self._next))
            self._next += 1
        if not done:
            return
        values = sorted(done[0])
        prob = np.stack([np.stack([f[v].prob.astype(np.float32) * f[v].mask for v in values]) for f in done])
        best_p, best = prob.max(1), prob.argmax(1)
        labels = np.where(best_p > 0, np.asarray(values, np.uint8)[best], 0).astype(np.uint8)
        conf = np.asarray([min(f[v].conf for v in values) for f in done], np.float32)
        yield Window(start, labels, conf, {v: np.stack([f[v].prob for f in done]) for v in values})

    def _final_nodes(self, tree: _Tree) -> list[_Node]:
        """Nodes of frames ``>= tree.emitted`` shared by every pathway's ancestry (oldest first), now final.

        Pathways that stay apart for more than ``max_lag`` frames are pruned to the descendants of the best
        pathway's oldest pending node, so memory and latency stay bounded.
        """
        def chain(path: _Pathway) -> list[_Node]:
            out, node = [], path.node
            while node is not None and node.frame >= tree.emitted:
                out.append(node)
                node = node.parent
            return out[::-1]

        chains = [chain(p) for p in tree.paths]
        if max(len(c) for c in chains) > self.max_lag:
            best = max(range(len(tree.paths)), key=lambda i: tree.paths[i].score)
            keep = [i for i, c in enumerate(chains) if c and c[0] is chains[best][0]]
            tree.paths, chains = [tree.paths[i] for i in keep], [chains[i] for i in keep]
        common = []
        for nodes in zip(*chains):
            if any(n is not nodes[0] for n in nodes):
                break
            common.append(nodes[0])
        if common:
            tree.emitted = common[-1].frame + 1
        return common

    def _annotate(self, tree: _Tree, t: int) -> None:
        """An annotated frame: every pathway collapses onto the annotation (confidence 1)."""
        mask = self._annotation_masks[(tree.value, t)]
        best = max(tree.paths, key=lambda p: p.score)
        node = _Node(t, mask, mask.astype(np.float16), 1.0, best.node)
        tree.paths = [_Pathway(node, best.score, best.memory, best.last_memory, best.active)]

    def _step(self, tree: _Tree, t: int, probs: dict[tuple, np.ndarray], q: torch.Tensor) -> None:
        cands = []
        for path in tree.paths:
            prev = path.node.mask if path.node is not None else None
            for _, mask, conf in self.candidates(probs[path.active], prev):
                cands.append((path.score + math.log(max(conf, 1e-6)), path, mask, conf))
        new_paths = []
        for score, path, mask, conf in self._select(cands):
            prob = probs[path.active]
            node = _Node(t, mask, prob.astype(np.float16), conf, path.node)
            memory, last = path.memory, path.last_memory
            if conf >= self.memory_threshold and t - last >= self.memory_gap and mask.any():
                key = (tree.value, t, id(node))
                m = _resize(torch.from_numpy(mask.astype(np.float32))[None, None].to(self.device), self.image_size,
                            "nearest")
                self._memory[key] = self.network.encode_support(q[None, None], m[None])
                memory, last = (memory + (key,))[-self.memory_size:], t
            new_paths.append(_Pathway(node, score, memory, last, path.active))
        tree.paths = new_paths

    def supports(self, annotated: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> list[Support]:
        """As :meth:`FewShotPropagator.supports` (one support per object and annotated frame); also keeps the
        annotation masks for the annotated frames."""
        self._annotation_masks = {(int(v), a): (lab == v).cpu().numpy() for a, (_, lab) in annotated.items()
                                  for v in torch.unique(lab).tolist() if v != 0}
        return super().supports(annotated)
