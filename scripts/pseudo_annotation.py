#!/usr/bin/env python
"""Self-annotation, scored on development cines: propagate a cine from its annotated first frame with the `inferring`
defaults, take the propagated mask of the most trusted frame in each of ``--frames`` equal stretches of the cine as
an extra annotation (trust: the frame's confidence times one minus its drift, ``confidence.csv``'s columns), and
propagate again with those frames annotated too (the predictor re-tunes on all of them and the passes between
annotated frames meet). Online adaptation in the manner of OnAVOS (Voigtlaender and Leibe, BMVC 2017), through the
product's own predictor. Dice over frames 1.. against the ground truth, first pass and second, per set and the mean
over the sets not ``--report-only``.

    python scripts/pseudo_annotation.py --set carotid=general.json:validation:carotid_us_dev/ \\
        --set cvc=general.json:validation:cvc_clinicdb/ --set synthetic=bundle/data/synthetic/datalist.json:test \\
        --set cvc_test=general.json:test --report-only cvc_test --frames 2 --out pseudo.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from medvos.data.videos import VideoDataset, video_entries
from medvos.inference.predictor import VideoPredictor
from medvos.io.atomic import atomic_write_bytes
from medvos.metrics import video_scores
from medvos.networks.checkpoint import checkpoint_clip_length, input_size, load_model
from tune_motion import SHIPPED


def trusted_frames(confidence: np.ndarray, drift: np.ndarray, labels: np.ndarray, count: int,
                   min_trust: float) -> list[int]:
    """In each of ``count`` equal stretches of frames 1.., the frame of highest trust (confidence x (1 - drift)) whose
    mask is not empty, if its trust reaches ``min_trust``."""
    trust = confidence * (1 - drift)
    picked = []
    for chunk in np.array_split(np.arange(1, len(trust)), count):
        chunk = [t for t in chunk if labels[t].any()]
        if chunk:
            best = max(chunk, key=lambda t: trust[t])
            if trust[best] >= min_trust:
                picked.append(int(best))
    return picked


def self_annotated(predictor: VideoPredictor, image: Any, first: np.ndarray, count: int, min_trust: float
                   ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The first pass's labels, the second pass's, and the frames the second took as annotated."""
    state = predictor.init_state(image)
    predictor.add_annotation(state, 0, first)
    out = list(predictor.propagate(state))
    labels = np.concatenate([w.labels for w in out])
    picked = trusted_frames(np.concatenate([w.confidence for w in out]), np.concatenate([w.drift for w in out]),
                            labels, count, min_trust)
    for t in picked:
        predictor.add_annotation(state, t, labels[t])
    second = np.concatenate([w.labels for w in predictor.propagate(state)]) if picked else labels
    return labels, second, picked


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED)
    ap.add_argument("--set", action="append", required=True, help="NAME=DATALIST:SPLIT[:ID_PREFIX] (repeatable)")
    ap.add_argument("--frames", type=int, default=2, help="frames taken as annotated (one per stretch)")
    ap.add_argument("--min-trust", type=float, default=0.0, help="a frame below this trust is not taken")
    ap.add_argument("--tune-steps", type=int, help="test-time tuning steps (default: inference.yaml's; 0: off)")
    ap.add_argument("--tune-seed", type=int, help="test-time tuning seed (default: inference.yaml's)")
    ap.add_argument("--report-only", action="append", default=[], help="a set left out of the mean (repeatable)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    clip_length = checkpoint_clip_length(args.checkpoint, 8)
    size = input_size(args.checkpoint, 256)[0]
    net = load_model(args.checkpoint, None, clip_length, None)
    net = net.to(torch.device("cuda" if torch.cuda.is_available() else "cpu")).eval()
    steps = {k: v for k, v in {"tune_steps": args.tune_steps, "tune_seed": args.tune_seed}.items() if v is not None}
    predictor = VideoPredictor.with_defaults(net, size, clip_length, **steps)
    sets: dict[str, Any] = {}
    for name, spec in (s.split("=", 1) for s in args.set):
        dataset, videos, t0 = VideoDataset(video_entries(spec)), {}, time.perf_counter()
        for i in tqdm(range(len(dataset)), desc=name, unit="cine", leave=False):
            d = dataset[i]
            truth = d["label"][:, 0].numpy().astype(np.uint8)
            first, second, picked = self_annotated(predictor, d["entry"]["image"], truth[0], args.frames,
                                                   args.min_trust)
            assert all(np.array_equal(second[t], first[t]) for t in picked)  # taken as given
            videos[str(d.get("id", i))] = {"first": video_scores(first, truth, [0])["dice"],
                                           "second": video_scores(second, truth, [0])["dice"], "picked": picked}
        sets[name] = {k: float(np.mean([v[k] for v in videos.values()])) for k in ("first", "second")}
        sets[name].update(videos=videos, seconds_per_cine=(time.perf_counter() - t0) / len(videos))
        print(name, {k: round(sets[name][k], 4) for k in ("first", "second")}, flush=True)
    dev = [s for n, s in sets.items() if n not in args.report_only]
    mean = {k: float(np.mean([s[k] for s in dev])) for k in ("first", "second")} if dev else {}
    print("development mean", {k: round(v, 4) for k, v in mean.items()})
    res = {"checkpoint": str(args.checkpoint), "tuning": steps, "frames": args.frames, "min_trust": args.min_trust, "sets": sets,
           "mean": mean}
    if args.out:
        atomic_write_bytes(args.out, json.dumps(res, indent=1).encode())
    return res


if __name__ == "__main__":
    main()
