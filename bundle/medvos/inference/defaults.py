"""The `inferring` defaults, read from ``bundle/configs/inference.yaml`` (their one source), and the propagator they
configure for a checkpoint. The benchmark, the evaluation scripts and the MONAI Label app use these, so every
consumer scores exactly what `inferring` does."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from torch import nn

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "inference.yaml"
KEYS = ("fusion", "threshold", "memory_tree", "pathways", "motion", "motion_weight", "flow_tolerance",
        "redetect_support", "redetect_confidence", "redetect_frames", "anchor_weight", "anchor_agreement",
        "motion_cap", "hold_below", "hold_frames", "meeting_agreement", "edge_radius", "flow_check", "spill_mb", "runtime")
TUNING_KEYS = ("tune_steps", "tune_seconds", "tune_learning_rate", "tune_backbone_lr_mult",  # test-time tuning
               "tune_scale_range", "tune_views", "tune_seed", "tune_precision", "tune_average")
# (medvos.inference.tuning)
PREDICTOR_KEYS = ("self_annotate", "self_annotate_trust", "self_annotate_cue", "self_annotate_warm",
                  "self_annotate_tune_share", "pass_cache_mb")  # self-annotation (medvos.inference.predictor)
OPTIONS = KEYS + TUNING_KEYS + PREDICTOR_KEYS  # every option VideoPredictor.with_defaults takes


@lru_cache(maxsize=1)
def inference_defaults() -> dict[str, Any]:
    """The propagation, test-time tuning and self-annotation options (:data:`KEYS`, :data:`TUNING_KEYS`,
    :data:`PREDICTOR_KEYS`) as set in ``inference.yaml`` (a motion setting may be a ``{tuned, untuned}`` pair:
    :func:`for_appearance`)."""
    import yaml

    config = yaml.safe_load(CONFIG.read_text())
    missing = [k for k in OPTIONS if k not in config]
    if missing:
        raise KeyError(f"{CONFIG}: missing inference defaults {missing}")
    return {k: config[k] for k in OPTIONS}


def tuning_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``options`` split into the test-time tuning's (as :class:`medvos.inference.tuning.AnnotationTuning` arguments,
    ``inference.yaml``'s where not given) and the rest."""
    given = {**inference_defaults(), **{k: v for k, v in options.items() if k in TUNING_KEYS}}

    def optional(key: str) -> float | None:
        return None if given[key] is None else float(given[key])

    return ({"steps": int(given["tune_steps"] or 0), "seconds": optional("tune_seconds"),
             "learning_rate": float(given["tune_learning_rate"]),
             "backbone_lr_mult": float(given["tune_backbone_lr_mult"]),
             "scale_range": optional("tune_scale_range"), "views": int(given["tune_views"] or 0),
             "seed": int(given["tune_seed"]), "precision": str(given["tune_precision"]),
             "average": int(given["tune_average"])},
            {k: v for k, v in options.items() if k not in TUNING_KEYS})


def for_appearance(options: dict[str, Any], tuned: bool) -> dict[str, Any]:
    """``options`` with each ``{tuned: x, untuned: y}`` value (``inference.yaml``'s motion settings) resolved for an
    appearance network tuned on the cine's annotation (test-time tuning on) or not (``tune_steps`` 0, a relearned
    checkpoint); a plain value serves both."""
    out = {}
    for key, value in options.items():
        if isinstance(value, dict):
            if set(value) != {"tuned", "untuned"}:
                raise ValueError(f"inference option {key}: expected a value or {{tuned: ..., untuned: ...}}, "
                                 f"got {value}")
            value = value["tuned" if tuned else "untuned"]
        out[key] = value
    return out


def make_propagator(network: nn.Module, image_size: int, clip_length: int, tuned: bool = False,
                    prepared: bool = False, **overrides: Any) -> Any:
    """The propagator `inferring` builds with the defaults of ``inference.yaml`` (``overrides`` replace them, e.g.
    ``memory_tree=False``): :class:`MemoryTreePropagator` or :class:`FewShotPropagator` (the appearance cue),
    wrapped by :class:`MotionAwarePropagator` when ``motion`` is on (its output refined along the frames' edges);
    the network runs in ``runtime`` (PyTorch, or its per-frame path exported to ONNX Runtime:
    :func:`medvos.networks.exported.for_runtime`). ``tuned``: the
    network was tuned on the cine's annotation (:func:`for_appearance` picks the motion settings for it).
    ``prepared``: the network already runs where it should (:func:`medvos.networks.exported.for_tuned` chose); it
    is used as it is, whatever ``runtime`` says."""
    from medvos.inference.edges import EdgeRefinement
    from medvos.inference.memory_tree import MemoryTreePropagator
    from medvos.inference.motion import CueFusion, MotionAwarePropagator
    from medvos.inference.propagator import FewShotPropagator

    unknown = set(overrides) - set(KEYS)
    if unknown:
        raise ValueError(f"unknown propagation options {sorted(unknown)} (expected some of {KEYS})")
    opts = for_appearance({**inference_defaults(), **overrides}, tuned)
    from medvos.networks.exported import for_runtime

    if not prepared:
        network = for_runtime(network, str(opts["runtime"]), image_size, clip_length)
    if opts["memory_tree"]:
        prop = MemoryTreePropagator(network, image_size, clip_length, opts["threshold"], opts["fusion"],
                                    pathways=int(opts["pathways"]))
    else:
        prop = FewShotPropagator(network, image_size, clip_length, opts["threshold"], opts["fusion"])
    if not opts["motion"]:
        return prop
    rule = CueFusion(float(opts["motion_weight"]), float(opts["flow_tolerance"]), float(opts["redetect_support"]),
                     float(opts["redetect_confidence"]), int(opts["redetect_frames"]),
                     threshold=float(opts["threshold"]), anchor_weight=float(opts["anchor_weight"]),
                     anchor_agreement=float(opts["anchor_agreement"]),
                     motion_cap=float(opts["motion_cap"]), hold_below=float(opts["hold_below"]),
                     hold_frames=int(opts["hold_frames"]))
    return MotionAwarePropagator(prop, rule, EdgeRefinement(int(opts["edge_radius"])),
                                 float(opts["meeting_agreement"]), str(opts["flow_check"]), float(opts["spill_mb"]))
