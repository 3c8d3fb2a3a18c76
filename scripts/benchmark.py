#!/usr/bin/env python
"""Benchmark every propagation method on the same videos and support frames (1-shot: first labelled frame).

    python scripts/benchmark.py --datalist DATALIST.json --split test --out bundle/eval/benchmark   # shipped model
    python scripts/benchmark.py --datalist DATALIST.json --split test \
        --phase1 bundle/models/model.pt --relearned bundle/models/relearned.pt --out bundle/eval/benchmark

Methods: copy-support-mask, optical flow (DIS; ``--flow farneback``), and every checkpoint (``--phase1``,
``--relearned``, ``--model NAME=PATH``; default: the shipped general model) run exactly as the `inferring` workflow
runs it: the same code on the entry's files, the network, input size and clip length (|B|) from the checkpoint, the
memory tree, motion fusion, test-time tuning and threshold from ``inference.yaml`` (``--tune-steps N`` overrides the
tuning). ``--tree-variants`` adds each checkpoint with the memory tree switched the other way; ``--tune-variants``
with test-time tuning switched the other way; ``--ablation`` with the other three combinations of motion and memory
tree;
``--relearn-steps N`` adds each phase-1 checkpoint with test-time relearning (N steps on each
cine, as `inferring --relearn_steps N`). ``--methods`` picks a subset by name.

Each method runs in its own process, so its peak resident memory (``ru_maxrss``) is its own; frames per second
count the propagated frames (support frames excluded) over the method's own time on the already-loaded video.
Writes ``results.json``, ``table.md`` and ``plots/<video>.png`` (Dice per frame, one line per method).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from medvos.data.datalist import load_datalist
from medvos.data.videos import VideoDataset, is_image_entry
from medvos.engines.handlers import plot_dice_per_frame
from medvos.benchmarking.evaluation import evaluate_methods, machine_info, markdown_table
from medvos.benchmarking.methods import Method, copy_method, flow_method, model_method
from medvos.io.atomic import atomic_write_bytes
from medvos.inference.defaults import inference_defaults
from medvos.inference.tuning import AnnotationTuning
from medvos.networks.checkpoint import SHIPPED_PATH, is_relearned

TUNED = AnnotationTuning().steps  # the tuned variant where the defaults do not tune


def method_specs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Name -> how to build it (kept as plain data so a child process can rebuild it)."""
    specs: dict[str, dict[str, Any]] = {"copy-mask": {"kind": "copy"},
                                        f"optical flow ({args.flow})": {"kind": "flow", "flow": args.flow}}
    models = ([("phase-1 model", args.phase1)] if args.phase1 else []) + \
             ([("relearned model", args.relearned)] if args.relearned else []) + \
             [tuple(m.split("=", 1)) for m in args.model]
    if not models:
        models = [("general model", SHIPPED_PATH)]
    defaults = inference_defaults()
    tree = bool(defaults["memory_tree"])
    for name, path in models:
        specs[name] = {"kind": "model", "checkpoint": str(path)}
        if args.relearn_steps and not is_relearned(path):
            specs[f"{name} + test-time relearning"] = {"kind": "model", "checkpoint": str(path),
                                                       "relearn_steps": args.relearn_steps}
        if args.tune_variants and not is_relearned(path):
            steps = int(defaults["tune_steps"] or 0)
            label = f"{name}, no test-time tuning" if steps else f"{name} + test-time tuning ({TUNED} steps)"
            specs[label] = {"kind": "model", "checkpoint": str(path), "tune_steps": 0 if steps else TUNED}
        if args.tree_variants:
            other = f"{name}, single path" if tree else f"{name} + memory tree"
            specs[other] = {"kind": "model", "checkpoint": str(path), "memory_tree": not tree}
        if args.runtime_variants:
            from medvos.networks.exported import RUNTIMES

            for runtime in RUNTIMES:
                if runtime != defaults["runtime"]:
                    specs[f"{name} [{runtime}]"] = {"kind": "model", "checkpoint": str(path), "runtime": runtime}
        if args.ablation:
            for motion, memory_tree in ((False, False), (False, True), (True, False), (True, True)):
                if (motion, memory_tree) != (bool(defaults["motion"]), tree):
                    label = "appearance" + (" + memory tree" if memory_tree else "") + (" + motion" if motion else "")
                    specs[f"{name}, {label}"] = {"kind": "model", "checkpoint": str(path), "motion": motion,
                                                 "memory_tree": memory_tree}
    if args.methods:
        wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = set(wanted) - set(specs)
        if unknown:
            raise SystemExit(f"unknown methods {sorted(unknown)}; available: {sorted(specs)}")
        specs = {k: v for k, v in specs.items() if k in wanted}
    return specs


def build(spec: dict[str, Any], args: argparse.Namespace) -> Method:
    if spec["kind"] == "copy":
        return copy_method()
    if spec["kind"] == "flow":
        return flow_method(spec["flow"])
    options = {k: spec[k] for k in ("memory_tree", "motion", "runtime", "tune_steps") if k in spec}
    if args.tune_steps is not None:
        options.setdefault("tune_steps", args.tune_steps)
    return model_method(spec["checkpoint"], args.image_size, args.clip_length, args.tau_hidden,
                        spec.get("relearn_steps", 0), **options)


def run_one(name: str, args: argparse.Namespace, out: Path) -> None:
    """Child process: one method over the dataset -> ``out`` (JSON with its peak RSS)."""
    spec = method_specs(args)[name]
    dataset = VideoDataset(videos(args))
    results = evaluate_methods(dataset, {name: build(spec, args)}, progress=False)
    results["overall"][name]["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    atomic_write_bytes(out, json.dumps(results).encode())


def videos(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The video entries of the split (image entries left out), optionally only ids starting with ``--subset``."""
    entries = [e for e in load_datalist(args.datalist, args.split) if not is_image_entry(e)]
    if args.subset:
        entries = [e for e in entries if str(e["id"]).startswith(args.subset)]
    if not entries:
        raise SystemExit(f"{args.datalist}: no video in split {args.split!r}"
                         + (f" with an id starting {args.subset!r}" if args.subset else ""))
    return entries


def merge(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    names = list(parts)
    first = parts[names[0]]
    videos = [{k: v for k, v in row.items() if k not in names} for row in first["videos"]]
    for name in names:
        for row, part_row in zip(videos, parts[name]["videos"]):
            row[name] = part_row[name]
    return {"videos": videos, "overall": {n: parts[n]["overall"][n] for n in names}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datalist", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--subset", default="", help="only videos whose id starts with this (e.g. carotid_us_dev/)")
    ap.add_argument("--phase1", type=Path, help="phase-1 checkpoint (model.pt)")
    ap.add_argument("--relearned", type=Path, help="relearned checkpoint (relearned.pt)")
    ap.add_argument("--model", action="append", default=[], help="NAME=PATH, another checkpoint (repeatable)")
    ap.add_argument("--tree-variants", action="store_true",
                    help="also run every checkpoint with the memory tree switched against the inferring default")
    ap.add_argument("--ablation", action="store_true",
                    help="also run every checkpoint with the other combinations of motion and memory tree")
    ap.add_argument("--tune-steps", type=int, default=None,
                    help="test-time tuning steps of every model method without its own (default: inference.yaml's; "
                         "0 = off)")
    ap.add_argument("--tune-variants", action="store_true",
                    help="also run every phase-1 checkpoint with test-time tuning switched against the inferring "
                         "default")
    ap.add_argument("--runtime-variants", action="store_true",
                    help="also run every checkpoint in every other runtime (torch, onnxruntime, openvino...) than the "
                         "inferring default")
    ap.add_argument("--relearn-steps", type=int, default=0,
                    help="also run every phase-1 checkpoint with N steps of test-time relearning per cine")
    ap.add_argument("--methods", default="", help="comma-separated subset of method names")
    ap.add_argument("--image-size", type=int, default=None, help="default: the checkpoint's own input size")
    ap.add_argument("--clip-length", type=int, default=None,
                    help="default: the checkpoint's own TAU clip length |B| (or 8)")
    ap.add_argument("--tau-hidden", type=int, default=None, help="older relearned files without a spec only")
    ap.add_argument("--flow", default="dis", choices=["dis", "farneback"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        run_one(args.child, args, args.out)
        return {}
    specs = method_specs(args)
    args.out.mkdir(parents=True, exist_ok=True)
    parts = {}
    argv = sys.argv[1:] if argv is None else list(argv)
    for name in tqdm(specs, desc="methods", unit="method"):
        part = args.out / "parts" / (name.replace(" ", "_").replace("/", "_") + ".json")
        part.parent.mkdir(exist_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", name, "--out", str(part)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"method '{name}' failed:\n{proc.stderr[-3000:]}")
        parts[name] = json.loads(part.read_text())
    results = merge(parts)
    results["settings"] = {k: str(v) for k, v in vars(args).items() if k != "child"}
    results["machine"] = machine_info()
    lines = ["| method | Dice | IoU | frames/s | peak memory (MB) |", "|---|---|---|---|---|"]
    for name, o in results["overall"].items():
        lines.append(f"| {name} | {o['dice']:.3f} | {o['iou']:.3f} | {o['fps']:.1f} | {o['peak_rss_mb']:.0f} |")
    table = "\n".join(lines) + "\n\nPer video:\n\n" + markdown_table(results) + "\n"
    atomic_write_bytes(args.out / "results.json", json.dumps(results, indent=1).encode())
    atomic_write_bytes(args.out / "table.md", table.encode())
    for v in results["videos"]:
        plot_dice_per_frame({m: (v[m]["frame"], v[m]["frame_dice"]) for m in specs},
                            args.out / "plots" / f"{v['id']}.png", f"{v['id']}: Dice per frame")
    print(table)
    return results


if __name__ == "__main__":
    main()
