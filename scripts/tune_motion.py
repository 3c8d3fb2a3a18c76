#!/usr/bin/env python
"""Choose the motion-fusion settings on development cines: cache the appearance probabilities once (the
`inferring` predictor's network, tuned on the first frame as `inferring` tunes it), then score a grid of
:class:`medvos.inference.motion.CueFusion` settings on them (1-shot, first frame annotated, forward pass, flow at the
input size): mean and worst Dice per set, and the mean over sets (per cine in ``--out``).

    python scripts/tune_motion.py --set carotid=general.json:validation:carotid_us_dev/ \
        --set cvc=general.json:validation:cvc_clinicdb/ --set synthetic=bundle/data/synthetic/datalist.json:test \
        --grid motion_weight=2,3,4 --grid flow_tolerance=4,6,8 --grid redetect_frames=1,3 \
        --cache cache/ --out tune.json

Each ``--set NAME=DATALIST:SPLIT[:ID_PREFIX]``; each ``--grid KEY=V1,V2,...`` (``CueFusion`` fields and
``edge_radius``; the product is scored; what is not in the grid takes ``CueFusion``'s and ``EdgeRefinement``'s
defaults, which are ``inference.yaml``'s for a tuned network). Test-time tuning as ``inference.yaml`` sets it
unless ``--tune-steps`` / ``--tune-learning-rate`` / ``--tune-seed`` / ``--tune-views`` say otherwise
(``--tune-steps 0``: the untuned network).
``--cache DIR`` keeps each set's appearance and flows, so a rerun with another grid skips the network (the tuning
costs about 10 s per cine on 2 cores). Default checkpoint: the shipped model. One pass: `inferring`'s
self-annotation (its second pass, since 0.22.0) is not replayed. The final numbers come from ``scripts/benchmark.py``
or ``scripts/sweep_inference.py`` (the full ``inferring`` path).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from medvos.data.videos import VideoDataset, video_entries
from medvos.flow import DenseFlow, forward_backward_error, grey_frame, warp
from medvos.inference.defaults import inference_defaults, tuning_options
from medvos.inference.edges import EdgeRefinement
from medvos.inference.motion import CueFusion, Streak
from medvos.inference.predictor import VideoPredictor
from medvos.inference.propagator import _resize
from medvos.io.atomic import atomic_write_bytes
from medvos.io.result_set import sha256_file
from medvos.metrics import frame_scores
from medvos.networks.checkpoint import SHIPPED_PATH, checkpoint_clip_length, input_size, load_model

CACHE_VERSION = 2  # 2: grey frames and the flows from the annotated frame (the annotation cue, edge refinement)


def cache(checkpoint: Path, spec: str, tuning: dict[str, Any], store: Path | None = None,
          mirrored: bool = False) -> list[dict[str, Any]]:
    """Per cine of ``spec``: the appearance probability, the grey frames, the flows from each frame to the next and
    from the annotated first frame to each (with their forward-backward errors) at the input size (frames as the
    predictor prepares them), the labels at native size and the first frame's at the input size. ``tuning``:
    ``tune_*`` options of the predictor. ``mirrored``: only the id and the probability of the left-right mirrored cine
    (query and support mirrored, the probability mirrored back). Read from / written to ``store`` when given."""
    check_preset = str(inference_defaults()["flow_check"])  # the warp's reverse check, as MotionAwarePropagator's
    key = json.dumps({"checkpoint": sha256_file(checkpoint), "spec": spec, "tuning": tuning_options(tuning)[0],
                      "cache": CACHE_VERSION, "flow_check": check_preset,
                      **({"mirrored": True} if mirrored else {})}, sort_keys=True)
    path = store / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pkl" if store else None
    if path is not None and path.is_file():
        return pickle.loads(path.read_bytes())
    size, clip = input_size(checkpoint, 256)[0], checkpoint_clip_length(checkpoint, 8)
    predictor = VideoPredictor.with_defaults(load_model(checkpoint).eval(), size, clip, motion=False,
                                             memory_tree=False, runtime="torch", **tuning)
    fine, check = DenseFlow("dis", "medium"), DenseFlow("dis", check_preset)
    out = []
    for item in tqdm(VideoDataset(video_entries(spec)), desc=spec, unit="cine"):
        labels = (item["label"][:, 0].numpy() > 0).astype(np.uint8)
        state = predictor.init_state(item["entry"]["image"])
        predictor.add_annotation(state, 0, labels[0])
        prop = predictor.tune(predictor, state) if predictor.tune is not None else state.strategy
        prop.probability_dtype = np.float32
        frames = torch.from_numpy(predictor.prepare(state, state.cine.frames[0 : state.cine.num_frames]))
        small = _resize(frames.float(), (size, size), "bilinear")
        first = _resize(torch.from_numpy(labels[:1, None]).float(), (size, size), "nearest")[0, 0]
        if mirrored:
            sup = prop.supports({0: (small[0].flip(-1), first.flip(-1).to(torch.uint8))})
            prob = np.concatenate([w.probabilities[1] for w in prop.stream(prop.windows(small.flip(-1)), sup)])
            out.append({"id": str(item["entry"].get("id")), "prob": np.ascontiguousarray(prob[..., ::-1])})
            continue
        sup = prop.supports({0: (small[0], first.to(torch.uint8))})
        prob = np.concatenate([w.probabilities[1] for w in prop.stream(prop.windows(small), sup)])
        grey = [grey_frame(f) for f in small.numpy()]
        flows, anchor_flows = [], []
        for t in range(1, len(grey)):
            to = fine(grey[t - 1], grey[t])
            flows.append((to, forward_backward_error(to, check(grey[t], grey[t - 1]))))
            if t > 1:  # next to the annotation both flows are one (as MotionAwarePropagator._step does)
                to = fine(grey[0], grey[t])
                anchor_flows.append((to, forward_backward_error(to, check(grey[t], grey[0]))))
            else:
                anchor_flows.append(flows[-1])
        out.append({"id": str(item["entry"].get("id")), "prob": prob, "flows": flows, "anchor_flows": anchor_flows,
                    "grey": np.stack(grey), "labels": labels, "first": first.numpy()})
    if path is not None:
        atomic_write_bytes(path, pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))
    return out


def score(cines: list[dict[str, Any]], rule: CueFusion, refine: EdgeRefinement) -> list[float]:
    """Per cine, the mean Dice over frames 1.. of the forward motion-fused pass, its output refined by ``refine``."""
    dice = []
    for c in cines:
        prev, streak, fused = c["first"], Streak(), [c["first"]]
        first = c["first"].astype(np.float32)
        for t, ((to, err), (to0, err0)) in enumerate(zip(c["flows"], c["anchor_flows"]), start=1):
            anchor = np.clip(warp(first, to0), 0, 1) if rule.anchor_weight > 0 else None
            prev, _, streak = rule(c["prob"][t], np.clip(warp(prev, to), 0, 1), err, streak, anchor, err0)
            fused.append(refine(c["grey"][t], prev))
        up = _resize(torch.from_numpy(np.stack(fused))[:, None], c["labels"].shape[1:], "bilinear")[:, 0]
        dice.append(float(frame_scores((up.numpy() > rule.threshold).astype(np.uint8), c["labels"], [0])["dice"]
                          .mean()))
    return dice


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED_PATH)
    ap.add_argument("--set", action="append", required=True, help="NAME=DATALIST:SPLIT[:ID_PREFIX] (repeatable)")
    ap.add_argument("--grid", action="append", default=[], help="KEY=V1,V2,... (CueFusion fields; repeatable)")
    ap.add_argument("--tune-steps", type=int, help="test-time tuning steps (default: inference.yaml's; 0: off)")
    ap.add_argument("--tune-learning-rate", type=float, help="test-time tuning learning rate (inference.yaml's)")
    ap.add_argument("--tune-seed", type=int, help="test-time tuning seed (inference.yaml's)")
    ap.add_argument("--tune-views", type=int, help="test-time tuning bank of views (inference.yaml's; 0: fresh views)")
    ap.add_argument("--cache", type=Path, help="folder keeping each set's appearance and flows between runs")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    tuning = {k: v for k, v in {"tune_steps": args.tune_steps, "tune_learning_rate": args.tune_learning_rate,
                                "tune_seed": args.tune_seed, "tune_views": args.tune_views}.items() if v is not None}
    sets = {name: cache(args.checkpoint, spec, tuning, args.cache)
            for name, spec in (s.split("=", 1) for s in args.set)}
    keys = [g.split("=", 1)[0] for g in args.grid]
    values = [[float(v) for v in g.split("=", 1)[1].split(",")] for g in args.grid]
    rows = []
    for combo in itertools.product(*values) if values else [()]:
        settings = {k: (int(v) if k in ("redetect_frames", "hold_frames", "edge_radius") else v)
                    for k, v in zip(keys, combo)}
        fusion = {k: v for k, v in settings.items() if k != "edge_radius"}
        refine = EdgeRefinement(settings["edge_radius"]) if "edge_radius" in settings else EdgeRefinement()
        per_cine = {name: score(cines, CueFusion(**fusion), refine) for name, cines in sets.items()}
        per_set = {name: float(np.mean(d)) for name, d in per_cine.items()}
        rows.append({"settings": settings, "dice": per_set, "worst": {name: min(d) for name, d in per_cine.items()},
                     "mean": float(np.mean(list(per_set.values()))),
                     "videos": {name: {c["id"]: round(d, 4) for c, d in zip(sets[name], per_cine[name])}
                                for name in sets}})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "videos"}), flush=True)
    best = max(rows, key=lambda r: r["mean"])
    print("best:", json.dumps(best))
    res = {"checkpoint": str(args.checkpoint), "sets": args.set, "tuning": tuning, "rows": rows, "best": best}
    if args.out:
        atomic_write_bytes(args.out, json.dumps(res, indent=1).encode())
    return res


if __name__ == "__main__":
    main()
