"""Test-time tuning on the annotated frames: the phase-1 model fine-tuned on the one cine's annotation before it
propagates (one-shot fine-tuning, as OSVOS does for video object segmentation: Caelles et al., CVPR 2017).

Each step is a batch of episodes made from the annotated frame(s) alone: the query is an augmented view of an
annotated frame, the support another augmented view of an annotated frame showing the same object (phase 1's own
augmentation and loss, read from ``train.yaml``: ``train#augment`` and ``loss``). The network learns what *this*
target looks like against *this* background. Batch-norm statistics stay frozen (the network is in eval mode while
it learns): a batch of views of one frame would overwrite them (measured: tuning with them updated lost 4 Dice
points on CVC-ClinicDB, frozen it gained 9; model card). The input network is unchanged; a tuned copy is returned.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import convert_to_tensor
from torch import nn
from tqdm import tqdm

from medvos.config_parsing import config_parser
from medvos.networks.image_model import pack_episode, param_groups
from medvos.networks.precision import autocast, check_precision, uses_bf16

logger = logging.getLogger(__name__)
TRAIN_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "train.yaml"


def _check_scale_range(scale_range: float) -> None:
    if not 0 <= float(scale_range) < 1:
        raise ValueError(f"tune_scale_range {scale_range}: expected 0 <= s < 1 (the scale factor is 1 +- s)")


@lru_cache(maxsize=8)
def _phase1_parts(image_size: int, scale_range: float | None = None) -> tuple[Any, Any]:
    """``(train#augment, loss)`` of ``train.yaml`` at ``image_size`` (phase 1's augmentation and loss, their one
    source); ``scale_range``: its ``augment_scale_range`` instead of phase 1's (a scale factor from ``1 - s`` to
    ``1 + s``: the object from ``1 / (1 + s)`` to ``1 / (1 - s)`` times its size)."""
    parser = config_parser()  # a concurrent import (a DICOM run's highdicom) cannot fail it
    parser.read_config(str(TRAIN_CONFIG))
    parser["image_size"] = int(image_size)
    if scale_range is not None:
        _check_scale_range(scale_range)
        parser["augment_scale_range"] = float(scale_range)
    return parser.get_parsed_content("train#augment"), parser.get_parsed_content("loss")


@dataclass(frozen=True)
class AnnotationTuning:
    """Fine-tunes a phase-1 model on annotated frames (``inferring --tune_steps``; defaults in ``inference.yaml``).

    Args:
        steps: optimiser steps (0: off); seconds: a time budget (the first reached stops).
        learning_rate: AdamW's (the backbone's G at ``backbone_lr_mult`` times it, as in phase 1; 0 freezes the
            backbone, so the tuned copy shares the input network's exported query graph:
            :class:`medvos.networks.exported.SharedQueryNetwork`).
        batch_size: episodes per step.
        scale_range: the views' random scale factor, ``1 +- s`` (the object ``1 / (1 + s)`` to ``1 / (1 - s)``
            times its size; ``None``: phase 1's 0.2, ``train.yaml``): the target changes size between frames far
            more than one frame's views show at phase 1's range, so the copy is shown it larger and smaller.
        views: 0: every step draws fresh augmented views (``batch_size`` queries and supports, each through the
            backbone); N: N views are drawn and encoded by the frozen backbone once, and every step pairs a query
            and a support from them, so a step runs only what learns (pseudo mask, fusion, neck, head). Needs the
            backbone frozen (``backbone_lr_mult`` 0): its features of a view then never change.
        seed: of the augmentation and of the episode draw (the same cine and annotation give the same model).
        precision: the arithmetic of the forward passes (the view bank's encoding and each step's episodes):
            ``float32``, or ``bfloat16`` (autocast; the loss, gradients and weights stay float32): faster where the
            processor computes bf16 natively (AVX-512 BF16 / AMX, recent GPUs), slower where it does not;
            ``auto``: bf16 where it is native (:func:`medvos.networks.precision.native_bf16`), else float32.
        average: the returned weights are the mean of this many tunings, seeds ``seed`` to ``seed + average - 1``
            (a model soup, Wortsman et al., ICML 2022: fine-tunings of one network stay in one basin, so their mean
            weights predict about as their ensemble would, with one network's cost per frame); their time adds up.
        progress: a progress bar.
    """

    steps: int = 200
    seconds: float | None = None
    learning_rate: float = 1e-4
    backbone_lr_mult: float = 0.0
    batch_size: int = 4
    scale_range: float | None = 0.5
    views: int = 64
    seed: int = 0
    precision: str = "auto"
    average: int = 1
    progress: bool = False

    def __post_init__(self) -> None:
        check_precision(self.precision, "tune_precision")
        if self.average < 1:
            raise ValueError(f"tune_average {self.average}: expected at least 1 (tunings whose weights are averaged)")
        if self.scale_range is not None:  # refused when the predictor is built, not once the cine is read
            _check_scale_range(self.scale_range)
        if self.views < 0 or self.views == 1:
            raise ValueError(f"tune_views {self.views}: expected 0 (fresh views every step) or at least 2")
        if self.views and self.backbone_lr_mult:
            raise ValueError(f"tune_views {self.views} needs the backbone frozen (tune_backbone_lr_mult 0, not "
                             f"{self.backbone_lr_mult}): a learning backbone changes every view's features; "
                             "tune_views 0 tunes it on fresh views")

    @property
    def on(self) -> bool:
        return self.steps > 0 and (self.seconds is None or self.seconds > 0)

    def __call__(self, network: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> nn.Module:
        """A copy of ``network`` tuned on ``images (n,3,S,S)`` in [0,1] with their labels ``(n,S,S)`` (0 =
        background; every object value is a target), at the network's input size ``S``. Callable under
        ``torch.inference_mode`` (the copy and its training leave it)."""
        if hasattr(network, "tau"):
            raise ValueError("test-time tuning adapts a phase-1 image model; this one is relearned (has a TAU)")
        with torch.inference_mode(False), torch.enable_grad():
            if self.average == 1:
                return self._tune(network, images.clone(), labels.clone())
            tuned = [dataclasses.replace(self, seed=self.seed + k, average=1)._tune(network, images.clone(),
                                                                                     labels.clone())
                     for k in range(self.average)]
        return _mean_weights(tuned)

    def _tune(self, network: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> nn.Module:
        size = int(images.shape[-1])
        augment, loss_fn = _phase1_parts(size, self.scale_range)
        augment = copy.deepcopy(augment).set_random_state(self.seed)
        rng = np.random.default_rng(self.seed)
        pairs = [(i, int(v)) for i in range(len(labels)) for v in torch.unique(labels[i]).tolist() if v]
        if not pairs:
            raise ValueError("test-time tuning needs an annotated object")
        model = copy.deepcopy(network).eval()  # eval: batch-norm statistics frozen (module docstring)
        if self.backbone_lr_mult == 0:  # the backbone frozen: no gradient through it, and the copy's query encoding
            model.backbone.requires_grad_(False)  # stays the input network's (shareable: medvos.networks.exported)
        device = next(model.parameters()).device
        if device.type == "cpu":  # the copy learns and then propagates in PyTorch: channels-last convolutions are
            model = model.to(memory_format=torch.channels_last)  # faster on the CPU (model card, "Speed")
        optimizer = torch.optim.AdamW(param_groups(model, self.learning_rate, self.backbone_lr_mult),
                                      lr=self.learning_rate, weight_decay=1e-4)

        def view(i: int, value: int, need_object: bool) -> tuple[torch.Tensor, torch.Tensor]:
            image, mask = images[i].float(), (labels[i] == value).float()[None]
            for _ in range(3):
                out = augment({"image": image, "label": mask})
                x = convert_to_tensor(out["image"], dtype=torch.float32, track_meta=False)  # plain tensors: no
                y = (convert_to_tensor(out["label"], track_meta=False) > 0.5).float()  # metadata on the hot path
                if not need_object or y.any():
                    return x, y
            return image, mask  # augmentation kept cutting the object out of the support: the plain frame

        bf16 = uses_bf16(self.precision, device)

        def arithmetic() -> Any:  # the forward passes' (autocast: the loss and the update stay float32)
            return autocast(bf16, device)

        t0, done = time.perf_counter(), 0
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)
        bar = tqdm(total=self.steps, desc="test-time tuning", unit="step", disable=not self.progress)
        try:
            bank = _ViewBank.encode(model, pairs, view, self.views, device, arithmetic) if self.views else None
            frames_of = {v: [k for k, w in pairs if w == v] for _, v in pairs}  # per object, its annotated frames
            for done in range(1, self.steps + 1):
                if bank is not None:
                    with arithmetic():
                        logits, target = bank.episodes(model, self.batch_size, rng, size)
                else:
                    queries, targets, supports, masks = [], [], [], []
                    for _ in range(self.batch_size):
                        i, value = pairs[int(rng.integers(len(pairs)))]
                        same = frames_of[value]
                        q, y = view(i, value, False)
                        s, m = view(same[int(rng.integers(len(same)))], value, True)
                        queries.append(q), targets.append(y), supports.append(s[None]), masks.append(m[None])
                    x = pack_episode(torch.stack(queries), torch.stack(supports), torch.stack(masks)).to(device)
                    with arithmetic():
                        logits = model(x)
                    target = torch.stack(targets).to(device)
                loss = loss_fn(logits.float(), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
                if self.seconds is not None and time.perf_counter() - t0 >= self.seconds:
                    break
        finally:
            bar.close()
            torch.random.set_rng_state(gen_state)
        logger.info("test-time tuning: %d steps in %.1f s on %d annotated frame(s), %s", done,
                    time.perf_counter() - t0, len(images), "bfloat16" if bf16 else "float32")
        return model.eval()


def _mean_weights(models: list[nn.Module]) -> nn.Module:
    """The first of ``models`` (copies of one network) holding the mean of their floating-point weights and buffers
    where they differ (the frozen backbone and integer buffers stay the first's, bit for bit)."""
    states = [m.state_dict() for m in models]
    mean = {k: torch.stack([s[k] for s in states]).mean(0)
            if v.is_floating_point() and not all(torch.equal(v, s[k]) for s in states[1:]) else v
            for k, v in states[0].items()}
    models[0].load_state_dict(mean)
    return models[0]


@dataclass
class _ViewBank:
    """Augmented views of the annotated frames, encoded once by a frozen backbone (``AnnotationTuning.views``).

    ``values[j]`` is view ``j``'s object, ``has_object[j]`` whether the augmentation kept it in sight (a view
    without it still serves as a query: the object is absent there); supports are views that show it."""

    query: tuple[torch.Tensor, torch.Tensor]  # (G(q), F(q)) of every view
    support: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (F, mask, G) of every view as a masked support
    targets: torch.Tensor  # (V, 1, S, S)
    values: list[int]
    has_object: list[bool]

    def __post_init__(self) -> None:  # per object, the views that can be its support (listed once, not per episode)
        self.shows = {v: [j for j, (w, seen) in enumerate(zip(self.values, self.has_object)) if w == v and seen]
                      for v in set(self.values)}

    @classmethod
    def encode(cls, model: nn.Module, pairs: list[tuple[int, int]], view: Any, count: int, device: torch.device,
               arithmetic: Any = contextlib.nullcontext, chunk: int = 16) -> _ViewBank:
        """``count`` views drawn by ``view(frame, object, need_object) -> (image, mask)`` over the annotated
        ``(frame, object)`` pairs, each encoded as a query and as a masked support (``chunk`` views at a time, in
        the context ``arithmetic()`` gives: the tuning's precision)."""
        drawn = []
        for j in range(count):  # every annotated (frame, object) in turn, so each object gets its share
            i, value = pairs[j % len(pairs)]
            drawn.append((value, *view(i, value, False)))
        for value in {v for _, v in pairs}:  # every object needs a view that shows it (a support)
            if not any(v == value and y.any() for v, _, y in drawn):
                i = next(k for k, v in pairs if v == value)
                drawn.append((value, *view(i, value, True)))
        images = torch.stack([x for _, x, _ in drawn]).to(device)
        targets = torch.stack([y for _, _, y in drawn]).to(device)
        queries, supports = [], []
        with torch.no_grad(), arithmetic():
            for start in range(0, len(drawn), chunk):
                x, y = images[start:start + chunk], targets[start:start + chunk]
                queries.append(model.encode_query(x))
                supports.append(model.encode_support(x[:, None], y[:, None]))
        return cls(tuple(torch.cat(parts) for parts in zip(*queries)),
                   tuple(torch.cat(parts) for parts in zip(*supports)), targets,
                   [v for v, _, _ in drawn], [bool(y.any()) for _, _, y in drawn])

    def episodes(self, model: nn.Module, batch_size: int, rng: np.random.Generator, size: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and targets of ``batch_size`` episodes: a random query view, and a support view of the same
        object that shows it (another view where there is one)."""
        qs, ss = [], []
        for _ in range(batch_size):
            q = int(rng.integers(len(self.values)))
            shows = self.shows[self.values[q]]
            others = [j for j in shows if j != q] or shows
            qs.append(q), ss.append(others[int(rng.integers(len(others)))])
        query = tuple(part[qs] for part in self.query)
        support = tuple(part[ss] for part in self.support)
        logits = model.decode(model.temporal(model.encoded_neck_features(query, support)), (size, size))
        return logits, self.targets[qs]
