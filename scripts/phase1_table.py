#!/usr/bin/env python
"""Phase-1 result table: the image model vs copy-mask and optical-flow propagation, 1-shot, on a datalist split.

    python scripts/phase1_table.py --datalist DATALIST.json --split test --checkpoint bundle/models/model.pt \
        --image-size 256 --out bundle/eval/phase1_table

Writes ``results.json``, ``table.md`` and ``dice_per_frame_<video>.png`` (one line per method) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from medvos.data.datalist import load_datalist
from medvos.data.videos import VideoDataset
from medvos.engines.handlers import plot_dice_per_frame
from medvos.inference.baselines import FlowPropagator, copy_mask
from medvos.inference.evaluation import evaluate_methods, markdown_table
from medvos.inference.propagator import FewShotPropagator
from medvos.io.atomic import atomic_write_bytes
from medvos.networks.checkpoint import load_weights
from medvos.networks.image_model import FewShotSegNet


def model_method(checkpoint: Path, image_size: int, window: int, channels: int, backbone: str):  # noqa: ANN201
    net = load_weights(FewShotSegNet(backbone=backbone, backbone_weights=None, channels=channels), checkpoint).eval()
    prop = FewShotPropagator(net, image_size, window)

    def run(frames, labels, support):  # noqa: ANN001, ANN202
        return prop.propagate(torch.from_numpy(frames), torch.from_numpy(labels), support)[0]

    return run


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datalist", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--flow", default="dis", choices=["dis", "farneback"])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    dataset = VideoDataset(load_datalist(args.datalist, args.split))
    flow = FlowPropagator(args.flow)
    methods = {
        "copy-mask": lambda f, lab, s: copy_mask(lab, s),
        f"optical-flow ({args.flow})": flow.propagate,
        "phase-1 model": model_method(args.checkpoint, args.image_size, args.window, args.channels, args.backbone),
    }
    results = evaluate_methods(dataset, methods)
    results["settings"] = {k: str(v) for k, v in vars(args).items()}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out / "results.json", json.dumps(results, indent=1).encode())
    table = markdown_table(results)
    atomic_write_bytes(args.out / "table.md", (table + "\n").encode())
    for v in results["videos"]:
        plot_dice_per_frame({m: (v[m]["frame"], v[m]["frame_dice"]) for m in methods},
                            args.out / f"dice_per_frame_{v['id']}.png", f"{v['id']}: Dice per frame")
    print(table)
    return results


if __name__ == "__main__":
    main()
