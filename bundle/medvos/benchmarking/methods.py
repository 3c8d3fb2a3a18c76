"""Propagation methods by name, with one calling convention, for benchmarks and ablations.

A method maps ``(frames (T,3,H,W) float [0,1], labels (T,H,W) uint8, support_frames, entry)`` to labels
``(T,H,W)``; ``entry`` is the datalist entry (paths) the frames were read from. Model methods run the `inferring`
workflow's own code (:func:`medvos.inference.workflow.run_inference` on the entry's files, the network rebuilt
from the checkpoint alone, the propagator of :func:`medvos.inference.defaults.make_propagator`), so a benchmark
scores exactly what `inferring` produces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvos.benchmarking.baselines import FlowPropagator, copy_mask
from medvos.inference.defaults import TUNING_KEYS, inference_defaults
from medvos.inference.predictor import VideoPredictor
from medvos.networks.checkpoint import input_size, load_model, checkpoint_clip_length
from medvos.networks.relearn_model import TAU_HIDDEN

Method = Callable[[np.ndarray, np.ndarray, Sequence[int], dict[str, Any]], np.ndarray]


def copy_method() -> Method:
    return lambda frames, labels, support, entry=None: copy_mask(labels, support)


def flow_method(kind: str = "dis") -> Method:
    flow = FlowPropagator(kind)
    return lambda frames, labels, support, entry=None: flow.propagate(frames, labels, support)


def model_method(checkpoint: str | Path, image_size: int | None = None, clip_length: int | None = None,
                 tau_hidden: int | None = None, relearn_steps: int = 0, **options: Any) -> Method:
    """A checkpoint as a method, through the `inferring` path; ``options`` override the inference defaults
    (``memory_tree``, ``pathways``, ``fusion``, ``threshold``). ``image_size`` / ``window`` default to the
    checkpoint's own (older files without a spec: 256 / 8). ``relearn_steps`` > 0: test-time relearning on each
    cine first (`inferring --relearn_steps`: from the model tuned on the annotation unless ``tune_steps`` is 0; its time
    is part of the method's time)."""
    from medvos.inference.workflow import run_inference

    clip_length = clip_length or checkpoint_clip_length(checkpoint, 8)
    size = image_size or input_size(checkpoint, 256)[0]
    net = load_model(checkpoint, None, clip_length, tau_hidden)
    net = net.to(torch.device("cuda" if torch.cuda.is_available() else "cpu")).eval()

    def run(frames: np.ndarray, labels: np.ndarray, support: Sequence[int], entry: dict[str, Any]) -> np.ndarray:
        model = net
        if relearn_steps:
            from medvos.engines.test_time import relearn_on_cine

            model = relearn_on_cine(net, entry["image"], entry["label"], size, list(support), steps=relearn_steps,
                                    clip_length=clip_length, tau_hidden=tau_hidden or TAU_HIDDEN, progress=False,
                                    tuning={k: v for k, v in options.items() if k in TUNING_KEYS})
        opts = {**inference_defaults(), **options}
        res = run_inference(entry["image"], entry["label"], Path("."), model, size, clip_length, opts["fusion"],
                            outputs=(), threshold=opts["threshold"], annotated=list(support), progress=False,
                            keep_labels=True,
                            predictor=VideoPredictor.with_defaults(model, size, clip_length, **options))
        return res["labels"]

    return run
