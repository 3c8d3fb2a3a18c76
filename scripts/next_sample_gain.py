#!/usr/bin/env python
"""What the MONAI Label app's *Next Sample* is worth: on development cines with a mask on every frame, propagate from
the first frame as the app does (its options, :data:`medvos.monai_label.infer.APP_OPTIONS`: a short test-time tuning
since 0.17.0, none before; ``--grid tune_steps=...`` to change it), ask
:func:`medvos.monai_label.strategy.next_frame` which frame to annotate next, give it that frame's true mask (the
annotator's correction) and propagate again from both frames. Reports per set the mean Dice before and after the
correction and the Dice the picked frame had before it, for the app's rule and for reference picks:

- ``rule``: the app's strategy (:func:`~medvos.monai_label.strategy.next_frame`: the frame whose annotation stands
  to correct the most, far from the annotated frames and where appearance and motion disagree);
- ``drift_only`` / ``distance_only``: that gain weighted by the drift alone / by distance alone (the middle of the
  longest stretch without an annotation);
- ``drift_onset``: where the drift starts (0.4.0-0.13.0's rule, its onset measured against the cine's own level);
  ``absolute_onset``: the same with one fixed onset for every cine (as 0.4.0-0.13.0 had it);
- ``confidence``: the least confident frame;
- ``middle``: the middle frame (what an annotator might pick unaided);
- ``worst``: the frame with the lowest Dice (an oracle: it needs the answer).

    python scripts/next_sample_gain.py --set carotid=general.json:validation:carotid_us_dev/ \
        --set cvc=general.json:validation:cvc_clinicdb/ --set synthetic=bundle/data/synthetic/datalist.json:test \
        --out next_sample.json

Each propagation is the full `inferring` path; picks that name the same frame share one run. Cines of fewer than 3
frames are skipped (nothing is left to score).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from medvos.data.videos import VideoDataset, video_entries
from medvos.inference.defaults import OPTIONS
from medvos.inference.predictor import VideoPredictor
from medvos.inference.workflow import run_inference
from medvos.io.atomic import atomic_write_bytes
from medvos.metrics import video_scores
from medvos.monai_label.infer import APP_OPTIONS
from medvos.monai_label.strategy import DISTANCE_PRIOR, correction_gain, frame_error, next_frame
from medvos.networks.checkpoint import SHIPPED_PATH, checkpoint_clip_length, input_size, load_model


Pick = Callable[[list[float], list[float], list[float], set[int]], int]
PICKS: dict[str, Pick] = {
    "rule": lambda conf, drift, dice, done: next_frame(conf, drift, done)[0],
    "drift_only": lambda conf, drift, dice, done: int(correction_gain(frame_error(conf, drift, prior=0.0),
                                                                      done).argmax()),
    "distance_only": lambda conf, drift, dice, done: int(correction_gain([1.0] * len(conf), done).argmax()),
    "drift_onset": lambda conf, drift, dice, done: next_frame(conf, drift, done, mode="drift_onset")[0],
    "absolute_onset": lambda conf, drift, dice, done: next_frame(conf, drift, done, mode="drift_onset",
                                                                 relative=False)[0],
    "confidence": lambda conf, drift, dice, done: next_frame(conf, drift, done, mode="confidence")[0],
    "middle": lambda conf, drift, dice, done: len(conf) // 2,
    "worst": lambda conf, drift, dice, done: min((t for t in range(len(dice)) if t not in done),
                                                 key=dice.__getitem__),
}


def mean(values: Iterable[float]) -> float:
    """The mean, rounded as the results file stores figures."""
    return round(float(np.mean(list(values))), 4)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", required=True, help="NAME=DATALIST:SPLIT[:ID_PREFIX] (repeatable)")
    ap.add_argument("--grid", action="append", default=[], help="KEY=VALUE: an inference option other than the app's")
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED_PATH)
    ap.add_argument("--picks", default=",".join(PICKS), help=f"which picks to score (of {', '.join(PICKS)})")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    unknown = set(args.picks.split(",")) - set(PICKS)
    if unknown:
        raise SystemExit(f"--picks {sorted(unknown)}: not a pick ({', '.join(PICKS)})")
    picks = {k: PICKS[k] for k in args.picks.split(",")}
    options = dict(APP_OPTIONS)
    for g in args.grid:
        key, value = g.split("=", 1)
        if key not in OPTIONS:
            raise SystemExit(f"--grid {key}: not an inference option ({OPTIONS})")
        options[key] = yaml.safe_load(value)
    size, clip = input_size(args.checkpoint, 256)[0], checkpoint_clip_length(args.checkpoint, 8)
    net = load_model(args.checkpoint, None, clip, None).eval()
    predictor = VideoPredictor.with_defaults(net, size, clip, **options)

    def propagate(entry: dict[str, Any], frames: list[int]) -> dict[str, Any]:
        return run_inference(entry["image"], entry["label"], Path("."), net, size, clip, outputs=(),
                             annotated=frames, progress=False, keep_labels=True, predictor=predictor)

    out: dict[str, Any] = {"options": options, "distance_prior": DISTANCE_PRIOR, "sets": {}}
    for name, spec in (s.split("=", 1) for s in args.set):
        data, rows = VideoDataset(video_entries(spec)), {}
        for i in tqdm(range(len(data)), desc=name, unit="cine"):
            d = data[i]
            gt = d["label"][:, 0].numpy()
            if len(gt) < 3:  # no frame is left to score once two are annotated
                continue
            t0 = time.perf_counter()
            first = propagate(d["entry"], [0])
            seconds = time.perf_counter() - t0
            scores = video_scores(first["labels"], gt, [0])
            dice = [1.0] + [float(x) for x in scores["frame_dice"]]  # frame 0 is the annotation
            conf, drift = [float(c) for c in first["confidence"]], [float(x) for x in first["drift"]]
            row: dict[str, Any] = {"frames": len(gt), "before": round(scores["dice"], 4), "seconds": round(seconds, 1),
                                   "drift": [round(x, 3) for x in drift], "picks": {}}
            after: dict[int, float] = {}
            for pick_name, pick in picks.items():
                t = int(pick(conf, drift, dice, {0}))
                if t not in after:  # Dice over the frames neither annotation covers
                    res = propagate(d["entry"], [0, t])
                    after[t] = float(video_scores(res["labels"], gt, [0, t])["dice"])
                rest = [x for k, x in enumerate(dice) if k not in (0, t)]
                row["picks"][pick_name] = {"frame": t, "dice_at_frame": round(dice[t], 4),
                                           "before_on_rest": round(float(np.mean(rest)), 4),
                                           "after": round(after[t], 4)}
            rows[str(d.get("id", i))] = row
        summary = {p: {"after": mean(r["picks"][p]["after"] for r in rows.values()),
                       "gain": mean(r["picks"][p]["after"] - r["picks"][p]["before_on_rest"] for r in rows.values()),
                       "dice_at_frame": mean(r["picks"][p]["dice_at_frame"] for r in rows.values())}
                   for p in picks}
        out["sets"][name] = {"before": mean(r["before"] for r in rows.values()),
                             "picks": summary, "cines": rows}
        print(name, "before", out["sets"][name]["before"], json.dumps(summary), flush=True)
        atomic_write_bytes(args.out, json.dumps(out, indent=1).encode())
    return out


if __name__ == "__main__":
    main()
