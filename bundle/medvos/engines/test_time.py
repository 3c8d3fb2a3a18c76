"""Test-time relearning: the paper's phase 2 applied to the one cine being segmented.

The (phase-1) model is copied into a :class:`~medvos.networks.relearn_model.RelearnNet` (a TAU between neck and
head, head frozen) and relearned on clips of |B| consecutive frames of the input cine, with its annotated frame(s)
as the only labels and the frozen input model as teacher: ``L = l_t L_t + l_f L_f + l_p L_p`` plus TPS, the same
step as the `relearning` workflow (:class:`medvos.engines.relearning.RelearnStep`). It stops after ``steps`` steps
or ``seconds``, whichever comes first; the relearned model then propagates.

With test-time tuning on (``tuning``, `inferring`'s default), the model is first tuned on the annotated frames
(:class:`medvos.inference.tuning.AnnotationTuning`) and the *tuned* model is the teacher and the starting point:
relearning adds to the default instead of replacing it (until 0.19.0 it started from the untuned model and lost
0.19 Dice on CVC-ClinicDB 21-29 against the default; model card, "Test-time relearning").

Memory: the cine is held at the network input size, uint8 (T x 3 x S x S bytes; 300 frames at 256 px: 59 MB).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from medvos.engines.relearning import RelearnStep
from medvos.inference.defaults import tuning_options
from medvos.inference.predictor import VideoPredictor, VideoState
from medvos.inference.tuning import AnnotationTuning
from medvos.losses.relearning import RelearnLoss
from medvos.networks.image_model import param_groups
from medvos.networks.relearn_model import CLIP_LENGTH, TAU_BLOCKS, TAU_HIDDEN

logger = logging.getLogger(__name__)


def frames_at_size(predictor: VideoPredictor, state: VideoState, size: int, chunk: int = 16) -> np.ndarray:
    """The video's frames prepared as the predictor prepares them (intensity range, RGB), at ``size`` px: uint8
    ``(T,3,S,S)``."""
    cine = state.cine
    out = np.zeros((cine.num_frames, 3, size, size), np.uint8)
    for start in range(0, cine.num_frames, chunk):
        x = torch.from_numpy(predictor.prepare(state, cine.frames[start : start + chunk]))
        x = F.interpolate(x, size=(size, size), mode="area")
        out[start : start + len(x)] = (x * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def relearn_on_cine(network: nn.Module, video: Any, annotation: Any, image_size: int,
                    annotated: Sequence[int] | None = None, steps: int = 30, seconds: float | None = None,
                    clip_length: int = CLIP_LENGTH, tau_hidden: int = TAU_HIDDEN, tau_blocks: int = TAU_BLOCKS,
                    lambda_t: float = 0.1,
                    lambda_f: float = 1.0, lambda_p: float = 1.0, tps_weight: float = 0.1,
                    learning_rate: float = 1e-4, backbone_lr_mult: float = 0.1, seed: int = 0,
                    tuning: AnnotationTuning | dict[str, Any] | None = None, progress: bool = True) -> nn.Module:
    """A relearned copy of ``network`` (a phase-1 image model) adapted to ``video``; ``network`` is unchanged.

    Args:
        network: the phase-1 model (teacher, and the student's starting point).
        video, annotation, annotated: as :func:`medvos.inference.workflow.run_inference`.
        image_size: the network input size. steps / seconds: the budget (first reached stops).
        clip_length, tau_hidden, tau_blocks: the TAU (|B| is also the propagation window afterwards).
        lambda_t, lambda_f, lambda_p, tps_weight, learning_rate, backbone_lr_mult: as the `relearning` workflow.
        tuning: test-time tuning on the annotated frames first (an :class:`AnnotationTuning`, or `inferring`'s
            ``tune_*`` options, ``inference.yaml``'s where not given); ``None`` or off: relearn from ``network``.

    Returns:
        The relearned :class:`RelearnNet` in eval mode, on ``network``'s device. It is marked ``one_cine`` (the
        predictor exports it into a temporary folder, not the cache); its ``annotation_tuned`` says whether it grew
        from a tuned model (the predictor then takes the motion settings for a tuned network).
    """
    from medvos.networks.relearn_model import RelearnNet

    if hasattr(network, "tau"):
        raise ValueError("test-time relearning starts from a phase-1 image model; this checkpoint is already "
                         "relearned (use it directly, or the phase-1 model it came from)")
    device = next(network.parameters()).device
    reader = VideoPredictor(lambda: None)  # the video's state as inference reads it: cine, intensity, annotations
    state = reader.init_state(video)
    reader.add_annotations(state, annotation, annotated)
    cine, given = state.cine, state.annotations
    frames = frames_at_size(reader, state, image_size)
    ann = [a for a in state.annotated if given[a].any()]  # (frames marking an object absent are no support)
    images, labels = reader.annotated_at_size(state, image_size)  # the frames and labels of ``ann``, input size
    masks = labels.numpy()
    values = sorted({int(v) for v in np.unique(masks) if v})
    if isinstance(tuning, dict):
        tuning = AnnotationTuning(**tuning_options(tuning)[0])
    tuned = tuning is not None and tuning.on
    if tuned:  # the teacher and the starting point: the model `inferring` would propagate with
        network = tuning(network, images, labels)
    teacher = (network if tuned else copy.deepcopy(network)).eval()  # (the tuned model is already a copy)
    student = RelearnNet.from_sizes(teacher, clip_length, tau_hidden, tau_blocks).to(device)
    student.annotation_tuned = tuned
    student.one_cine = True
    optimizer = torch.optim.AdamW(param_groups(student, learning_rate, backbone_lr_mult), lr=learning_rate,
                                  weight_decay=1e-4)
    step_fn = RelearnStep(teacher)
    engine = SimpleNamespace(state=SimpleNamespace(device=device), network=student, optimizer=optimizer,
                             loss_function=RelearnLoss(lambda_t, lambda_f, lambda_p, tps_weight=tps_weight))
    rng = np.random.default_rng(seed)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    t_total, t0 = frames.shape[0], time.perf_counter()
    bar = tqdm(total=steps, desc="test-time relearning", unit="step", disable=not progress)
    done = 0
    try:
        for done in range(1, steps + 1):
            start = int(rng.integers(0, max(t_total - clip_length, 0) + 1))
            idx = np.minimum(np.arange(start, start + clip_length), t_total - 1)
            a = int(rng.integers(len(ann)))
            present = [v for v in values if (masks[a] == v).any()]  # one object per step (multi-label support)
            value = present[int(rng.integers(len(present)))]
            batch = {"clip": torch.from_numpy(frames[idx]).float() / 255.0,
                     "support": torch.from_numpy(frames[[ann[a]]]).float() / 255.0,
                     "support_mask": torch.from_numpy(masks[[a]] == value).float()[:, None]}
            out = step_fn(engine, batch)
            bar.update(1)
            bar.set_postfix(loss=f"{out['loss']:.4f}")
            if seconds is not None and time.perf_counter() - t0 >= seconds:
                break
    finally:
        bar.close()
        torch.random.set_rng_state(gen_state)
    logger.info("test-time relearning on %s: %d steps in %.1f s", cine.source, done, time.perf_counter() - t0)
    return student.eval()
