#!/usr/bin/env python
"""Seconds per phase-1 training step in each ``train_precision``, measured alternately (float32, bfloat16, float32,
bfloat16, ...) so the machine's drift falls on both.

    python scripts/train_step_speed.py --image_size 256 --batch_size 8 --steps 10 --rounds 2 --out speed.json

A step is what `training`'s trainer runs per iteration: the network of ``train.yaml`` (ImageNet backbone weights as
shipped), a batch of random 1-shot episodes at ``--image_size``, the forward pass through
:class:`medvos.networks.precision.PrecisionInferer`, ``train.yaml``'s loss in float32, backward and the AdamW update.
Data loading and validation are not in it (an epoch of the shipped recipe spends about half its time there).
Prints and writes (``--out``) the median seconds per step of every round and their mean per precision.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from medvos.bundle_command import CONFIGS
from medvos.config_parsing import config_parser
from medvos.io.atomic import atomic_write_bytes
from medvos.networks.image_model import param_groups
from medvos.networks.precision import PrecisionInferer, native_bf16

TRAIN_CONFIG = CONFIGS / "train.yaml"


def step_seconds(precision: str, image_size: int, batch_size: int, steps: int, seed: int = 0) -> float:
    """Median seconds of ``steps`` training steps (after one warm-up step) in ``precision``."""
    parser = config_parser()
    parser.read_config(str(TRAIN_CONFIG))
    parser["image_size"] = image_size
    torch.manual_seed(seed)
    network, loss = parser.get_parsed_content("network_def"), parser.get_parsed_content("loss")
    network.train()
    optimizer = torch.optim.AdamW(param_groups(network, 1e-3), lr=1e-3)
    inferer = PrecisionInferer(precision)
    shots = int(parser["shots"])
    x = torch.rand(batch_size, 3 + 4 * shots, image_size, image_size)
    y = (torch.rand(batch_size, 1, image_size, image_size) > 0.5).float()
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        optimizer.zero_grad()
        loss(inferer(x, network), y).backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image_size", type=int, default=256)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rounds: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    for r in range(args.rounds):
        for precision in rounds:
            rounds[precision].append(round(step_seconds(precision, args.image_size, args.batch_size, args.steps), 4))
            print(f"round {r + 1} {precision}: {rounds[precision][-1]} s/step", flush=True)
    result = {"image_size": args.image_size, "batch_size": args.batch_size, "steps": args.steps,
              "threads": torch.get_num_threads(), "native_bf16": native_bf16("cpu"),
              "seconds_per_step": rounds, "mean": {p: round(statistics.mean(v), 4) for p, v in rounds.items()}}
    result["bf16_saves"] = round(1 - result["mean"]["bfloat16"] / result["mean"]["float32"], 3)
    print(json.dumps(result))
    if args.out:
        atomic_write_bytes(args.out, json.dumps(result, indent=1).encode())
    return result


if __name__ == "__main__":
    main()
