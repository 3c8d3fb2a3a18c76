#!/usr/bin/env python
"""Choose the motion-fusion settings on development cines: cache the network's (appearance) probabilities once,
then score a grid of :class:`medvos.inference.motion.CueFusion` settings on them (1-shot, first frame annotated,
forward pass, flow at the input size), mean Dice per set and over sets.

    python scripts/tune_motion.py --set carotid=general.json:validation:carotid_us_dev/ \
        --set cvc=general.json:validation:cvc_clinicdb/ --set synthetic=bundle/data/synthetic/datalist.json:test \
        --grid motion_weight=2,3,4 --grid flow_tolerance=4,6,8 --grid redetect_frames=1,2,3 --out tune.json

Each ``--set NAME=DATALIST:SPLIT[:ID_PREFIX]``; each ``--grid KEY=V1,V2,...`` (``CueFusion`` fields; the product is
scored). Default checkpoint: the shipped model. This is how the model card's values were chosen; the final numbers
come from ``scripts/benchmark.py --ablation`` (the full ``inferring`` path).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from medvos.data.datalist import load_datalist
from medvos.data.videos import VideoDataset, is_image_entry
from medvos.metrics import frame_scores
from medvos.flow import DenseFlow, forward_backward_error, grey_frame, warp
from medvos.inference.motion import CueFusion
from medvos.inference.propagator import FewShotPropagator, _resize
from medvos.io.atomic import atomic_write_bytes
from medvos.networks.checkpoint import SHIPPED_MODEL, input_size, load_model

SHIPPED = Path(__file__).resolve().parents[1] / "bundle" / "models" / SHIPPED_MODEL


def cache(checkpoint: Path, spec: str) -> list[dict[str, Any]]:
    """Per cine: appearance probability, grey frames and flows at the input size, labels at native size."""
    datalist, split, *prefix = spec.split(":")
    entries = [e for e in load_datalist(datalist, split) if not is_image_entry(e)
               and str(e.get("id", e["image"])).startswith(prefix[0] if prefix else "")]
    size = input_size(checkpoint, 256)[0]
    prop = FewShotPropagator(load_model(checkpoint).eval(), size, 8)
    prop.probability_dtype = np.float32
    fine, check = DenseFlow("dis", "medium"), DenseFlow("dis", "fast")
    out = []
    for item in tqdm(VideoDataset(entries), desc=spec, unit="cine"):
        frames, labels = item["image"].float(), (item["label"][:, 0].numpy() > 0).astype(np.uint8)
        small = _resize(frames, (size, size), "bilinear")
        sup = prop.supports({0: (small[0], torch.from_numpy(labels[0]))})
        prob = np.concatenate([w.probabilities[1] for w in prop.stream(prop.windows(small), sup)])
        grey = [grey_frame(f) for f in small.numpy()]
        flows = []
        for t in range(1, len(grey)):
            to = fine(grey[t - 1], grey[t])
            flows.append((to, forward_backward_error(to, check(grey[t], grey[t - 1]))))
        first = _resize(torch.from_numpy(labels[:1, None]).float(), (size, size), "nearest")[0, 0].numpy()
        out.append({"prob": prob, "flows": flows, "labels": labels, "first": first})
    return out


def score(cines: list[dict[str, Any]], rule: CueFusion) -> float:
    """Mean over cines of the mean Dice over frames 1.. of the forward motion-fused pass."""
    dice = []
    for c in cines:
        prev, streak, fused = c["first"], 0, [c["first"]]
        for t, (to, err) in enumerate(c["flows"], start=1):
            prev, _, streak = rule(c["prob"][t], np.clip(warp(prev, to), 0, 1), err, streak)
            fused.append(prev)
        up = _resize(torch.from_numpy(np.stack(fused))[:, None], c["labels"].shape[1:], "bilinear")[:, 0]
        dice.append(float(frame_scores((up.numpy() > rule.threshold).astype(np.uint8), c["labels"], [0])["dice"]
                          .mean()))
    return float(np.mean(dice))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED)
    ap.add_argument("--set", action="append", required=True, help="NAME=DATALIST:SPLIT[:ID_PREFIX] (repeatable)")
    ap.add_argument("--grid", action="append", default=[], help="KEY=V1,V2,... (CueFusion fields; repeatable)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    sets = {name: cache(args.checkpoint, spec) for name, spec in (s.split("=", 1) for s in args.set)}
    keys = [g.split("=", 1)[0] for g in args.grid]
    values = [[float(v) for v in g.split("=", 1)[1].split(",")] for g in args.grid]
    rows = []
    for combo in itertools.product(*values) if values else [()]:
        settings = {k: (int(v) if k == "redetect_frames" else v) for k, v in zip(keys, combo)}
        per_set = {name: score(cines, CueFusion(**settings)) for name, cines in sets.items()}
        rows.append({"settings": settings, "dice": per_set, "mean": float(np.mean(list(per_set.values())))})
        print(json.dumps(rows[-1]), flush=True)
    best = max(rows, key=lambda r: r["mean"])
    print("best:", json.dumps(best))
    res = {"checkpoint": str(args.checkpoint), "sets": args.set, "rows": rows, "best": best}
    if args.out:
        atomic_write_bytes(args.out, json.dumps(res, indent=1).encode())
    return res


if __name__ == "__main__":
    main()
