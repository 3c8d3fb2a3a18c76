#!/usr/bin/env python
"""Per-target held-out 1-shot image Dice: a (general) model vs models trained on one target alone.

    python scripts/per_target.py --datalist general.json --checkpoint bundle/models/general.pt \\
        --baselines --episodes 1840 --epochs 2 --out bundle/eval/per_target

Scores ``--checkpoint`` on the held-out image items of ``--datalist``'s validation split (one item per target:
every held-out image a query once, its support a fixed image of the same target from another patient; see
``medvos.data.videos.image_episodes``). With ``--baselines`` it first trains, per target, the same network on that
target's training images alone with the `training` workflow (``--episodes`` episodes in ``--epochs`` epochs at the
checkpoint's input size; best epoch on that target's held-out images, which favours the baseline) and scores it the
same way. Writes ``results.json`` and ``table.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

import torch

from medvos.data.datalist import load_datalist, write_datalist
from medvos.data.videos import VideoDataset, is_image_entry
from medvos.engines.video_evaluator import VideoEvaluator
from medvos.bundle_command import bundle_command
from medvos.io.atomic import atomic_write_bytes
from medvos.networks.checkpoint import input_size, load_model


def score(checkpoint: Path, entries: list[dict]) -> dict[str, float]:
    """Mean held-out 1-shot Dice per target."""
    net = load_model(checkpoint).eval()
    size = input_size(checkpoint)
    ev = VideoEvaluator("cpu", [], net, image_size=size)
    return {item["id"]: ev._image_iteration(item)["dice"] for item in VideoDataset(entries, image_size=size).targets}


def train_baseline(target: str, train: list[dict], val: list[dict], size: int, episodes: int, epochs: int,
                   out: Path) -> Path:
    """The `training` workflow on one target's images -> its best ``model.pt``."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", target)
    work = out / "baselines" / slug
    model = work / "models" / "model.pt"
    if model.is_file() and (work / "done").is_file():
        return model  # resumable: a finished baseline is kept
    datalist = write_datalist(work / "datalist.json", {"training": train, "validation": val})
    cmd = bundle_command("training", ["train.yaml"], datalist=datalist, image_size=size, max_epochs=epochs,
                         episodes_per_epoch=-(-episodes // epochs), ckpt_dir=work / "models", output_dir=work / "eval",
                         run_name=f"single-target-{slug}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"baseline {target} failed:\n{proc.stderr[-3000:]}")
    (work / "done").write_text("ok\n")
    return model


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datalist", type=Path, required=True)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--baselines", action="store_true", help="also train and score one model per target")
    ap.add_argument("--targets", default="", help="comma-separated targets to train baselines for (default: all)")
    ap.add_argument("--episodes", type=int, default=1840, help="training episodes per baseline")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    val = [e for e in load_datalist(args.datalist, "validation") if is_image_entry(e)]
    train = [e for e in load_datalist(args.datalist, "training") if is_image_entry(e)]
    targets = sorted({e["group"] for e in val})
    chosen = [t for t in targets if not args.targets or t in {s.strip() for s in args.targets.split(",")}]
    results = {"general": score(args.checkpoint, val), "baseline": {}, "settings": {k: str(v) for k, v in vars(args).items()}}
    size = input_size(args.checkpoint)[0]
    if args.baselines:
        for t in chosen:
            tv = [e for e in val if e["group"] == t]
            model = train_baseline(t, [e for e in train if e["group"] == t], tv, size, args.episodes, args.epochs,
                                   args.out)
            results["baseline"][t] = score(model, tv)[t]
            print(f"{t}: general {results['general'][t]:.3f}, alone {results['baseline'][t]:.3f}", flush=True)
    lines = ["| target | held-out images | general model Dice | trained on this target alone | difference |",
             "|---|---|---|---|---|"]
    counts = {t: sum(e["group"] == t for e in val) for t in targets}
    for t in targets:
        g, b = results["general"][t], results["baseline"].get(t)
        tail = f"{b:.3f} | {g - b:+.3f}" if b is not None else "- | -"
        lines.append(f"| {t} | {counts[t]} | {g:.3f} | {tail} |")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out / "results.json", json.dumps(results, indent=1).encode())
    atomic_write_bytes(args.out / "table.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
