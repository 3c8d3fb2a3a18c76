#!/usr/bin/env python
"""Phase-2 ablation (the paper's Table 3 on your data): no relearning / without L_t / without L_f / without L_p /
full, and any relearning option, evaluated 1-shot (first labelled frame) on a datalist split.

    python scripts/relearn_ablation.py --datalist /data/cvc/datalist.json --phase1-checkpoint bundle/models/model.pt \
        --relearn-splits training,test --eval-split test --image-size 256 --max-epochs 2 --out bundle/eval/ablation

Each variant runs the bundle's `relearning` workflow (train.yaml + relearn.yaml) from the same phase-1 checkpoint,
logging to one MLflow store (``<out>/mlruns.db``); the model after the last epoch is evaluated (not the best by
validation Dice: a collapse must show). Writes ``results.json`` and ``table.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from medvos.data.datalist import load_datalist
from medvos.data.videos import VideoDataset
from medvos.bundle_command import bundle_command
from medvos.benchmarking.evaluation import evaluate_methods
from medvos.benchmarking.methods import model_method
from medvos.io.atomic import atomic_write_bytes

REPO = Path(__file__).resolve().parents[1]
NO_OPTIONS = {"tps_weight": 0.0, "tcr_weight": 0.0, "divergence_weight": 0.0}
# "full" and the "without" rows use relearn.yaml's defaults (TPS on); "L only" and "L + ..." fix every option, so
# the development-split comparison of the options reproduces whatever the defaults are.
VARIANTS = {
    "full": {},
    "without L_t": {"lambda_t": 0.0},
    "without L_f": {"lambda_f": 0.0},
    "without L_p": {"lambda_p": 0.0},
    "L only": NO_OPTIONS,
    "L + TAU divergence": {**NO_OPTIONS, "divergence_weight": 0.1},
    "L + TCR": {**NO_OPTIONS, "tcr_weight": 1.0},
    "L + TPS": {**NO_OPTIONS, "tps_weight": 0.1},
}


def relearn(name: str, overrides: dict, args: argparse.Namespace) -> tuple[Path, float]:
    out = args.out / name.replace(" ", "_").replace("+", "plus")
    l1, l2, l3 = (float(v) for v in args.lambdas.split(","))
    cmd = bundle_command(
        "relearning", ["train.yaml", "relearn.yaml"], datalist=args.datalist,
        phase1_checkpoint=args.phase1_checkpoint, relearn_splits=args.relearn_splits.split(","),
        image_size=args.image_size, max_epochs=args.max_epochs, clip_length=args.clip_length,
        learning_rate=args.learning_rate, val_interval=args.max_epochs + 1, output_dir=out / "eval",
        ckpt_dir=out / "models", tracking_uri=f"sqlite:///{(args.out / 'mlruns.db').resolve()}",
        run_name=f"ablation: {name}", **{"lambda_t": l1, "lambda_f": l2, "lambda_p": l3, **overrides})
    t0 = time.time()
    log = out / "relearn.log"
    out.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"relearning '{name}' failed, see {log}")
    return out / "models" / f"phase2_resume_checkpoint_epoch={args.max_epochs}.pt", time.time() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datalist", type=Path, required=True)
    ap.add_argument("--phase1-checkpoint", type=Path, required=True)
    ap.add_argument("--relearn-splits", default="training,test")
    ap.add_argument("--eval-split", default="test")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--max-epochs", type=int, default=2)
    ap.add_argument("--clip-length", type=int, default=8)
    ap.add_argument("--learning-rate", type=float, default=1e-4)
    ap.add_argument("--variants", default="full,without L_t,without L_f,without L_p",
                    help=f"comma-separated subset of: {', '.join(VARIANTS)}")
    ap.add_argument("--lambdas", default="0.1,1,1", help="base l1,l2,l3 (the 'without' variants zero one of them)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoints = {"no relearning (phase 1)": (args.phase1_checkpoint, 0.0)}
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        print(f"relearning: {name}", flush=True)
        checkpoints[name] = relearn(name, VARIANTS[name], args)
    dataset = VideoDataset(load_datalist(args.datalist, args.eval_split))
    methods = {name: model_method(ckpt, args.image_size, args.clip_length, memory_tree=False)
               for name, (ckpt, _) in checkpoints.items()}
    results = evaluate_methods(dataset, methods)
    results["relearn_seconds"] = {k: v[1] for k, v in checkpoints.items()}
    results["settings"] = {k: str(v) for k, v in vars(args).items()}
    base = results["overall"]["no relearning (phase 1)"]["dice"]
    lines = ["| variant | Dice | IoU | Δ Dice vs phase 1 | relearning time (s) |", "|---|---|---|---|---|"]
    for name, o in results["overall"].items():
        lines.append(f"| {name} | {o['dice']:.4f} | {o['iou']:.4f} | {o['dice'] - base:+.4f} | "
                     f"{results['relearn_seconds'][name]:.0f} |")
    table = "\n".join(lines)
    atomic_write_bytes(args.out / "results.json", json.dumps(results, indent=1).encode())
    atomic_write_bytes(args.out / "table.md", (table + "\n").encode())
    print(table)
    return results


if __name__ == "__main__":
    main()
