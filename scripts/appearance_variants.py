#!/usr/bin/env python
"""Score variants of the appearance cue that `inferring` could average, on cached tuned probabilities: the
mean over several test-time tunings (``--seeds``: tuning seeds) and left-right flip augmentation (``--flip``: the
mean of the cine's and its mirror's probability, query and support mirrored). Each variant goes through the default
motion fusion (as :mod:`tune_motion` replays the `inferring` path) and alone (the network thresholded at 0.5, no
motion); 1-shot first frame; per set and the mean over the sets not ``--report-only``.

    python scripts/appearance_variants.py --set carotid=general.json:validation:carotid_us_dev/ \\
        --set cvc=general.json:validation:cvc_clinicdb/ --set synthetic=bundle/data/synthetic/datalist.json:test \\
        --set cvc_test=general.json:test --report-only cvc_test --seeds 0,1,2 --flip --cache cache/ --out variants.json

The cache is :func:`tune_motion.cache`'s (one tuning per cine and seed, about 10 s on 2 cores; the mirrored pass
another). The model card's "Tried at inference in 0.20.0 and not shipped" comes from this script.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvos.inference.edges import EdgeRefinement
from medvos.inference.motion import CueFusion
from medvos.inference.propagator import _resize
from medvos.io.atomic import atomic_write_bytes
from medvos.metrics import frame_scores
from medvos.networks.checkpoint import SHIPPED_PATH
from tune_motion import cache, score


def alone(cines: list[dict[str, Any]], threshold: float = 0.5) -> list[float]:
    """Per cine, the mean Dice over frames 1.. of the appearance probability alone."""
    out = []
    for c in cines:
        up = _resize(torch.from_numpy(c["prob"][:, None]).float(), c["labels"].shape[1:], "bilinear")[:, 0].numpy()
        out.append(float(frame_scores((up > threshold).astype(np.uint8), c["labels"], [0])["dice"].mean()))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED_PATH)
    ap.add_argument("--set", action="append", required=True, help="NAME=DATALIST:SPLIT[:ID_PREFIX] (repeatable)")
    ap.add_argument("--seeds", default="0", help="tuning seeds, comma-separated (the first is the plain variant)")
    ap.add_argument("--tune-steps", type=int, help="test-time tuning steps (default: inference.yaml's)")
    ap.add_argument("--flip", action="store_true", help="also score flip augmentation (with the first seed)")
    ap.add_argument("--report-only", action="append", default=[],
                    help="a set scored but left out of the mean over sets (a test split; repeatable)")
    ap.add_argument("--cache", type=Path, help="folder keeping the tuned probabilities and flows between runs")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    steps = {} if args.tune_steps is None else {"tune_steps": args.tune_steps}
    rows: dict[str, dict[str, Any]] = {}
    for name, spec in (s.split("=", 1) for s in args.set):
        tuned = [cache(args.checkpoint, spec, {"tune_seed": s, **steps}, args.cache) for s in seeds]
        variants = {f"seed {s}": t for s, t in zip(seeds, tuned)}
        if len(seeds) > 1:
            variants[f"mean of seeds {args.seeds}"] = [{**c, "prob": np.mean([t[i]["prob"] for t in tuned], 0)}
                                                       for i, c in enumerate(tuned[0])]
        if args.flip:
            mirrored = cache(args.checkpoint, spec, {"tune_seed": seeds[0], **steps}, args.cache, mirrored=True)
            variants[f"flip, seed {seeds[0]}"] = [{**c, "prob": (c["prob"] + m["prob"]) / 2}
                                                  for c, m in zip(tuned[0], mirrored)]
        for label, cines in variants.items():
            fused, net = score(cines, CueFusion(), EdgeRefinement()), alone(cines)
            rows.setdefault(label, {})[name] = {"fused": float(np.mean(fused)), "worst": min(fused),
                                                "alone": float(np.mean(net))}
            print(name, label, json.dumps(rows[label][name]), flush=True)
    for label, per_set in rows.items():
        per_set["mean"] = float(np.mean([v["fused"] for k, v in per_set.items() if k not in args.report_only]))
        print(label, json.dumps({k: round(v["fused"] if isinstance(v, dict) else v, 4) for k, v in per_set.items()}))
    res = {"checkpoint": str(args.checkpoint), "sets": args.set, "rows": rows}
    if args.out:
        atomic_write_bytes(args.out, json.dumps(res, indent=1).encode())
    return res


if __name__ == "__main__":
    main()
