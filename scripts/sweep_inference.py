#!/usr/bin/env python
"""Choose `inferring` options on development cines: run the full `inferring` path (the shipped model or
``--checkpoint``) for every combination of a grid of options, 1-shot first frame, and report the mean Dice per set
and over sets (the mean of the set means, so every set counts equally).

    python scripts/sweep_inference.py --set carotid=general.json:validation:carotid_us_dev/ \
        --set cvc=general.json:validation:cvc_clinicdb/ --set synthetic=bundle/data/synthetic/datalist.json:test \
        --grid tune_steps=0,30 --grid tune_learning_rate=0.0001,0.0003 --out sweep.json

Each ``--set NAME=DATALIST:SPLIT[:ID_PREFIX]``; each ``--grid KEY=V1,V2,...`` names an option of ``inference.yaml``
(:data:`medvos.inference.defaults.OPTIONS`), or ``relearn_steps`` (test-time relearning on each cine
first, `inferring --relearn_steps`; its seconds count in ``seconds_per_cine``); the others keep their defaults. Unlike
``scripts/tune_motion.py`` nothing is cached, so any option (test-time tuning included) can be swept; the cost is
one `inferring` run per cine and combination. Results are written after every combination (``--out``), and a
rerun with the same ``--out`` skips the combinations already there.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from medvos.benchmarking.methods import model_method
from medvos.data.videos import VideoDataset, video_entries
from medvos.inference.defaults import OPTIONS
from medvos.io.atomic import atomic_write_bytes
from medvos.metrics import video_scores
from medvos.networks.checkpoint import SHIPPED_PATH

SWEEPABLE = OPTIONS + ("relearn_steps",)  # the inference options, and test-time relearning


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", required=True, help="NAME=DATALIST:SPLIT[:ID_PREFIX] (repeatable)")
    ap.add_argument("--grid", action="append", default=[], help="KEY=V1,V2,... (repeatable)")
    ap.add_argument("--checkpoint", type=Path, default=SHIPPED_PATH)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    sets = dict(s.split("=", 1) for s in args.set)
    grid: dict[str, list[Any]] = {}
    for g in args.grid:
        key, values = g.split("=", 1)
        if key not in SWEEPABLE:
            raise SystemExit(f"--grid {key}: not an inference option ({SWEEPABLE})")
        grid[key] = [yaml.safe_load(v) for v in values.split(",")]
    results = json.loads(args.out.read_text()) if args.out.is_file() else {"combinations": []}
    done = {json.dumps(c["options"], sort_keys=True) for c in results["combinations"]}
    data = {name: VideoDataset(video_entries(spec)) for name, spec in sets.items()}
    for combo in itertools.product(*grid.values()) if grid else [()]:
        options = dict(zip(grid, combo))
        if json.dumps(options, sort_keys=True) in done:
            continue
        method = model_method(args.checkpoint, **options)
        row: dict[str, Any] = {"options": options, "sets": {}}
        for name, dataset in data.items():
            videos, t0 = {}, time.perf_counter()
            for i in tqdm(range(len(dataset)), desc=f"{name} {options}", unit="cine", leave=False):
                d = dataset[i]
                labels = d["label"][:, 0].numpy()
                support = list((d.get("labeled_frames") or [0])[:1])
                pred = method(d["image"].numpy(), labels, support, d["entry"])
                videos[str(d.get("id", i))] = round(float(video_scores(pred, labels, support)["dice"]), 4)
            row["sets"][name] = {"dice": round(sum(videos.values()) / len(videos), 4), "videos": videos,
                                 "seconds_per_cine": round((time.perf_counter() - t0) / len(videos), 1)}
        row["mean"] = round(sum(s["dice"] for s in row["sets"].values()) / len(row["sets"]), 4)
        results["combinations"].append(row)
        atomic_write_bytes(args.out, json.dumps(results, indent=1).encode())
        print(json.dumps(options), {n: s["dice"] for n, s in row["sets"].items()}, "mean", row["mean"], flush=True)
    return results


if __name__ == "__main__":
    main()
